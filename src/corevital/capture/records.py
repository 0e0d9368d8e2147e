"""Host-side results of capture: numpy arrays and plain values, no torch.

This is what ``capture`` hands to ``analysis`` and ``report``. Per-step statistics of one
sequence are the :mod:`corevital.metrics.types` dataclasses whose fields are numpy arrays with a
leading step axis: ``[T]`` for logits, ``[T, L]`` for per-layer values, ``[T, L, H]`` per head.
Encoder summaries have a leading layer axis ``[L_enc]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from corevital.capture.capabilities import ModelCapabilities
from corevital.config import Settings


def utc_timestamp() -> str:
    """Now, as ISO 8601 UTC with Z and millisecond precision (the report's time format)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Field types below are the metrics dataclasses holding numpy arrays; they are typed as Any here
# because the same classes hold device tensors inside capture.
Stats = Any

SKETCH_SEED = 20240611
"""Seed of the hidden-state sketch's Gaussian projection: the one capture uses and reports record."""


@dataclass(frozen=True)
class CaptureWarning:
    code: str
    message: str


@dataclass(frozen=True)
class PromptRecord:
    text: str  # what the user asked
    model_text: str  # what the model read (chat template applied, if any)
    token_ids: list[int]
    chat_template_applied: bool


@dataclass(frozen=True)
class ModelRecord:
    hf_id: str
    revision: str | None
    source: str  # hub | local | gguf
    gguf_file: str | None
    dtype: str
    device: str
    quantization: str | None
    capabilities: ModelCapabilities


@dataclass(frozen=True)
class GenerationRecord:
    """The decoding settings actually used."""

    do_sample: bool
    temperature: float | None
    top_k: int | None
    top_p: float | None
    num_beams: int
    early_stopping: bool
    max_new_tokens: int
    seed: int
    ignore_eos: bool = False
    # generate() keywords passed through as given (repetition_penalty=..., stop_strings=..., ...),
    # num_return_sequences included; compared by identity, never hashed.
    generate_kwargs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    from_model: bool = False  # --generation-config model: the model's generation defaults were used

    @property
    def num_return_sequences(self) -> int:
        return int(self.generate_kwargs.get("num_return_sequences") or 1)


def picked_generation_record(
    pick: Callable[[str], Any],
    *,
    max_new_tokens: int,
    seed: int,
    generate_kwargs: dict[str, Any],
    ignore_eos: bool = False,
    from_model: bool = False,
) -> GenerationRecord:
    """The decoding read through ``pick`` (a ``generation_config`` attribute, or a ``generate()``
    keyword before it): sampling knobs only when sampling, one beam and no early stop by default."""
    sample = bool(pick("do_sample"))
    return GenerationRecord(
        do_sample=sample,
        temperature=pick("temperature") if sample else None,
        top_k=pick("top_k") if sample else None,
        top_p=pick("top_p") if sample else None,
        num_beams=int(pick("num_beams") or 1),
        early_stopping=bool(pick("early_stopping")),
        max_new_tokens=max_new_tokens,
        seed=seed,
        ignore_eos=ignore_eos,
        generate_kwargs=generate_kwargs,
        from_model=from_model,
    )


def generation_record(
    settings: Settings, model_defaults: Any = None, generate_kwargs: dict[str, Any] | None = None
) -> GenerationRecord:
    """The decoding a run with these settings uses (temperature 0: greedy, no sampling knobs).

    ``model_defaults``: the model's ``generation_config``, used for sampling and beams instead of
    CoreVital's settings when the setting ``generation_config`` is ``model``.
    """
    extra = dict(generate_kwargs or {})
    if settings.generation_config == "model" and model_defaults is not None:
        return picked_generation_record(
            lambda name: getattr(model_defaults, name, None),
            max_new_tokens=settings.max_new_tokens,
            seed=settings.seed,
            generate_kwargs=extra,
            ignore_eos=settings.ignore_eos,
            from_model=True,
        )
    sample = settings.temperature > 0
    return GenerationRecord(
        do_sample=sample,
        temperature=settings.temperature if sample else None,
        top_k=settings.top_k if sample else None,
        top_p=settings.top_p if sample else None,
        num_beams=settings.num_beams,
        early_stopping=settings.early_stopping,
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
        ignore_eos=settings.ignore_eos,
        generate_kwargs=extra,
    )


@dataclass(frozen=True)
class PromptHeadAttention:
    """One head's sparse prompt attention: parallel arrays, indices into the unpadded prompt."""

    query_indices: np.ndarray
    key_indices: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class PromptLayerAttention:
    """One layer's sparse prompt attention for one sequence, every head in one set of arrays: head
    ``h`` holds the first ``count[h]`` entries of row ``h`` (indices into the unpadded prompt)."""

    query_indices: np.ndarray  # [H, n]
    key_indices: np.ndarray  # [H, n]
    weights: np.ndarray  # [H, n]
    count: np.ndarray  # [H]

    def entries(self) -> np.ndarray:
        """[H, n] bool: which entries of each row are the head's."""
        count = np.asarray(self.count).reshape(-1, 1)
        return np.arange(np.asarray(self.weights).shape[1]) < count

    def heads(self) -> list[PromptHeadAttention]:
        return [
            PromptHeadAttention(self.query_indices[h, :n], self.key_indices[h, :n], self.weights[h, :n])
            for h, n in enumerate(np.asarray(self.count).tolist())
        ]


@dataclass(frozen=True)
class PromptTelemetry:
    """How the model read the prompt (docs/metrics.md §5), for one sequence."""

    surprisals: np.ndarray | None  # [P-1] bits (decoder-only models)
    layer_transformations: np.ndarray  # [L]
    layers: list[PromptLayerAttention]  # [L]; empty when attention was not observed
    basin_scores: np.ndarray | None  # [L, H]
    context_share: np.ndarray | None = None  # [L, H] attention share into the RAG context span

    @property
    def heads(self) -> list[list[PromptHeadAttention]]:
        """Each layer's heads, one object each ([L][H])."""
        return [layer.heads() for layer in self.layers]


@dataclass
class SequenceCapture:
    """Everything observed while one sequence was generated."""

    batch_index: int
    batch_size: int
    prompt: PromptRecord
    generated_token_ids: list[int]
    generated_text: str
    finish_reason: str  # eos | length | stopped_by_callback | stop_string
    logits: Stats  # LogitStats, arrays [T] / [T, k]
    chosen: Stats  # ChosenTokenStats, arrays [T]
    hidden: Stats | None = None  # HiddenStats, arrays [T, L]
    attention: Stats | None = None  # AttentionStats, arrays [T, L]
    cross_attention: Stats | None = None  # AttentionStats, arrays [T, L] (encoder-decoder)
    encoder_hidden: Stats | None = None  # HiddenStats, arrays [L_enc]
    encoder_attention: Stats | None = None  # AttentionStats, arrays [L_enc]
    prompt_telemetry: PromptTelemetry | None = None
    token_texts: dict[int, str] = field(default_factory=dict)  # every token id the report names
    warnings: list[CaptureWarning] = field(default_factory=list)
    stopped_at_step: int | None = None
    stop_policy: str | None = None  # which live policy stopped it (None: a plain step callback)
    stop_reason: str | None = None
    started_at_utc: str | None = None  # when this sequence's batch started (tokenizing, then generate())
    generation_ms: float | None = None  # wall time of that batch, to the end of generate()
    # ms from the batch's start (tokenizing) to the end of each of this sequence's decoding steps
    # (its token chosen); None where steps were not timed (beam search, replayed).
    step_end_ms: list[float] | None = None

    @property
    def num_steps(self) -> int:
        return len(self.generated_token_ids)


@dataclass
class RunCapture:
    model: ModelRecord
    generation: GenerationRecord
    capture_mode: str
    entropy_mode: str
    sequences: list[SequenceCapture]
    elapsed_ms: float
    started_at_utc: str
    tokenize_ms: float = 0.0
    step_ms: list[float] = field(default_factory=list)  # wall time of each decoding step (all batches)


ProgressCallback = Callable[[int, int, int, list[Any]], None]
"""``progress(batch_offset, batch, steps_done, host_steps)``: called at the end of every decoding step,
and once more after the generation with the same ``steps_done`` and every step in ``host_steps``.

``host_steps`` are the steps reduced to the host so far (during the generation a window or more
behind ``steps_done`` when steps are deferred; :mod:`corevital.capture.steps`): a display reads them
without forcing a reduction. ``len(host_steps) == steps_done`` once every step is on the host.
"""


@dataclass(frozen=True)
class StepEvent:
    """One decoding step of a whole batch, on the host, as a live callback sees it.

    ``logits``/``chosen`` arrays are ``[B]``; ``hidden``/``attention`` are ``[L, B]`` or None.
    ``finished`` marks sequences that had already ended before this step (their values are
    padding and should be ignored).
    """

    step: int
    token_ids: np.ndarray
    finished: np.ndarray
    batch_offset: int  # row b of this batch is prompt number batch_offset + b of the run
    logits: Stats
    chosen: Stats
    hidden: Stats | None
    attention: Stats | None
    cross_attention: Stats | None


# A live per-step callback: return True (stop all), a [B] bool array (stop those), or None/False.
StepCallback = Callable[[StepEvent], "bool | np.ndarray | None"]
