"""A GGUF file loaded by llama-cpp-python: the file a run uses, what its metadata says of the model,
and prompts as the model reads them (its chat template rendered as transformers renders it).

llama-cpp-python is imported only when a model is loaded; without it the error names the extra.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.messages import Prompt, check_messages, prompt_text
from corevital.capture.records import ModelRecord, PromptRecord
from corevital.config import Settings
from corevital.errors import InputError, ModelLoadError, NotAvailableError

EXTRA = "llama-cpp"
INSTALL_HINT = (
    "pip install 'corevital[llama-cpp]' (it compiles llama.cpp: 40+ minutes on 2 busy cores; "
    "a wheel built once installs in seconds: docs/proxy.md)"
)
MAX_CONTEXT = 4096  # the context llama.cpp allocates at most (its KV cache); prompts beyond it are refused


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a :class:`NotAvailableError` naming the extra."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise NotAvailableError(f"--backend llama-cpp needs llama-cpp-python: {INSTALL_HINT}") from exc
    return llama_cpp


@dataclass
class LlamaModel:
    """A GGUF file loaded by llama-cpp-python, with what the report records of it."""

    llm: Any  # llama_cpp.Llama
    module: Any  # the llama_cpp module (low-level calls)
    path: Path
    hf_id: str
    capabilities: ModelCapabilities
    chat_template: str | None
    bos_token: str
    eos_token: str
    quantization: str | None
    is_default: bool
    load_ms: float

    @property
    def vocab_size(self) -> int:
        return int(self.capabilities.vocab_size)

    def is_end(self, token: int) -> bool:
        vocab = self.module.llama_model_get_vocab(self.llm.model)
        return bool(self.module.llama_vocab_is_eog(vocab, token))

    def token_text(self, token: int) -> str:
        return bytes(self.llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if callable(close):
            close()


def resolve_gguf(settings: Settings) -> tuple[Path, str, bool]:
    """The GGUF file a run uses, the model name its reports carry, and whether it is the default model."""
    from corevital.capture.default_model import DEFAULT_MODEL_HF_ID, locate_default_model
    from corevital.config import DEFAULT_MODEL_NAME

    model = settings.model or DEFAULT_MODEL_NAME
    gguf = settings.gguf_file
    if gguf is None:
        if model != DEFAULT_MODEL_NAME:
            candidate = Path(model)
            if candidate.is_file() and candidate.suffix == ".gguf":
                return candidate, candidate.stem, False
            raise InputError("--backend llama-cpp runs a GGUF file: pass --gguf-file FILE")
        default = locate_default_model()
        return default.path, DEFAULT_MODEL_HF_ID, True
    candidate = Path(gguf)
    if not candidate.is_file() and model != DEFAULT_MODEL_NAME and Path(model).is_dir():
        candidate = Path(model) / gguf
    if not candidate.is_file():
        raise ModelLoadError(
            f"--gguf-file {gguf}: no such file (--backend llama-cpp reads a local GGUF file)"
        )
    name = model if model != DEFAULT_MODEL_NAME else candidate.stem
    return candidate, name, False


def _metadata_int(metadata: Mapping[str, str], key: str) -> int | None:
    value = metadata.get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def capabilities_from_gguf(metadata: Mapping[str, str], vocab_size: int) -> ModelCapabilities:
    """What the GGUF's metadata says of the model (llama.cpp's key names: ``{arch}.block_count``...)."""
    arch = metadata.get("general.architecture", "unknown")

    def get(key: str) -> int | None:
        return _metadata_int(metadata, f"{arch}.{key}")

    experts = get("expert_count")
    heads = get("attention.head_count") or 0
    return ModelCapabilities(
        architecture=arch,
        model_type=arch,
        is_encoder_decoder=False,
        num_layers=get("block_count") or 0,
        num_encoder_layers=None,
        num_attention_heads=heads,
        num_key_value_heads=get("attention.head_count_kv") or heads,
        hidden_size=get("embedding_length") or 0,
        vocab_size=vocab_size,
        context_length=get("context_length"),
        is_moe=bool(experts),
        num_experts=experts or None,
        num_experts_per_token=get("expert_used_count"),
        sliding_window=get("attention.sliding_window"),
    )


# llama.cpp's file types (general.file_type), the common ones
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K"}
_FILE_TYPES.update({11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S"})
_FILE_TYPES.update({17: "Q5_K_M", 18: "Q6_K", 32: "BF16"})


def load_llama(settings: Settings, *, threads: int | None = None) -> LlamaModel:
    """Load the run's GGUF file with llama-cpp-python (CPU; the context is the model's, at most 4096)."""
    module = import_llama_cpp()
    path, hf_id, is_default = resolve_gguf(settings)
    t0 = time.perf_counter()
    try:
        llm = module.Llama(
            model_path=str(path),
            n_ctx=MAX_CONTEXT,
            n_threads=threads or os.cpu_count() or 1,
            seed=settings.seed,
            logits_all=False,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {path.name}: {exc}") from exc
    metadata: Mapping[str, str] = llm.metadata
    vocab = int(llm.n_vocab())

    def special(key: str) -> str:
        token = _metadata_int(metadata, key)
        return (
            bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")
            if token is not None
            else ""
        )

    file_type = _metadata_int(metadata, "general.file_type")
    return LlamaModel(
        llm=llm,
        module=module,
        path=path,
        hf_id=hf_id,
        capabilities=capabilities_from_gguf(metadata, vocab),
        chat_template=metadata.get("tokenizer.chat_template") or None,
        bos_token=special("tokenizer.ggml.bos_token_id"),
        eos_token=special("tokenizer.ggml.eos_token_id"),
        quantization=_FILE_TYPES.get(file_type, f"file_type {file_type}") if file_type is not None else None,
        is_default=is_default,
        load_ms=(time.perf_counter() - t0) * 1000.0,
    )


def render_chat(template: str, messages: list[dict[str, str]], *, bos_token: str, eos_token: str) -> str:
    """The chat template rendered as transformers renders it (a sandboxed Jinja2 environment)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
        )
    except TemplateError as exc:
        raise InputError(f"the GGUF's chat template failed: {exc}") from exc


def format_prompt(model: LlamaModel, prompt: Prompt, mode: str) -> tuple[str, bool]:
    """What the model reads and whether the chat template was applied (as the transformers backend)."""
    if not isinstance(prompt, str):
        messages = check_messages(prompt)
        if mode == "off" or model.chat_template is None:
            raise InputError("chat messages need the GGUF's chat template (tokenizer.chat_template)")
        return render_chat(
            model.chat_template, messages, bos_token=model.bos_token, eos_token=model.eos_token
        ), True
    if not prompt.strip():
        raise InputError("the prompt is empty")
    if mode == "on" and model.chat_template is None:
        raise InputError("--chat-template on: this GGUF has no chat template")
    if mode == "off" or model.chat_template is None:
        return prompt, False
    messages = [{"role": "user", "content": prompt}]
    return render_chat(
        model.chat_template, messages, bos_token=model.bos_token, eos_token=model.eos_token
    ), True


def prepare_prompt(model: LlamaModel, prompt: Prompt, settings: Settings) -> PromptRecord:
    """The prompt as the model reads it, tokenized by llama.cpp, checked against the context."""
    model_text, applied = format_prompt(model, prompt, settings.chat_template)
    # A chat template already carries the special tokens the model expects.
    ids = [int(i) for i in model.llm.tokenize(model_text.encode("utf-8"), add_bos=not applied, special=True)]
    if not ids:
        raise InputError("the prompt has no tokens after tokenization")
    trained = model.capabilities.context_length
    context = min(int(model.llm.n_ctx()), trained or MAX_CONTEXT)
    if len(ids) + settings.max_new_tokens > context:
        raise InputError(
            f"the prompt ({len(ids)} tokens) and --max_new_tokens {settings.max_new_tokens} exceed "
            f"the context ({context} tokens: the model's, at most {MAX_CONTEXT})"
        )
    return PromptRecord(prompt_text(prompt), model_text, ids, applied)


def model_record(model: LlamaModel) -> ModelRecord:
    return ModelRecord(
        hf_id=model.hf_id,
        revision=None,
        source="gguf",
        gguf_file=model.path.name,
        dtype="gguf",
        device="cpu",
        quantization=model.quantization,
        capabilities=model.capabilities,
    )
