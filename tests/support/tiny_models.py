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
The tokenizer is built in :mod:`tests.support.tiny_tokenizer`, the eight architectures' configs in
:mod:`tests.support.tiny_configs`; this module re-exports their public names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel

from tests.support.tiny_configs import (
    ARCHITECTURES,
    CONFIG_CLASSES,
    DECODER_ONLY_ARCHITECTURES,
    ENCODER_DECODER_ARCHITECTURES,
    EXPECTED,
    IS_ENCODER_DECODER,
    MODEL_CLASS_NAMES,
    MODEL_CLASSES,
    TOKEN_IDS,
    TinyShape,
    config_kwargs,
)
from tests.support.tiny_tokenizer import (
    BOS_TOKEN,
    BOS_TOKEN_ID,
    CHAT_TEMPLATE,
    EOS_TOKEN,
    EOS_TOKEN_ID,
    MAX_POSITIONS,
    PAD_TOKEN,
    PAD_TOKEN_ID,
    UNK_TOKEN,
    UNK_TOKEN_ID,
    VOCAB_SIZE,
    build_tokenizer,
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

# --------------------------------------------------------------------------------------------
# Decoder families beyond the eight of tiny_configs, built from transformers' own config classes by
# model type
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
    kwargs: dict[str, Any] = {**TOKEN_IDS, **_FAMILY_BASE}
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
    config_cls = CONFIG_CLASSES[arch]
    kwargs = config_kwargs(arch)
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
    model_cls = MODEL_CLASSES[arch]
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
