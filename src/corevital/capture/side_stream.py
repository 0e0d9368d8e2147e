"""Device work that the generation does not wait for, on a CUDA stream of its own.

The prompt telemetry reads every prompt position of the pass over the prompt: each layer's
[B, H, P, P] attention probabilities (eight 512-token prompts of Llama-3-8B: 2.1G of them), each
pair of consecutive layers' states, the output head over every position. On the model's stream
those kernels run between the layers' own, and generate() waits for all of them when it reads the
first token. On a stream of their own (:class:`SideStream`) they run beside the model: the prompt
pass ends when the model's layers do, and the telemetry fills the time the device waits for the
host during the first decoding steps (docs/performance.md, "The pass over the prompt" and "The
prompt telemetry on a stream of its own"). The observer reads the results at the end of the
generation, after :meth:`SideStream.join`.

PyTorch's caching allocator hands a block back to the stream that allocated it once its tensor is
freed, without waiting for another stream's kernels. Work on a side stream keeps three rules:

- it starts after what the model's stream has queued (``wait_stream``): it reads the model's tensors
  as they are when it is launched;
- each of the model's tensors it reads is recorded on the side stream (``Tensor.record_stream``)
  and kept referenced until the side stream has run past the work that reads it
  (:meth:`SideStream.release_done`, polled without waiting) or the model's stream waits for it
  (:meth:`SideStream.join`), so that the allocator does not hand its memory out again before the
  side kernels that read it have run;
- what it produces is read on the model's stream only after that stream waits for the side stream
  (:meth:`SideStream.join`). Those results are freed into the side stream's pool, where a later
  allocation is used only by kernels of a later :meth:`SideStream.running`, queued after every
  kernel of the model's stream that read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor

# One side stream per device for the process. The caching allocator keeps the blocks a stream frees
# for that stream alone: a new stream for each generation would keep every earlier one's blocks
# reserved (2.1 GB more each generation of eight 512-token Llama-3-8B prompts).
_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def side_stream(device: torch.device) -> torch.cuda.Stream:
    """The process's side stream on ``device`` (a CUDA device with its index), made at first use."""
    stream = _STREAMS.get(device)
    if stream is None:
        stream = _STREAMS.setdefault(device, torch.cuda.Stream(device))  # type: ignore[no-untyped-call]
    return stream


class SideStream:
    """One generation's work on the side streams, which the model's stream reads only after :meth:`join`."""

    def __init__(self) -> None:
        self._unjoined: set[torch.device] = set()  # devices whose side work the model's stream has not joined
        # the model's tensors side work reads, with the event that side work ends at
        self._held: list[tuple[torch.cuda.Event, tuple[Tensor, ...]]] = []

    @contextmanager
    def running(self, device: torch.device, *reads: Tensor | None) -> Iterator[None]:
        """Queue the block's device work on ``device``'s side stream, after what its current stream
        has queued; ``reads``: the current stream's tensors that work reads (None entries, and
        tensors on other devices, which the side stream does not run on, skipped). A device other
        than CUDA runs the block as it is."""
        if device.type != "cuda":
            yield
            return
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        stream = side_stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        # the reads on this device (a model split over devices has others)
        kept = tuple(t for t in reads if t is not None and t.device == device)
        for tensor in kept:
            tensor.record_stream(stream)
        self._unjoined.add(device)
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            done.record(stream)
            self._held.append((done, kept))

    def release_done(self) -> None:
        """Drop the references to the model's tensors whose side work has run (asks the device,
        does not wait for it): the oldest first, up to the first still running (a step's start
        asks once while the side stream runs)."""
        held = self._held
        ran = 0
        while ran < len(held) and held[ran][0].query():  # type: ignore[no-untyped-call]
            ran += 1
        del held[:ran]

    def join(self) -> None:
        """Make each device's current stream wait for the side work queued so far (no host wait),
        and drop the references to the model's tensors that work reads."""
        for device in self._unjoined:
            torch.cuda.current_stream(device).wait_stream(side_stream(device))
        self._unjoined.clear()
        self._held.clear()  # what the model's stream queues from here runs after the side work


def beside(
    side: SideStream | None, device: torch.device, *reads: Tensor | None
) -> AbstractContextManager[None]:
    """:meth:`SideStream.running` where there is a side stream, else the block as it is."""
    return nullcontext() if side is None else side.running(device, *reads)
