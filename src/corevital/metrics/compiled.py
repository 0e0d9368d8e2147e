"""Reductions compiled by ``torch.compile`` into fused kernels, run as written where that fails.

A reduction over a large intermediate (the float32 probabilities of a layer's attention over the
prompt) written with PyTorch operations makes that intermediate in memory and reads it once per
operation; compiled, the operations fuse into one kernel that reads the inputs once and writes only
the results. Compiling costs seconds the first time a process meets a new kind of input (shapes are
symbolic, so one compilation serves every prompt length and batch size; inductor's cache on disk
keeps it for later processes), so capture compiles its reductions only where the model's decoding
steps are compiled too (:class:`~corevital.capture.options.Tuning`). Where compilation fails (no
compiler toolchain, an unsupported device), one warning goes to the log,
:attr:`CompiledReduction.failure` says why, and the functions that use the reduction take their
written form from then on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch

log = logging.getLogger(__name__)

# A reduction meets several kinds of input over a process (dtypes, a window of one step, a mask
# broadcast over layers or not): dynamo's default of 8 compilations per function would be reached by
# a long-running server and end in the uncompiled form; its limit is raised for these calls alone.
RECOMPILE_LIMIT = 64

R = TypeVar("R")


class CompiledReduction(Generic[R]):
    """``fn`` compiled on its first call (``dynamic=True``, ``fullgraph=True``); ``fn`` itself, run
    uncompiled, where compilation fails. The results equal ``fn``'s within float32 rounding (fused
    sums run in another order)."""

    def __init__(self, fn: Callable[..., R]) -> None:
        self.fn = fn
        self._compiled: Callable[..., R] | None = None
        self.failure: str | None = None  # why compilation failed: then ``fn`` runs uncompiled
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> R:
        if self.failure is None:
            try:
                # dynamo compiles one call at a time (generations in several threads)
                with self._lock, torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                    return self._compiled_fn()(*args)
            except torch.OutOfMemoryError:
                raise  # not the compiler's doing: running as written would need the memory too
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to the eager form
                self.failure = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                log.warning("%s runs uncompiled: compiling it failed (%s)", self.fn.__name__, self.failure)
        return self.fn(*args)

    def _compiled_fn(self) -> Callable[..., R]:
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
        return self._compiled
