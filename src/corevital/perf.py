"""``--perf``: where the time of a run goes, recorded into ``extensions.performance``.

- ``summary``: total wall time and the parent operations (config_load, model_load, tokenize,
  model_inference, report_build, sink_write) with their share, plus the unaccounted remainder.
- ``detailed``: also a nested breakdown and statistics of the per-step decode times.
- ``strict``: also a warm-up generation and an uninstrumented baseline generation of the same
  prompts with the model's default attention, and the overhead of instrumented inference over it.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Operation:
    name: str
    ms: float = 0.0
    children: list[Operation] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ms": round(self.ms, 3)}
        if self.children:
            out["children"] = [child.as_dict() for child in self.children]
        return out


@dataclass
class StrictMeasurements:
    warmup_ms: float
    baseline_ms: float
    original_model_load_ms: float | None = None


class PerfRecorder:
    """Times nested operations of one run; cheap enough to leave on."""

    def __init__(self, mode: str, *, start: float | None = None) -> None:
        """``start``: the ``time.perf_counter()`` the run began at (default now), so that work timed
        before the recorder existed (reading the configuration that asks for it) is in the total."""
        self.mode = mode
        self._start = time.perf_counter() if start is None else start
        self.root = Operation("run")
        self._stack = [self.root]
        self.step_ms: list[float] = []
        self.strict: StrictMeasurements | None = None

    @contextmanager
    def op(self, name: str) -> Iterator[Operation]:
        node = Operation(name)
        self._stack[-1].children.append(node)
        self._stack.append(node)
        t0 = time.perf_counter()
        try:
            yield node
        finally:
            node.ms += (time.perf_counter() - t0) * 1000.0
            self._stack.pop()

    def add(self, name: str, ms: float) -> None:
        """An operation timed elsewhere (e.g. tokenization inside capture)."""
        self._stack[-1].children.append(Operation(name, ms))

    @property
    def detailed(self) -> bool:
        return self.mode in ("detailed", "strict")

    def extension(self) -> dict[str, Any]:
        total = (time.perf_counter() - self._start) * 1000.0
        parents = self.root.children
        accounted = sum(op.ms for op in parents)
        info: dict[str, Any] = {
            "total_wall_time_ms": round(total, 3),
            "parent_operations": [
                {"name": op.name, "ms": round(op.ms, 3), "pct": round(100 * op.ms / total, 2)}
                for op in parents
            ],
            "unaccounted_time": {
                "ms": round(total - accounted, 3),
                "pct": round(100 * (total - accounted) / total, 2),
            },
        }
        if self.detailed:
            info["detailed_breakdown"] = {
                "operations": [op.as_dict() for op in parents],
                "per_step": step_statistics(self.step_ms),
            }
        if self.strict is not None:
            inference = sum(op.ms for op in parents if op.name == "model_inference")
            baseline = self.strict.baseline_ms
            overhead = inference - baseline
            build = sum(op.ms for op in parents if op.name in ("report_build", "sink_write"))
            info.update(
                warmup_ms=round(self.strict.warmup_ms, 3),
                baseline_ms=round(baseline, 3),
                instrumented_inference_ms=round(inference, 3),
                inference_overhead_ms=round(overhead, 3),
                inference_overhead_pct=round(100 * overhead / baseline, 2) if baseline > 0 else None,
                corevital_overhead_ms=round(overhead + build, 3),
                corevital_overhead_pct=round(100 * (overhead + build) / baseline, 2)
                if baseline > 0
                else None,
                original_model_load_ms=self.strict.original_model_load_ms,
            )
        return info


def step_statistics(step_ms: list[float]) -> dict[str, Any]:
    if not step_ms:
        return {"count": 0}
    ordered = sorted(step_ms)
    return {
        "count": len(step_ms),
        "first_ms": round(step_ms[0], 3),
        "mean_ms": round(statistics.fmean(step_ms), 3),
        "median_ms": round(statistics.median(step_ms), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
    }


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Cyclic garbage collection held off for the block, restored after (reference counting still
    frees everything as usual; only the search for reference cycles waits).

    Used where a phase makes many long-lived or acyclic objects and the collector's passes find
    nothing to free: importing torch and transformers and building the model (about 700,000
    objects, 10-20 % of the imports' time) and building reports (docs/performance.md, "Report
    building").
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
