"""What one capture observes and how it spends memory, derived from the settings in one place.

:class:`CaptureOptions` carries the capture settings under their setting names (``capture``,
``topk``, ``topk_mass_k``, ...), plus what a generation adds (whether sampling changes the
distribution, a RAG context's span). :class:`Tuning` holds the budgets that trade memory for
kernel launches: none of them changes a number (beyond float32 rounding, where reductions run
compiled), so tests and benchmarks set them freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from corevital.capture.generate_kwargs import changes_scores
from corevital.capture.records import GenerationRecord
from corevital.config import Settings
from corevital.metrics.prompt import DEFAULT_CHUNK_BYTES
from corevital.modes import CaptureMode, EntropyMode

MiB = 2**20


@dataclass(frozen=True)
class Tuning:
    """Memory budgets and batching of one capture.

    A budget left None follows the model's size and, on CUDA devices, the memory they have free when
    the generation starts (:meth:`resolved`): where memory is plentiful, fewer and larger reductions.
    """

    # Steps reduced together at most: one window of deferred steps (:mod:`.steps`). None: 32, or
    # 128 on CUDA devices (their free memory known): there a window's reduction costs the host its
    # kernel launches, about the same for 32 steps as for 128, and the bytes budget below still
    # bounds the window. A progress callback sees a window's steps once it is reduced.
    flush_every: int | None = None
    # Largest float32 size of one window's rows; None: the model's weight bytes / 128, 1-128 MiB
    # (Llama-3-8B in bfloat16: 125 MiB, a window of 32 steps at batch 1, prompt 512), or 1/64 of
    # the CUDA devices' free memory where that is more, up to 1 GiB.
    deferred_bytes: int | None = None
    # Largest float32 block a prompt reduction makes at once; None: the model's bytes / 64, 1-32 MiB,
    # or 1/128 of the CUDA devices' free memory where that is more, up to 512 MiB.
    prompt_chunk_bytes: int | None = None
    # Largest transient copy of a group of layers' keys, to score their rows in one matmul instead of
    # one per layer; None: 64 MiB (Llama-3-8B, batch 1: about 1000 cached tokens), or 1/64 of the
    # CUDA devices' free memory where that is more, up to 1 GiB.
    stacked_keys_bytes: int | None = None
    # The CPU scores layer by layer: there the copy costs more than the calls it saves. True counts
    # what an accelerator runs (bench/op_count.py).
    stack_keys_on_cpu: bool = False
    # Whether the attention reductions over float32 probabilities (the prompt's rows, a window's
    # decoding rows) run compiled into fused kernels (corevital.metrics.compiled: the same numbers
    # within float32 rounding, without the probabilities in memory); None: where generate() compiles
    # the decoding steps (a static cache on a GPU), whose first generation pays compilation already.
    # Settled per generation at its prompt pass (StepObserver).
    compiled_reductions: bool | None = None
    # Whether the prompt telemetry (the prompt's attention scoring, the layer transformations, the
    # surprisals) runs on a CUDA stream of its own, beside the model's layers
    # (corevital.capture.side_stream: the same numbers, the device's time overlapped with the first
    # decoding steps); None: where the reductions run as written (their compiled form never makes
    # the probabilities). Settled per generation at its prompt pass; CUDA devices only.
    side_stream: bool | None = None

    def window_steps(self, free_bytes: int | None = None) -> int:
        """Steps one window reduces together at most (``flush_every``, or its default)."""
        if self.flush_every is not None:
            return self.flush_every
        return FLUSH_EVERY if free_bytes is None else FLUSH_EVERY_CUDA

    def deferred_budget(self, model_bytes: int, free_bytes: int | None = None) -> int:
        if self.deferred_bytes is not None:
            return self.deferred_bytes
        sized = min(max(model_bytes // DEFERRED_SHARE, DEFERRED_BOUNDS[0]), DEFERRED_BOUNDS[1])
        return _with_headroom(sized, free_bytes, FREE_SHARE_DEFERRED, FREE_CAP_DEFERRED)

    def prompt_chunk(self, model_bytes: int, free_bytes: int | None = None) -> int:
        if self.prompt_chunk_bytes is not None:
            return self.prompt_chunk_bytes
        sized = min(max(model_bytes // PROMPT_CHUNK_SHARE, MiB), DEFAULT_CHUNK_BYTES)
        return _with_headroom(sized, free_bytes, FREE_SHARE_PROMPT, FREE_CAP_PROMPT)

    def stacked_keys(self, free_bytes: int | None = None) -> int:
        if self.stacked_keys_bytes is not None:
            return self.stacked_keys_bytes
        return _with_headroom(STACKED_KEYS_BYTES, free_bytes, FREE_SHARE_STACKED, FREE_CAP_STACKED)

    def stacks_keys(self, on_cpu: bool, nbytes: int) -> bool:
        """Whether to score layers in one matmul over a copy of their keys (``nbytes`` in all)."""
        return (self.stack_keys_on_cpu or not on_cpu) and nbytes <= self.stacked_keys()

    def resolved(self, model_bytes: int, free_bytes: int | None) -> Tuning:
        """Every budget set: for a model of ``model_bytes`` on a device with ``free_bytes`` free
        (None: the CPU, or a device whose free memory is not known)."""
        return replace(
            self,
            flush_every=self.window_steps(free_bytes),
            deferred_bytes=self.deferred_budget(model_bytes, free_bytes),
            prompt_chunk_bytes=self.prompt_chunk(model_bytes, free_bytes),
            stacked_keys_bytes=self.stacked_keys(free_bytes),
        )


def _with_headroom(sized: int, free_bytes: int | None, share: int, cap: int) -> int:
    """``sized``, or ``free_bytes / share`` up to ``cap`` where that is more."""
    if free_bytes is None:
        return sized
    return max(sized, min(free_bytes // share, cap))


FLUSH_EVERY, FLUSH_EVERY_CUDA = 32, 128
DEFERRED_SHARE = 128
DEFERRED_BOUNDS = (MiB, 128 * MiB)
PROMPT_CHUNK_SHARE = 64
STACKED_KEYS_BYTES = 64 * MiB
# Shares of the CUDA devices' free memory the budgets may take, and their caps: a reduction's
# transient buffers come to two to three times its budget (peaks in docs/performance.md).
FREE_SHARE_DEFERRED, FREE_CAP_DEFERRED = 64, 2**30
FREE_SHARE_PROMPT, FREE_CAP_PROMPT = 128, 512 * MiB
FREE_SHARE_STACKED, FREE_CAP_STACKED = 64, 2**30


@dataclass(frozen=True)
class CaptureOptions:
    """The settings capture reads, under their setting names, and what a generation adds."""

    capture: CaptureMode
    entropy_mode: EntropyMode
    topk: int
    topk_mass_k: int
    hidden_clip_value: float
    sketch_dim: int
    attention_path: Literal["fast", "eager"]
    prompt_telemetry: bool
    sparse_threshold: float
    sparse_max_per_head: int
    sampling_changes_distribution: bool = False  # the processed scores differ from the logits
    context_span: tuple[int, int] | None = None  # RAG context tokens: attention share into them
    tuning: Tuning = field(default_factory=Tuning)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sampling_changes_distribution: bool = False,
        context_span: tuple[int, int] | None = None,
        tuning: Tuning | None = None,
    ) -> CaptureOptions:
        return cls(
            capture=settings.capture,
            entropy_mode=settings.entropy_mode,
            topk=settings.topk,
            topk_mass_k=settings.topk_mass_k,
            hidden_clip_value=settings.hidden_clip_value,
            sketch_dim=settings.sketch_dim,
            attention_path=settings.attention_path,
            prompt_telemetry=settings.prompt_telemetry,
            sparse_threshold=settings.sparse_threshold,
            sparse_max_per_head=settings.sparse_max_per_head,
            sampling_changes_distribution=sampling_changes_distribution,
            context_span=context_span,
            tuning=tuning or Tuning(),
        )

    @classmethod
    def for_generation(
        cls,
        settings: Settings,
        gen: GenerationRecord,
        context_span: tuple[int, int] | None = None,
        tuning: Tuning | None = None,
    ) -> CaptureOptions:
        """The options of one generation: the settings, and whether its sampling changes the distribution."""
        changes = changes_scores(gen.generate_kwargs) or (
            gen.do_sample
            and (
                gen.temperature != 1.0 or (gen.top_k or 0) > 0 or (gen.top_p is not None and gen.top_p < 1.0)
            )
        )
        return cls.from_settings(
            settings, sampling_changes_distribution=changes, context_span=context_span, tuning=tuning
        )

    @property
    def observe_attention(self) -> bool:
        """Summary capture skips the per-layer attention work entirely (the model keeps its own kernel)."""
        return self.capture != "summary"

    @property
    def observe_prompt(self) -> bool:
        """Prompt telemetry is per-layer detail: computed in full and on_risk capture when enabled."""
        return self.prompt_telemetry and self.observe_attention

    @property
    def fast_attention(self) -> bool:
        return self.attention_path == "fast"
