"""The llama.cpp capture backend: a GGUF file run in process through llama-cpp-python.

``--backend llama-cpp`` (the ``llama-cpp`` extra) decodes with llama.cpp's own kernels on the GGUF's
own (quantised) weights, one token at a time, and reads the full-vocabulary logits of every step
(``llama_get_logits_ith``). From each row this module computes the logit tier exactly as
:mod:`corevital.metrics.logits` does from a transformers model's logits (entropy in bits from the
full softmax, margin, top-k mass, the most likely tokens, the chosen token's surprisal), in float64
numpy on the host: no torch on this path.

Attention and hidden states are not observed (llama.cpp does not hand them out per layer); the
capture says so in its warnings, and the report marks them as not observed.

llama-cpp-python is imported only when this backend loads a model; without it the error names the
extra.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.messages import Prompt, check_messages, prompt_text
from corevital.capture.records import (
    CaptureWarning,
    GenerationRecord,
    ModelRecord,
    PromptRecord,
    RunCapture,
    SequenceCapture,
    generation_record,
)
from corevital.config import Settings
from corevital.errors import InputError, ModelLoadError, NotAvailableError

LN2 = math.log(2.0)
EXTRA = "llama-cpp"
INSTALL_HINT = "pip install 'corevital[llama-cpp]' (it compiles llama.cpp: about 10 minutes on 2 cores)"
MAX_CONTEXT = 4096  # the context llama.cpp allocates at most (its KV cache); prompts beyond it are refused
NOT_OBSERVED = (
    CaptureWarning(
        "ATTENTION_NOT_AVAILABLE",
        "attention is not observed when llama.cpp runs the model (llama-cpp backend)",
    ),
    CaptureWarning(
        "HIDDEN_STATES_NOT_AVAILABLE",
        "hidden states are not observed when llama.cpp runs the model (llama-cpp backend)",
    ),
)


def utc_now() -> str:
    """The time now in UTC, as capture records it (ISO 8601, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a :class:`NotAvailableError` naming the extra."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise NotAvailableError(f"--backend llama-cpp needs llama-cpp-python: {INSTALL_HINT}") from exc
    return llama_cpp


@dataclass(frozen=True)
class FullLogitStats:
    """The logit tier of one sequence from full-vocabulary logits (same names as capture's LogitStats)."""

    entropy: np.ndarray  # [T] bits, exact
    top_k_margin: np.ndarray  # [T]
    topk_mass: np.ndarray  # [T]
    topk_ids: np.ndarray  # [T, k]
    topk_probs: np.ndarray  # [T, k]
    log_normalizer: np.ndarray  # [T] nats
    has_nan: np.ndarray  # [T] bool
    has_inf: np.ndarray  # [T] bool


@dataclass(frozen=True)
class FullChosenStats:
    """The chosen token of each step (same names as capture's ChosenTokenStats)."""

    token_ids: np.ndarray  # [T]
    surprisal: np.ndarray  # [T] bits under the raw distribution
    sampling_entropy: np.ndarray | None  # [T] bits of the distribution sampled from (sampling only)
    sampling_prob: np.ndarray | None  # [T]


@dataclass(frozen=True)
class RowStats:
    """The statistics of one row of logits."""

    entropy: float
    margin: float
    mass: float
    top_ids: np.ndarray  # [k]
    top_probs: np.ndarray  # [k]
    log_normalizer: float
    log_probs: np.ndarray  # [V] float64 (NaN throughout for a NaN or +inf row)
    has_nan: bool
    has_inf: bool


def row_stats(logits: np.ndarray, *, topk: int, mass_k: int) -> RowStats:
    """Entropy (bits), margin, top-k mass and most likely tokens of one row of logits [V].

    The same definitions as :func:`corevital.metrics.logits.summarize_logits` with
    ``entropy_mode="full"`` (docs/metrics.md §1), computed in float64: ``-inf`` is a masked token
    (probability 0); a row holding NaN or ``+inf`` has NaN statistics and is flagged.
    """
    x = np.asarray(logits, dtype=np.float64)
    vocab = x.shape[0]
    n_top, n_mass = min(topk, vocab), min(mass_k, vocab)
    n_fetch = max(n_top, n_mass, min(2, vocab))
    has_nan = bool(np.isnan(x).any())
    has_inf = bool((x == math.inf).any())
    peak = float(x.max()) if not has_nan else math.nan
    if has_nan or has_inf or not math.isfinite(peak):
        nan_row = np.full(vocab, math.nan)
        ids = np.arange(n_top, dtype=np.int64)
        return RowStats(
            math.nan, math.nan, math.nan, ids, np.full(n_top, math.nan), math.nan, nan_row, has_nan, has_inf
        )
    shifted = x - peak
    log_normalizer = peak + math.log(float(np.exp(shifted).sum()))
    log_probs = x - log_normalizer
    probs = np.exp(log_probs)
    positive = probs > 0.0
    entropy = float(-(probs[positive] * log_probs[positive]).sum()) / LN2
    fetch = np.argpartition(-x, n_fetch - 1)[:n_fetch] if n_fetch < vocab else np.arange(vocab)
    fetch = fetch[np.lexsort((fetch, -x[fetch]))]  # most likely first; ties: the lower id first
    top_probs = probs[fetch]
    margin = float(top_probs[0] - top_probs[1]) if vocab > 1 else 0.0
    return RowStats(
        entropy=entropy,
        margin=margin,
        mass=float(top_probs[:n_mass].sum()),
        top_ids=fetch[:n_top].astype(np.int64),
        top_probs=top_probs[:n_top],
        log_normalizer=log_normalizer,
        log_probs=log_probs,
        has_nan=False,
        has_inf=False,
    )


class TokenChooser:
    """Greedy (temperature 0) or sampling with temperature, top-k and top-p from a seeded generator."""

    def __init__(self, generation: GenerationRecord) -> None:
        self.generation = generation
        self.rng = np.random.default_rng(generation.seed)

    def __call__(self, logits: np.ndarray) -> tuple[int, float | None, float | None]:
        """The token chosen, and the entropy (bits) and probability of it under the distribution
        sampled from (None when greedy)."""
        gen = self.generation
        if not gen.do_sample:
            return int(np.argmax(logits)), None, None
        scores = np.asarray(logits, dtype=np.float64) / float(gen.temperature or 1.0)
        if gen.top_k is not None and 0 < gen.top_k < scores.shape[0]:
            kth = np.partition(scores, -gen.top_k)[-gen.top_k]
            scores = np.where(scores < kth, -math.inf, scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if gen.top_p is not None and gen.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            keep = cumulative - probs[order] < gen.top_p  # the smallest set reaching top_p, at least one
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        token = int(self.rng.choice(probs.shape[0], p=probs))
        positive = probs[probs > 0.0]
        return token, float(-(positive * np.log2(positive)).sum()), float(probs[token])


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


StepHook = Callable[[int, int], bool]
"""``hook(step, token_id)`` after each chosen token; True stops the generation there."""


def generate_one(
    model: LlamaModel,
    prompt: PromptRecord,
    generation: GenerationRecord,
    *,
    topk: int,
    mass_k: int,
    batch_index: int = 0,
    batch_size: int = 1,
    hook: StepHook | None = None,
    forced: Sequence[int] | None = None,
) -> SequenceCapture:
    """Decode one prompt token by token and capture every step's full-vocabulary statistics.

    ``forced``: the tokens to take instead of choosing (teacher forcing: the statistics of another
    backend's output under this model); the generation is then as long as ``forced``.
    """
    llm, module = model.llm, model.module
    vocab = model.vocab_size
    chooser = TokenChooser(generation)
    started = time.perf_counter()
    started_at = utc_now()
    llm.reset()
    llm.eval(prompt.token_ids)
    rows: list[RowStats] = []
    chosen: list[int] = []
    surprisal: list[float] = []
    sampling: list[tuple[float | None, float | None]] = []
    step_end_ms: list[float] = []
    finish = "length"
    stopped_at: int | None = None
    steps_wanted = len(forced) if forced is not None else generation.max_new_tokens
    for step in range(steps_wanted):
        pointer = module.llama_get_logits_ith(llm.ctx, -1)
        logits = np.array(np.ctypeslib.as_array(pointer, shape=(vocab,)), dtype=np.float32)
        stats = row_stats(logits, topk=topk, mass_k=mass_k)
        token, sampled_entropy, sampled_prob = chooser(logits)
        if forced is not None:
            token, sampled_entropy, sampled_prob = int(forced[step]), None, None
        rows.append(stats)
        chosen.append(token)
        surprisal.append(float(-stats.log_probs[token] / LN2))
        sampling.append((sampled_entropy, sampled_prob))
        step_end_ms.append((time.perf_counter() - started) * 1000.0)
        if hook is not None and hook(step, token):
            finish, stopped_at = "stopped_by_callback", step
            break
        if model.is_end(token) and not generation.ignore_eos and forced is None:
            finish = "eos"
            break
        if step + 1 < steps_wanted:
            llm.eval([token])
    elapsed = (time.perf_counter() - started) * 1000.0
    text_ids = [t for t in chosen if not model.is_end(t)]
    text = bytes(llm.detokenize(text_ids, prev_tokens=prompt.token_ids)).decode("utf-8", errors="replace")
    steps = len(rows)
    width = rows[0].top_ids.shape[0] if rows else min(topk, vocab)
    logit_stats = FullLogitStats(
        entropy=np.array([r.entropy for r in rows], dtype=np.float64),
        top_k_margin=np.array([r.margin for r in rows], dtype=np.float64),
        topk_mass=np.array([r.mass for r in rows], dtype=np.float64),
        topk_ids=np.array([r.top_ids for r in rows], dtype=np.int64).reshape(steps, width),
        topk_probs=np.array([r.top_probs for r in rows], dtype=np.float64).reshape(steps, width),
        log_normalizer=np.array([r.log_normalizer for r in rows], dtype=np.float64),
        has_nan=np.array([r.has_nan for r in rows], dtype=bool),
        has_inf=np.array([r.has_inf for r in rows], dtype=bool),
    )
    sampled = generation.do_sample and forced is None
    chosen_stats = FullChosenStats(
        token_ids=np.array(chosen, dtype=np.int64),
        surprisal=np.array(surprisal, dtype=np.float64),
        sampling_entropy=np.array([s[0] for s in sampling], dtype=np.float64) if sampled else None,
        sampling_prob=np.array([s[1] for s in sampling], dtype=np.float64) if sampled else None,
    )
    named = set(chosen) | {int(i) for i in logit_stats.topk_ids.reshape(-1)}
    return SequenceCapture(
        batch_index=batch_index,
        batch_size=batch_size,
        prompt=prompt,
        generated_token_ids=chosen,
        generated_text=text,
        finish_reason=finish,
        logits=logit_stats,
        chosen=chosen_stats,
        token_texts={i: model.token_text(i) for i in sorted(named)},
        warnings=list(NOT_OBSERVED),
        stopped_at_step=stopped_at,
        started_at_utc=started_at,
        generation_ms=elapsed,
        step_end_ms=step_end_ms,
    )


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


def capture_llama(
    model: LlamaModel,
    prompts: Sequence[Prompt],
    settings: Settings,
    *,
    first_index: int = 0,
    hook: StepHook | None = None,
) -> RunCapture:
    """Generate for each prompt in turn (llama.cpp decodes one sequence at a time here)."""
    if not prompts:
        raise InputError("no prompt given")
    if settings.num_beams != 1:
        raise InputError("--backend llama-cpp decodes greedily or by sampling: --num_beams must be 1")
    generation = generation_record(settings)
    started_at = utc_now()
    t0 = time.perf_counter()
    prepared = [prepare_prompt(model, prompt, settings) for prompt in prompts]
    tokenize_ms = (time.perf_counter() - t0) * 1000.0
    sequences = []
    step_ms: list[float] = []
    for offset, prompt in enumerate(prepared):
        seq = generate_one(
            model,
            prompt,
            generation,
            topk=settings.topk,
            mass_k=settings.topk_mass_k,
            batch_index=first_index + offset,
            batch_size=len(prepared),
            hook=hook,
        )
        ends = seq.step_end_ms or []
        step_ms.extend(b - a for a, b in zip([0.0, *ends[:-1]], ends, strict=True))
        sequences.append(seq)
    return RunCapture(
        model=model_record(model),
        generation=generation,
        capture_mode="summary",
        entropy_mode="full",
        sequences=sequences,
        elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        started_at_utc=started_at,
        tokenize_ms=tokenize_ms,
        step_ms=step_ms,
    )
