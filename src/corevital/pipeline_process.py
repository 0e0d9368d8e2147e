"""What a command that owns its process does around a run: timing its operations, settling the
loaded model out of the cyclic GC's way, and holding SIGINT/SIGTERM while a batch is written.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from corevital.perf import Operation, PerfRecorder


@contextmanager
def timed(perf: PerfRecorder | None, name: str) -> Iterator[Operation | None]:
    if perf is None:
        yield None
    else:
        with perf.op(name) as node:
            yield node


def settle_loaded_model() -> None:
    """For a command that owns its process, once its model is loaded: exempt what is alive now
    (the model, torch, transformers: hundreds of thousands of objects) from cyclic GC scans.

    A full-capture report of a large model allocates tens of thousands of small objects, enough
    to trigger full collections, and each would walk every one of those objects again
    (docs/performance.md, "Report building"). The commands keep their model to the end, so nothing
    frozen would have been collected. No collection comes first: after the imports and the load of
    the default model it walks ~400,000 objects and frees none (0.8 s on this 2-core CPU at a load
    average of 7). The library API never does this: the process is the application's.
    """
    gc.freeze()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held while a batch is written, delivered after it (main thread only).

    A signal that arrives during the write lets the write finish, then interrupts as usual
    (KeyboardInterrupt for both), so that what was being stored is stored whole.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    for sig in previous:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt
