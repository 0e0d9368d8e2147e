"""The window of decoding steps waiting to be reduced together, and the host records of those reduced.

A step leaves its raw rows (:class:`~.steps.RawStep`), copied into a slot of the window's
:class:`~.steps.StepSlab` (:meth:`StepWindow.keep_rows`); the window reduces the
waiting steps in one batch per kind (:func:`~.steps.reduce_raw_steps`) and moves them to the host
in one copy when it holds ``flush_every`` steps (:meth:`~.options.Tuning.window_steps`) or its
rows reach the bytes budget (:class:`~.options.Tuning`). Steps that deferred their attention rows
are scored against the generation's cache, which the window follows (:mod:`.attention_window`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from corevital.capture.attention_window import append_only_keys, is_append_only, static_keys
from corevital.capture.hf_compat import static_full_layers
from corevital.capture.options import CaptureOptions
from corevital.capture.steps import (
    DeviceStep,
    RawStep,
    StepBatch,
    StepSlab,
    follows,
    reduce_raw_steps,
    split_host_batch,
)
from corevital.capture.tensor_parallel import ShardGroup, combine_window
from corevital.metrics.transfer import PendingHost, tensor_bytes, to_host, to_host_later


def _uniform_runs(raw: list[RawStep]) -> list[list[RawStep]]:
    """``raw`` cut into runs of consecutive steps of one kind, each reduced in one batch.

    Steps of one generation normally form a single run; a run ends where a step lacks a part the
    previous one had (hidden states, a sampling distribution, deferred attention rows) or the reverse.
    """
    runs: list[list[RawStep]] = []
    for step in raw:
        if runs and runs[-1][-1].kind() == step.kind():
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def held_bytes(step: RawStep) -> int:
    """Device bytes a step keeps alive: its raw rows (:meth:`~.steps.RawStep.held_bytes`) and its
    reduced attention."""
    return step.held_bytes() + tensor_bytes((step.attention, step.cross_attention))


class StepWindow:
    """Steps waiting for their batched reduction (``waiting``) and those reduced (``host_steps``)."""

    def __init__(
        self,
        options: CaptureOptions,
        sketch: Tensor | None,
        budget_bytes: int,
        shards: ShardGroup | None = None,
    ) -> None:
        self.options = options
        self.shards = shards  # a tensor-parallel model: attention combined over its ranks' heads
        self.sketch = sketch
        self.budget_bytes = budget_bytes
        self.steps_cap = options.tuning.window_steps()  # the options come resolved (Tuning.resolved)
        self.waiting: list[RawStep] = []
        self.waiting_bytes = 0
        self.host_steps: list[DeviceStep] = []  # the same dataclasses, fields as numpy arrays
        # each reduction's statistics on the host, step axis first, in step order (host_steps are
        # views of these): what a generation's series are cut from (:mod:`.sequences`)
        self.host_batches: list[StepBatch] = []
        self._cache: Any = None  # the generation's key/value cache, when attention rows are deferred
        self._cache_append_only = False
        self._cache_static = False  # compiled steps' rows are scored against a static cache's keys
        # reductions launched by :meth:`reduce`, on the device until the next flush
        self._reduced: list[tuple[StepBatch, list[Any]]] = []
        self._in_flight: list[PendingHost] = []  # copies started by :meth:`flush_later`, in step order
        self._slab: StepSlab | None = None  # the slab steps are copied into, until it is full or reduced
        self._slots_used = 0

    def keep_rows(
        self,
        logits_row: Tensor,
        rows: tuple[Any, ...],
        more_rows: tuple[Any, ...] | None,
        steps_left: Callable[[], int | None],
    ) -> tuple[StepSlab, int] | None:
        """``logits_row`` ([B, 1, V]) and ``rows`` then ``more_rows`` (each layer's [B, 1, d], in
        order) copied side by side into the next slot of the window's slab by one kernel: the slab
        and the slot, or None where they are not so (some row of another shape, dtype or device).

        A slab is made when none has a free slot, for as many steps as the window can still take
        (its step cap, its bytes budget) and ``steps_left()`` allows (None: not known), and checks
        every row's shape, dtype and device once; the steps after it check the number of rows
        before the copy and the slot's width after it. A step whose rows no longer fill the slot
        exactly (``torch.cat`` resizes an ``out`` of another shape and warns, writing into the free
        slots after it or, from the last slot, growing the slab's storage) leaves the slab to the
        steps already in it and gets None; so does one whose copy fails (a row on another device)
        or whose warning is an error.
        """
        slab = self._slab
        extra = () if more_rows is None else more_rows
        if slab is None or self._slots_used == slab.capacity or len(rows) + len(extra) != slab.rows:
            slab = self._slab = self._new_slab(logits_row, rows + extra, steps_left())
            self._slots_used = 0
            if slab is None:
                return None
        slot = self._slots_used
        out = slab.slots[slot]
        try:
            torch.cat((logits_row, *rows, *extra), dim=2, out=out)
        except (TypeError, RuntimeError, UserWarning):
            self._slab = None
            return None
        if out.shape[-1] != slab.slot_width:  # resized: its overflow is in free slots or new storage
            self._slab = None
            return None
        self._slots_used = slot + 1
        return slab, slot

    def _new_slab(self, logits_row: Tensor, rows: tuple[Any, ...], steps_left: int | None) -> StepSlab | None:
        if (
            not rows
            or not isinstance(logits_row, Tensor)
            or logits_row.dim() != 3
            or logits_row.shape[1] != 1
        ):
            return None
        batch, _, vocab = logits_row.shape
        first = rows[0]
        if not isinstance(first, Tensor) or first.dim() != 3 or first.shape[:2] != (batch, 1):
            return None
        shape, dtype, device = first.shape, logits_row.dtype, logits_row.device
        # every row [B, 1, d] of one width, of the logits' dtype and device (once a slab, on the host)
        if not all(
            isinstance(row, Tensor) and row.shape == shape and row.dtype == dtype and row.device == device
            for row in rows
        ):
            return None
        width = shape[2]
        step_bytes = StepSlab.float32_slot_bytes(batch, vocab + len(rows) * width)
        room = max(self.budget_bytes - self.waiting_bytes, 0)
        capacity = min(self.steps_cap - len(self.waiting), -(-room // step_bytes))
        if steps_left is not None:
            capacity = min(capacity, steps_left)
        buffer = torch.empty(
            (max(capacity, 1), batch, 1, vocab + len(rows) * width),
            dtype=logits_row.dtype,
            device=logits_row.device,
        )
        return StepSlab(buffer, buffer.unbind(0), vocab, len(rows), width)

    def add(self, step: RawStep) -> bool:
        """Keep ``step`` (its token chosen); True when the window is full and should be flushed."""
        if self.waiting and follows(step, self.waiting[-1]):
            self.waiting[-1].ids = None  # its token is in this step's ids: one tensor held, not N
        self.waiting.append(step)
        self.waiting_bytes += step.float32_bytes()
        return len(self.waiting) >= self.steps_cap or self.waiting_bytes >= self.budget_bytes

    def cache_only_appends(self, cache: Any) -> bool:
        """Whether rows deferred now can be scored later against ``cache`` (it only appends keys).

        A new cache first has the rows deferred against the previous one scored.
        """
        self._follow(cache)
        return self._cache_append_only

    def appended_keys(self, cache: Any) -> list[Tensor] | None:
        """Every layer's keys in ``cache`` where it is the cache the window follows and it only
        appends keys (:meth:`cache_only_appends`: found once per cache), else None."""
        if cache is None or cache is not self._cache or not self._cache_append_only:
            return None
        return [layer.keys for layer in cache.layers]

    def follow_static_cache(self, cache: Any) -> bool:
        """Whether compiled decoding steps' query rows can be scored later against ``cache``.

        True for a static cache of full-attention layers only (each step's keys stay where they were
        written; sliding-window layers overwrite them). A new cache first has waiting rows scored.
        """
        self._follow(cache)
        return self._cache_static

    def _follow(self, cache: Any) -> None:
        """Take ``cache`` as the one deferred rows are scored against (rows waiting on another first)."""
        if cache is self._cache:
            return
        if self._cache is not None:
            self.flush()
        self._cache = cache
        self._cache_append_only = is_append_only(cache)
        self._cache_static = static_full_layers(cache) is not None

    def held_bytes(self) -> int:
        """Device bytes the waiting steps keep alive: the model's tensors they refer to and their slabs
        (the one steps are copied into counted whole, its free slots too)."""
        slabs = {id(step.slab): step.slab for step in self.waiting if step.slab is not None}
        if self._slab is not None:
            slabs[id(self._slab)] = self._slab
        slab_bytes = tensor_bytes([slab.buffer for slab in slabs.values()])
        return sum(held_bytes(step) for step in self.waiting) + slab_bytes

    def _cache_keys(self) -> list[Tensor]:
        keys = static_keys(self._cache) if self._cache_static else append_only_keys(self._cache)
        if keys is None:
            raise RuntimeError("attention rows were deferred but the cache holds no keys")
        return keys

    def reduce(self) -> None:
        """Reduce the waiting steps in one batch per kind, on the device, without waiting for it.

        The results stay on the device until the next :meth:`flush` moves them to the host. Called
        during the last step (:meth:`~.observer.StepObserver.prepare_finish`), while the device still
        runs that step's forward pass, the reduction is launched before generate() waits for it.
        """
        self._slab = None  # the next window's steps go into a slab of their own
        if not self.waiting:
            return
        waiting, self.waiting, self.waiting_bytes = self.waiting, [], 0
        with torch.no_grad():
            batches = [
                (
                    reduce_raw_steps(
                        group,
                        self.options,
                        sketch=self.sketch,
                        keys=None if group[0].decode_rows is None else self._cache_keys(),
                        attention_budget=self.budget_bytes,
                    ),
                    [(step.attention, step.cross_attention) for step in group],
                )
                for group in _uniform_runs(waiting)
            ]
            if self.shards is not None:
                batches = combine_window(batches, self.shards)
        self._reduced.extend(batches)

    def flush_later(self) -> None:
        """Reduce the waiting steps and start their copy to the host without waiting for it.

        During a generation the window fills in a step whose forward pass the device is still
        running: a copy that waited would hold the host there, and unpacking the arrays after it
        would leave the device idle. The copy runs after the reduction instead, and the next
        :meth:`collect` (the next step) unpacks it, while the device computes that step.
        """
        self.reduce()
        if self._reduced:
            reduced, self._reduced = self._reduced, []
            self._in_flight.append(to_host_later(reduced))

    def collect(self) -> None:
        """Unpack the copies :meth:`flush_later` started (waiting for any still running) into
        :attr:`host_steps`."""
        in_flight, self._in_flight = self._in_flight, []
        for pending in in_flight:
            self._keep(pending.result())

    def flush(self, along: Any = None) -> Any:
        """Reduce the waiting steps (:meth:`reduce`) and move every reduction not yet on the host to
        it in one copy (after those :meth:`flush_later` started).

        ``along``: other device results (tensors in dataclasses, tuples, lists, dicts) moved to the
        host in the same copy; returned with numpy arrays for tensors (None when None).
        """
        self.collect()
        self.reduce()
        if not self._reduced:
            return None if along is None else to_host(along)
        reduced, self._reduced = self._reduced, []
        host_batches, along_host = to_host((reduced, along))
        self._keep(host_batches)
        return along_host

    def _keep(self, host_batches: list[tuple[StepBatch, list[Any]]]) -> None:
        for batch, attention in host_batches:
            self.host_steps.extend(split_host_batch(batch, attention))
            self.host_batches.append(batch)
