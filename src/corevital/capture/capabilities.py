"""What a model is and what can be observed in it: the single source of truth for model facts.

Read from the model's config (names differ between architectures: ``n_layer`` for GPT-2,
``num_decoder_layers`` for T5, ``decoder_attention_heads`` for BART...), completed by probing the
loaded model (:func:`corevital.capture.model_checks.probe_capabilities`). Torch-free, so reports and
analysis can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

FAST_ATTENTION_MODEL_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "phi3",
        "gpt2",
        "t5",
        "mt5",
        "bart",
        "mbart",
        "gemma",
        "olmo",
        "olmo2",
        "granite",
        "starcoder2",
        "smollm3",
        # Soft-capped (gemma2) or sink (gpt_oss) layers run eager attention, per layer, on the fast path.
        "gemma2",
        "gemma3_text",
        "gpt_neox",
        "cohere",
        "deepseek_v3",
        "gpt_oss",
        # From transformers 5.25 Falcon's attention goes through transformers' attention functions;
        # with older versions the load-time probe finds it unobservable and the fast path is unused.
        "falcon",
    }
)


def _first(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class ModelCapabilities:
    architecture: str
    model_type: str
    is_encoder_decoder: bool
    num_layers: int  # decoder layers (all layers of a decoder-only model)
    num_encoder_layers: int | None
    num_attention_heads: int
    num_key_value_heads: int
    hidden_size: int
    vocab_size: int
    context_length: int | None
    is_moe: bool
    num_experts: int | None
    num_experts_per_token: int | None
    sliding_window: int | None
    attention_available: bool = False  # probed: every layer's attention rows can be observed
    attention_detail: str = "not probed"
    hidden_states_available: bool = False

    @property
    def fast_attention_supported(self) -> bool:
        """Eager attention here is softmax(q·kᵀ·scale + mask [+ bias]), so the fast path is exact."""
        return self.model_type in FAST_ATTENTION_MODEL_TYPES

    def with_probe(self, *, attention: bool, hidden: bool, detail: str) -> ModelCapabilities:
        return replace(
            self, attention_available=attention, hidden_states_available=hidden, attention_detail=detail
        )


def capabilities_from_config(config: Any, *, model_class: str | None = None) -> ModelCapabilities:
    """Model facts from a Hugging Face config object (any architecture CoreVital knows).

    ``model_class`` names the loaded class, used when the config does not list its architectures
    (GGUF files do not).
    """
    is_enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    heads = _first(config, "num_attention_heads", "n_head", "num_heads", "decoder_attention_heads")
    if is_enc_dec:
        layers = _first(config, "num_decoder_layers", "decoder_layers", "num_hidden_layers", "num_layers")
        encoder_layers = _first(config, "encoder_layers", "num_layers", "num_hidden_layers")
        heads = _first(config, "decoder_attention_heads", "num_heads", "num_attention_heads")
    else:
        layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
        encoder_layers = None
    kv_heads = _first(config, "num_key_value_heads", "num_kv_heads", "multi_query_group_num") or heads
    if getattr(config, "multi_query", False):
        kv_heads = 1
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    experts = _first(config, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    per_token = _first(config, "num_experts_per_tok", "moe_top_k", "num_experts_per_token")
    architectures = getattr(config, "architectures", None) or []
    return ModelCapabilities(
        architecture=architectures[0] if architectures else (model_class or type(config).__name__),
        model_type=str(getattr(config, "model_type", "unknown")),
        is_encoder_decoder=is_enc_dec,
        num_layers=int(layers or 0),
        num_encoder_layers=int(encoder_layers) if encoder_layers is not None else None,
        num_attention_heads=int(heads or 0),
        num_key_value_heads=int(kv_heads or 0),
        hidden_size=int(hidden or 0),
        vocab_size=int(getattr(config, "vocab_size", 0) or 0),
        context_length=_first(config, "max_position_embeddings", "n_positions", "max_sequence_length"),
        is_moe=bool(experts and int(experts) > 1),
        num_experts=int(experts) if experts else None,
        num_experts_per_token=int(per_token) if per_token else None,
        sliding_window=_first(config, "sliding_window")
        if getattr(config, "use_sliding_window", True)
        else None,
    )
