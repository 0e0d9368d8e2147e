"""The eight tiny architectures' configs: expected shapes and the config keywords of each.

Every config's token ids match :func:`tests.support.tiny_tokenizer.build_tokenizer`.
:mod:`tests.support.tiny_models` builds the models from them and re-exports every public name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from tests.support.tiny_tokenizer import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    MAX_POSITIONS,
    PAD_TOKEN_ID,
    VOCAB_SIZE,
)

ARCHITECTURES: tuple[str, ...] = ("gpt2", "llama", "mistral", "qwen2", "phi3", "mixtral", "t5", "bart")

IS_ENCODER_DECODER: dict[str, bool] = {arch: arch in ("t5", "bart") for arch in ARCHITECTURES}
DECODER_ONLY_ARCHITECTURES: tuple[str, ...] = tuple(a for a in ARCHITECTURES if not IS_ENCODER_DECODER[a])
ENCODER_DECODER_ARCHITECTURES: tuple[str, ...] = tuple(a for a in ARCHITECTURES if IS_ENCODER_DECODER[a])


@dataclass(frozen=True)
class TinyShape:
    """Expected structural facts of a tiny model (decoder side for encoder-decoders)."""

    num_layers: int
    num_encoder_layers: int | None
    num_heads: int
    num_kv_heads: int
    hidden_size: int
    is_moe: bool
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


EXPECTED: dict[str, TinyShape] = {
    # Layer counts differ between archs (and between BART's encoder and decoder) on purpose, so a test
    # catches code that reads the wrong config field or hard-codes a count.
    "gpt2": TinyShape(
        num_layers=2,
        num_encoder_layers=None,
        num_heads=4,
        num_kv_heads=4,
        hidden_size=64,
        is_moe=False,
        tie_word_embeddings=True,
    ),
    "llama": TinyShape(
        num_layers=3,
        num_encoder_layers=None,
        num_heads=4,
        num_kv_heads=2,
        hidden_size=64,
        is_moe=False,
    ),
    "mistral": TinyShape(
        num_layers=2,
        num_encoder_layers=None,
        num_heads=4,
        num_kv_heads=2,
        hidden_size=64,
        is_moe=False,
    ),
    "qwen2": TinyShape(
        num_layers=2,
        num_encoder_layers=None,
        num_heads=4,
        num_kv_heads=2,
        hidden_size=64,
        is_moe=False,
        tie_word_embeddings=True,
    ),
    "phi3": TinyShape(
        num_layers=2,
        num_encoder_layers=None,
        num_heads=4,
        num_kv_heads=4,
        hidden_size=64,
        is_moe=False,
    ),
    "mixtral": TinyShape(
        num_layers=2,
        num_encoder_layers=None,
        num_heads=4,
        num_kv_heads=2,
        hidden_size=64,
        is_moe=True,
        num_experts=4,
        num_experts_per_tok=2,
    ),
    # transformers 5.x always ties T5's lm_head to the shared embedding (T5Config forces it). Keep
    # num_decoder_layers <= num_layers: T5's DynamicCache is sized from config.num_hidden_layers, which is
    # the *encoder* count, so a deeper decoder fails in generate() with an IndexError.
    "t5": TinyShape(
        num_layers=2,
        num_encoder_layers=2,
        num_heads=4,
        num_kv_heads=4,
        hidden_size=64,
        is_moe=False,
        tie_word_embeddings=True,
    ),
    # Encoder deeper than decoder, like distilbart-cnn-12-6. Note config.num_hidden_layers is the
    # *encoder* count for BART (and T5); the decoder count is decoder_layers (num_decoder_layers).
    "bart": TinyShape(
        num_layers=2,
        num_encoder_layers=3,
        num_heads=4,
        num_kv_heads=4,
        hidden_size=64,
        is_moe=False,
    ),
}

CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "gpt2": GPT2Config,
    "llama": LlamaConfig,
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
    "phi3": Phi3Config,
    "mixtral": MixtralConfig,
    "t5": T5Config,
    "bart": BartConfig,
}

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
    "mistral": MistralForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "phi3": Phi3ForCausalLM,
    "mixtral": MixtralForCausalLM,
    "t5": T5ForConditionalGeneration,
    "bart": BartForConditionalGeneration,
}

MODEL_CLASS_NAMES: dict[str, str] = {arch: cls.__name__ for arch, cls in MODEL_CLASSES.items()}

TOKEN_IDS: dict[str, int] = {
    "vocab_size": VOCAB_SIZE,
    "pad_token_id": PAD_TOKEN_ID,
    "bos_token_id": BOS_TOKEN_ID,
    "eos_token_id": EOS_TOKEN_ID,
}


def _decoder_only_kwargs(shape: TinyShape) -> dict[str, Any]:
    """Llama-family keyword arguments (llama, mistral, qwen2, phi3, mixtral)."""
    return {
        **TOKEN_IDS,
        "hidden_size": shape.hidden_size,
        "intermediate_size": 2 * shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "max_position_embeddings": MAX_POSITIONS,
        "tie_word_embeddings": shape.tie_word_embeddings,
    }


def config_kwargs(arch: str) -> dict[str, Any]:
    shape = EXPECTED[arch]
    if arch == "gpt2":
        return {
            **TOKEN_IDS,
            "n_embd": shape.hidden_size,
            "n_layer": shape.num_layers,
            "n_head": shape.num_heads,
            "n_positions": MAX_POSITIONS,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": shape.tie_word_embeddings,
        }
    if arch == "llama":
        return _decoder_only_kwargs(shape)
    if arch == "mistral":
        return {**_decoder_only_kwargs(shape), "sliding_window": None}
    if arch == "qwen2":
        # Like the small Qwen2 checkpoints: tied embeddings (see EXPECTED), no sliding window.
        return {
            **_decoder_only_kwargs(shape),
            "use_sliding_window": False,
            "max_window_layers": shape.num_layers,
        }
    if arch == "phi3":
        # Phi3Config defaults pad_token_id=32000 (out of range for a tiny vocab; TOKEN_IDS fixes it) and
        # original_max_position_embeddings=4096, which must follow the tiny max positions. In
        # transformers 5.x the old rope_scaling is rope_parameters; None means plain (default) RoPE.
        return {
            **_decoder_only_kwargs(shape),
            "original_max_position_embeddings": MAX_POSITIONS,
            "rope_parameters": None,
            "sliding_window": None,
        }
    if arch == "mixtral":
        return {
            **_decoder_only_kwargs(shape),
            "num_local_experts": shape.num_experts,
            "num_experts_per_tok": shape.num_experts_per_tok,
            "sliding_window": None,
            "router_jitter_noise": 0.0,
        }
    if arch == "t5":
        assert shape.num_encoder_layers is not None
        return {
            **TOKEN_IDS,
            "d_model": shape.hidden_size,
            "d_kv": shape.head_dim,
            "d_ff": 2 * shape.hidden_size,
            "num_layers": shape.num_encoder_layers,
            "num_decoder_layers": shape.num_layers,
            "num_heads": shape.num_heads,
            "dropout_rate": 0.0,
            "feed_forward_proj": "relu",
            # T5 starts decoding from the pad token.
            "decoder_start_token_id": PAD_TOKEN_ID,
        }
    if arch == "bart":
        assert shape.num_encoder_layers is not None
        return {
            **TOKEN_IDS,
            "d_model": shape.hidden_size,
            "encoder_layers": shape.num_encoder_layers,
            "decoder_layers": shape.num_layers,
            "encoder_attention_heads": shape.num_heads,
            "decoder_attention_heads": shape.num_heads,
            "encoder_ffn_dim": 2 * shape.hidden_size,
            "decoder_ffn_dim": 2 * shape.hidden_size,
            "max_position_embeddings": MAX_POSITIONS,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            # BART starts decoding from </s>. Real BART ties lm_head to the embedding, but a random
            # tied BART greedily answers </s> with </s> and stops after one step; untied it runs on.
            "decoder_start_token_id": EOS_TOKEN_ID,
            "tie_word_embeddings": shape.tie_word_embeddings,
            # BartConfig defaults forced_eos_token_id=2; keep greedy decoding unconstrained (and in step
            # with the generation config, which sets neither forced_bos nor forced_eos).
            "forced_eos_token_id": None,
        }
    raise AssertionError(arch)  # pragma: no cover - guarded by _check_arch
