"""Tiny, offline, deterministic Hugging Face models and a matching tokenizer for tests.

Nothing here touches the network: the tokenizer is assembled in memory with the ``tokenizers``
library and every model is a real ``transformers`` architecture built from a tiny config with
random weights.

Typical use::

    from tests.support.tiny_models import build_model, build_tokenizer

    tokenizer = build_tokenizer()  # padding_side="left" by default
    model = build_model("llama", seed=0)  # eval mode, float32, eager attention
    batch = tokenizer(["Hello there", "Why is the sky blue?"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)

``save_tiny_model(arch, directory)`` writes model, generation config and tokenizer with
``save_pretrained`` so ``AutoModelFor*.from_pretrained(directory)`` and
``AutoTokenizer.from_pretrained(directory)`` load them offline (the "local model directory" path).

Token ids are fixed: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, so the vocabulary
starts with the special tokens, followed by the 256 byte-level symbols and a few English merges.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
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
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

if TYPE_CHECKING:
    from transformers import GenerationMixin

    class TinyModel(PreTrainedModel, GenerationMixin):  # type: ignore[no-untyped-call]  # HF's __init_subclass__
        """Static type of :func:`build_model`: a ``PreTrainedModel`` that also has ``generate()``."""

else:
    TinyModel = PreTrainedModel

__all__ = [
    "ARCHITECTURES",
    "BOS_TOKEN",
    "BOS_TOKEN_ID",
    "CHAT_TEMPLATE",
    "DECODER_ONLY_ARCHITECTURES",
    "ENCODER_DECODER_ARCHITECTURES",
    "EOS_TOKEN",
    "EOS_TOKEN_ID",
    "EXPECTED",
    "FAMILIES",
    "FAMILY_WINDOW",
    "IS_ENCODER_DECODER",
    "MAX_POSITIONS",
    "MODEL_CLASS_NAMES",
    "PAD_TOKEN",
    "PAD_TOKEN_ID",
    "UNK_TOKEN",
    "UNK_TOKEN_ID",
    "VOCAB_SIZE",
    "TinyModel",
    "TinyShape",
    "build_config",
    "build_family_config",
    "build_family_model",
    "build_model",
    "build_tokenizer",
    "save_family_model",
    "save_tiny_model",
]

ARCHITECTURES: tuple[str, ...] = ("gpt2", "llama", "mistral", "qwen2", "phi3", "mixtral", "t5", "bart")

IS_ENCODER_DECODER: dict[str, bool] = {arch: arch in ("t5", "bart") for arch in ARCHITECTURES}
DECODER_ONLY_ARCHITECTURES: tuple[str, ...] = tuple(a for a in ARCHITECTURES if not IS_ENCODER_DECODER[a])
ENCODER_DECODER_ARCHITECTURES: tuple[str, ...] = tuple(a for a in ARCHITECTURES if IS_ENCODER_DECODER[a])

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<s>", "</s>", "<unk>"
PAD_TOKEN_ID, BOS_TOKEN_ID, EOS_TOKEN_ID, UNK_TOKEN_ID = 0, 1, 2, 3
_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

# Byte-level BPE merges, applied in this order ("Ġ" is the byte-level symbol for a space). Hand-written
# rather than trained so the vocabulary is identical on every machine and tokenizers version.
_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġ", "a"),
    ("i", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("r", "e"),
    ("a", "n"),
    ("Ġ", "w"),
    ("Ġ", "o"),
    ("e", "n"),
    ("a", "t"),
    ("o", "r"),
    ("Ġ", "c"),
    ("e", "s"),
    ("i", "s"),
    ("Ġ", "b"),
    ("Ġ", "f"),
    ("i", "t"),
    ("e", "d"),
    ("Ġ", "p"),
    ("a", "r"),
    ("Ġ", "i"),
    ("in", "g"),
    ("Ġ", "m"),
    ("o", "u"),
    ("Ġ", "d"),
    ("l", "l"),
    ("Ġ", "h"),
    ("Ġ", "in"),
    ("Ġ", "l"),
    ("a", "l"),
    ("Ġo", "f"),
    ("Ġt", "o"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("Ġ", "is"),
    ("Ġ", "e"),
    ("Ġ", "n"),
    ("l", "e"),
    ("Ġ", "y"),
    ("Ġ", "g"),
    ("Ġ", "T"),
    ("Ġw", "h"),
    ("Ġ", "re"),
    ("s", "t"),
    ("i", "c"),
    ("i", "on"),
    ("Ġs", "t"),
    ("o", "w"),
    ("Ġ", "A"),
    ("Ġ", "it"),
    ("Ġ", "I"),
    ("ĠT", "he"),
    ("e", "x"),
    ("Ġs", "k"),
    ("Ġsk", "y"),
    ("u", "e"),
)

VOCAB_SIZE: int = len(_SPECIAL_TOKENS) + 256 + len(_MERGES)  # 320
MAX_POSITIONS: int = 512

# A minimal Zephyr/Phi-3 style template. Role markers are plain text (no extra vocabulary entries), so
# the vocabulary is the same with and without a template.
CHAT_TEMPLATE: str = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table (the ByteLevel alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS)}
    byte_symbols = _bytes_to_unicode()
    for b in range(256):
        vocab[byte_symbols[b]] = len(vocab)
    for left, right in _MERGES:
        if left not in vocab or right not in vocab:
            raise ValueError(f"merge ({left!r}, {right!r}) uses a symbol that is not in the vocabulary yet")
        merged = left + right
        if merged in vocab:
            raise ValueError(f"merge ({left!r}, {right!r}) produces a duplicate symbol {merged!r}")
        vocab[merged] = len(vocab)
    assert len(vocab) == VOCAB_SIZE
    return vocab, list(_MERGES)


def _build_backend() -> Tokenizer:
    vocab, merges = _vocab_and_merges()
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK_TOKEN, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # The special tokens already have ids 0..3 in the vocabulary; registering them as added tokens
    # makes "<s>"/"</s>" in text (e.g. from the chat template) map to those single ids.
    backend.add_special_tokens(
        [AddedToken(tok, special=True, normalized=False, single_word=False) for tok in _SPECIAL_TOKENS]
    )
    # Llama-style: prepend <s> to every sequence (pairs: "<s> A </s> B").
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B:1",
                special_tokens=[(BOS_TOKEN, BOS_TOKEN_ID), (EOS_TOKEN, EOS_TOKEN_ID)],
            ),
        ]
    )
    return backend


def build_tokenizer(
    *, padding_side: Literal["left", "right"] = "left", chat_template: bool = False
) -> PreTrainedTokenizerFast:
    """A 320-entry byte-level BPE tokenizer, built offline and identical on every call.

    Byte-level, so any text (ASCII or not) round-trips:
    ``tok.decode(tok(text).input_ids, skip_special_tokens=True) == text``. Encoding prepends ``<s>``.
    ``padding_side`` defaults to ``"left"`` (what batched decoder-only generation needs).
    ``chat_template=True`` attaches :data:`CHAT_TEMPLATE` for chat-template code paths.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=_build_backend(),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side=padding_side,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# --------------------------------------------------------------------------------------------
# Configs and models
# --------------------------------------------------------------------------------------------


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

_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "gpt2": GPT2Config,
    "llama": LlamaConfig,
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
    "phi3": Phi3Config,
    "mixtral": MixtralConfig,
    "t5": T5Config,
    "bart": BartConfig,
}

_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
    "mistral": MistralForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "phi3": Phi3ForCausalLM,
    "mixtral": MixtralForCausalLM,
    "t5": T5ForConditionalGeneration,
    "bart": BartForConditionalGeneration,
}

MODEL_CLASS_NAMES: dict[str, str] = {arch: cls.__name__ for arch, cls in _MODEL_CLASSES.items()}

_TOKEN_IDS: dict[str, int] = {
    "vocab_size": VOCAB_SIZE,
    "pad_token_id": PAD_TOKEN_ID,
    "bos_token_id": BOS_TOKEN_ID,
    "eos_token_id": EOS_TOKEN_ID,
}


def _decoder_only_kwargs(shape: TinyShape) -> dict[str, Any]:
    """Llama-family keyword arguments (llama, mistral, qwen2, phi3, mixtral)."""
    return {
        **_TOKEN_IDS,
        "hidden_size": shape.hidden_size,
        "intermediate_size": 2 * shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "max_position_embeddings": MAX_POSITIONS,
        "tie_word_embeddings": shape.tie_word_embeddings,
    }


def _config_kwargs(arch: str) -> dict[str, Any]:
    shape = EXPECTED[arch]
    if arch == "gpt2":
        return {
            **_TOKEN_IDS,
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
        # Phi3Config defaults pad_token_id=32000 (out of range for a tiny vocab; _TOKEN_IDS fixes it) and
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
            **_TOKEN_IDS,
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
            **_TOKEN_IDS,
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


# --------------------------------------------------------------------------------------------
# Decoder families beyond the eight above, built from transformers' own config classes by model type
# --------------------------------------------------------------------------------------------

# Sliding windows smaller than the test prompts, so that windowed layers really hide keys.
FAMILY_WINDOW = 4

_FAMILY_BASE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": MAX_POSITIONS,
    "tie_word_embeddings": False,
}

# model_type -> config keyword arguments on top of _FAMILY_BASE (None: drop that base keyword).
_FAMILY_KWARGS: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": FAMILY_WINDOW},  # every layer windowed
    "mixtral": {"sliding_window": None, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"use_sliding_window": False},
    "qwen3": {"head_dim": 16, "use_sliding_window": False},
    "qwen3_moe": {
        "head_dim": 16,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
    "gemma": {"head_dim": 16},
    # Gemma 2 and 3: one sliding-window layer, one full layer (a hybrid cache under "static").
    "gemma2": {
        "head_dim": 16,
        "sliding_window": FAMILY_WINDOW,
        "layer_types": ["sliding_attention", "full_attention"],
        "query_pre_attn_scalar": 16,
    },
    "gemma3_text": {
        "head_dim": 16,
        "sliding_window": FAMILY_WINDOW,
        "layer_types": ["sliding_attention", "full_attention"],
        "query_pre_attn_scalar": 16,
    },
    "phi3": {
        "original_max_position_embeddings": MAX_POSITIONS,
        "rope_parameters": None,
        "sliding_window": None,
    },
    "olmo2": {},
    "gpt_neox": {"num_key_value_heads": None, "use_parallel_residual": True, "rotary_pct": 0.25},
    "gpt2": {
        "hidden_size": None,
        "intermediate_size": None,
        "num_hidden_layers": None,
        "num_attention_heads": None,
        "num_key_value_heads": None,
        "max_position_embeddings": None,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": MAX_POSITIONS,
    },
    "falcon": {
        "intermediate_size": None,
        "num_key_value_heads": None,
        "new_decoder_architecture": True,
        "num_kv_heads": 2,
        "alibi": False,
        "bias": False,
    },
    "starcoder2": {"sliding_window": None},
    "cohere": {"logit_scale": 1.0},
    "granite": {},
    "smollm3": {"use_sliding_window": False},
    # Attention sinks (s_aux) and alternating sliding layers; experts.
    "gpt_oss": {
        "head_dim": 16,
        "sliding_window": FAMILY_WINDOW,
        "layer_types": ["sliding_attention", "full_attention"],
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    # Multi-head latent attention with experts.
    "deepseek_v3": {
        "num_key_value_heads": 4,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 16,
        "head_dim": 8,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "moe_intermediate_size": 32,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "rope_interleave": False,
    },
}

# Every decoder family :func:`build_family_model` builds (model types as transformers names them).
FAMILIES: tuple[str, ...] = tuple(_FAMILY_KWARGS)


def build_family_config(family: str, **overrides: Any) -> PretrainedConfig:
    """A tiny config of the decoder family ``family`` (a transformers model type), eager attention."""
    from transformers import AutoConfig

    if family not in _FAMILY_KWARGS:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")
    kwargs: dict[str, Any] = {**_TOKEN_IDS, **_FAMILY_BASE}
    for key, value in {**_FAMILY_KWARGS[family], **overrides}.items():
        if value is None and key in _FAMILY_BASE:
            kwargs.pop(key, None)
        else:
            kwargs[key] = value
    kwargs.setdefault("attn_implementation", "eager")
    kwargs.setdefault("dtype", torch.float32)
    config = AutoConfig.for_model(family, **kwargs)
    config.architectures = [_family_class(config).__name__]
    return config


def _family_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    from transformers import AutoModelForCausalLM

    mapping = AutoModelForCausalLM._model_mapping
    return cast(type[PreTrainedModel], mapping[type(config)])


def build_family_model(family: str, *, seed: int = 0, **overrides: Any) -> TinyModel:
    """A tiny random ``family`` decoder (eval mode, float32), like :func:`build_model` for the eight."""
    config = build_family_config(family, **overrides)
    with _seeded(seed):
        model = cast(TinyModel, _family_class(config)(config))
    model.generation_config = _generation_config(config)
    model.eval()  # type: ignore[no-untyped-call]  # transformers' untyped eval()
    return model


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off (``save_pretrained`` draws one on stderr, which a test that
    reads the CLI's stderr would see when its model is built lazily inside it)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers


def save_family_model(family: str, directory: Path, *, seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny ``family`` model, its generation config and the tokenizer to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        build_family_model(family, seed=seed, **overrides).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {ARCHITECTURES}")


def build_config(arch: str, **overrides: Any) -> PretrainedConfig:
    """A tiny config of the real ``arch`` whose token ids match :func:`build_tokenizer`.

    ``overrides`` are config keyword arguments applied on top of the tiny defaults; aliases such as
    ``num_hidden_layers`` for GPT-2 are translated through the config's ``attribute_map``.
    ``attn_implementation`` defaults to ``"eager"``; pass ``attn_implementation="sdpa"`` to change it.
    """
    _check_arch(arch)
    config_cls = _CONFIG_CLASSES[arch]
    kwargs = _config_kwargs(arch)
    for key, value in overrides.items():
        kwargs[config_cls.attribute_map.get(key, key)] = value
    kwargs.setdefault("attn_implementation", "eager")
    kwargs.setdefault("architectures", [MODEL_CLASS_NAMES[arch]])
    kwargs.setdefault("dtype", torch.float32)
    return config_cls(**kwargs)


def _generation_config(config: PretrainedConfig) -> GenerationConfig:
    gen = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=getattr(config, "bos_token_id", BOS_TOKEN_ID),
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    if config.is_encoder_decoder:
        gen.decoder_start_token_id = config.decoder_start_token_id
    return gen


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(arch: str, *, seed: int = 0, **overrides: Any) -> TinyModel:
    """A tiny ``arch`` model with random weights that depend only on ``seed``.

    CausalLM class for decoder-only archs, ConditionalGeneration (Seq2SeqLM) class for t5/bart; float32,
    eval mode, eager attention unless ``attn_implementation=`` is passed. ``overrides`` go to
    :func:`build_config`. ``model.generation_config`` carries pad/bos/eos (and decoder start) ids so
    ``generate()`` needs no extra arguments.
    """
    config = build_config(arch, **overrides)
    model_cls = _MODEL_CLASSES[arch]
    with _seeded(seed):
        model = cast(TinyModel, model_cls(config))
    if arch == "t5":
        # T5's embedding has no padding_idx, and with the (always) tied lm_head a random T5 greedily
        # answers the decoder start token (= <pad>) with <pad> forever. Zeroing the <pad> row (shared
        # with lm_head), as nn.Embedding(padding_idx=...) does for the other archs, keeps <pad> out of
        # generated text (its logit is always exactly 0).
        embedding = model.get_input_embeddings()
        assert isinstance(embedding, torch.nn.Embedding)
        with torch.no_grad():
            embedding.weight[PAD_TOKEN_ID].zero_()
    model.generation_config = _generation_config(config)
    model.eval()  # type: ignore[no-untyped-call]  # transformers' untyped eval()
    return model


def save_tiny_model(
    arch: str,
    directory: Path,
    *,
    seed: int = 0,
    chat_template: bool = False,
    **overrides: Any,
) -> Path:
    """Write a tiny model, its generation config and the tokenizer to ``directory``; return it.

    Loadable offline with ``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM`` and ``AutoTokenizer``
    ``.from_pretrained(directory)``; ``config.json`` names the model class in ``architectures``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = build_model(arch, seed=seed, **overrides)
    with _no_progress_bars():
        model.save_pretrained(directory)
    build_tokenizer(chat_template=chat_template).save_pretrained(directory)
    return directory
