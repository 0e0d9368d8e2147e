"""A generation step's statistics, reduced together with the steps around it.

At batch 1 on an accelerator, generation is bound by kernel launches and Python, not arithmetic:
every reduction CoreVital launches per step lands on the critical path however small it is. A
step therefore does almost no work of its own: it copies its logits row and its per-layer hidden
states and pre-MLP residuals side by side, by one kernel, into its slot of its window's
:class:`StepSlab` (a :class:`RawStep`), with a cache that only appends also one copy of its
attention query rows (:mod:`.attention_window`), and
:func:`reduce_raw_steps` reduces up to a window of such steps in one batch of kernels, the same
kernels one step would launch (the statistics are row-wise, so rows of several steps are simply
more rows). The window is bounded by :meth:`~corevital.capture.options.Tuning.deferred_budget`, a
small share of the model's own size, so memory held between steps stays bounded whatever the output
length; a live callback that reads every step as it happens makes it a window of one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from corevital.capture.attention_window import DecodeRows, reduce_decode_rows
from corevital.capture.options import CaptureOptions
from corevital.metrics.hidden import mlp_update_ratio, summarize_hidden
from corevital.metrics.logits import (
    sampling_distribution_stats,
    summarize_logits_keeping_log_probs,
    surprisal_from_log_probs,
    token_surprisal,
)
from corevital.metrics.types import AttentionStats, ChosenTokenStats, HiddenStats, LogitStats

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceStep:
    """One step's statistics for the whole batch (device tensors until moved to the host)."""

    logits: LogitStats
    chosen: ChosenTokenStats
    hidden: HiddenStats | None
    attention: AttentionStats | None
    cross_attention: AttentionStats | None


@dataclass(frozen=True)
class StepSlab:
    """Device memory for a window's steps: each step's logits row and per-layer rows side by side,
    ``[capacity, B, 1, V + rows·width]`` in the model's dtype, one step's slot written by one
    ``torch.cat`` (:meth:`~.step_window.StepWindow.keep_rows`).

    Steps that kept tensors of their own would hold two allocations each until their window is
    reduced (the forward's logits and a copy of the layers' rows); at batch 1 both are small blocks,
    which the device's caching allocator serves from the same segments as the model's own small
    tensors, a window's worth of them held among the blocks every step allocates and frees
    (docs/performance.md, "Host work per generation and per step"). A slab is one allocation for
    the window; its reduction reads the steps' rows as views of it, without stacking them.
    """

    buffer: Tensor  # [capacity, B, 1, vocab + rows * width]
    slots: tuple[Tensor, ...]  # each slot's view, [B, 1, vocab + rows * width], made with the slab
    vocab: int  # V: the logits row's width, first in a slot
    rows: int  # per-layer rows after it: every layer's state (then every pre-MLP residual, ``joined``)
    width: int  # each row's width (the hidden size)

    @property
    def capacity(self) -> int:
        return int(self.buffer.shape[0])

    @property
    def slot_width(self) -> int:
        """A slot's last dimension: the logits row, then the per-layer rows."""
        return self.vocab + self.rows * self.width

    @staticmethod
    def float32_slot_bytes(batch: int, width: int) -> int:
        """Bytes of a slot of ``batch`` rows ``width`` wide, as float32: a step's share of the
        window's batched reduction (:meth:`RawStep.float32_bytes`), known before the slab is made."""
        return 4 * batch * width

    def block(self, start: int, steps: int) -> tuple[Tensor, Tensor]:
        """Slots ``start`` to ``start + steps`` as views: logits rows ``[N, B, V]``, per-layer rows
        ``[N, B, rows, width]``."""
        rows = self.buffer[start : start + steps, :, 0]
        layers = rows[..., self.vocab :]
        return rows[..., : self.vocab], layers.view(*layers.shape[:-1], self.rows, self.width)


@dataclass
class RawStep:
    """A step waiting for :func:`reduce_raw_steps`: its logits row and per-layer rows, copied into its
    slot of its window's :class:`StepSlab` or (where they are not one residual stream, or the
    layers are on several devices) held on their own."""

    # [B, 1, V] or [B, V] raw logits: the forward's own output at a decoding step, a copy of the last
    # position of a longer pass; None where they are in ``slab``
    logits_row: Tensor | None
    # every layer's output at the step's position, [B, L, d]: one copy (not the model's tensors);
    # with ``joined``, [B, 2L, d]: every layer's output, then every layer's pre-MLP residual
    states: Tensor | None
    attention: AttentionStats | None  # already reduced (per step) or None
    cross_attention: AttentionStats | None
    decode_rows: DecodeRows | None = None  # attention rows deferred too (:mod:`.attention_window`)
    # generate()'s input_ids at the step's end, [B, T] with the step's token last; None once the
    # next step's ids hold it too (:meth:`~.step_window.StepWindow.add`): a window reads its
    # steps' tokens from its last step's ids in one slice (:func:`_chosen_tokens`)
    ids: Tensor | None = None
    scores: Tensor | None = None  # [B, V] the distribution sampled from, when it differs from the logits
    mlp_inputs: Tensor | None = None  # every layer's residual before its MLP [B, L, d]
    # (:mod:`.mlp_inputs`), for the MLP update ratio, where it is not in ``states`` (``joined``)
    # ``states`` holds the pre-MLP residuals after the layers' outputs, copied with them by one kernel
    # (a window splits its steps' rows once, not each step its own)
    joined: bool = False
    # the window's slab holding this step's logits row and per-layer rows in slot ``slot`` (then
    # ``logits_row`` and ``states`` are None; ``joined`` says what the rows are)
    slab: StepSlab | None = None
    slot: int = 0

    def float32_bytes(self) -> int:
        """Bytes of this step's logits and hidden-state rows as float32: its share of the batched reduction.

        Deferred attention rows are not counted: :func:`reduce_raw_steps` scores them in pieces of
        consecutive steps that each stay within the window's budget (:meth:`attention_bytes`).
        """
        if self.slab is not None:
            return StepSlab.float32_slot_bytes(self.slab.buffer.shape[1], self.slab.slot_width)
        rows = 0 if self.logits_row is None else self.logits_row.numel()
        if self.states is not None:
            rows += self.states.numel()
        if self.mlp_inputs is not None:
            rows += self.mlp_inputs.numel()
        return 4 * rows

    def attention_bytes(self) -> int:
        """Bytes of this step's deferred attention probabilities in float32 (0: none deferred)."""
        return 0 if self.decode_rows is None else self.decode_rows.float32_bytes()

    def kind(self) -> tuple[bool, bool, bool, bool, bool, bool]:
        """Steps of one kind are reduced in one batch: which optional parts the step has and where."""
        mlp = self.joined or self.mlp_inputs is not None
        own_rows = self.slab is None
        return (
            self.states is None and own_rows,  # no per-layer rows at all
            mlp,
            self.joined,
            self.scores is None,
            self.decode_rows is None,
            own_rows,
        )

    def held_bytes(self) -> int:
        """Bytes of the device tensors the step refers to (views count their base's storage once).

        Not its ids: generate() holds its current input_ids itself, and a window keeps only its
        last step's (:func:`follows`); nor its slab, which is its window's
        (:meth:`~.step_window.StepWindow.held_bytes`).
        """
        held = [] if self.logits_row is None else [self.logits_row]
        if self.states is not None:
            held.append(self.states)
        if self.mlp_inputs is not None:
            held.append(self.mlp_inputs)
        if self.decode_rows is not None:
            held.append(self.decode_rows.queries)
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
        return sum(storages.values())


@dataclass(frozen=True)
class StepBatch:
    """Statistics of N deferred steps, every field with the step as its leading axis."""

    logits: LogitStats  # fields [N, B, ...]
    chosen: ChosenTokenStats  # fields [N, B]
    hidden: HiddenStats | None  # fields [N, L, B, ...]; None when no step had hidden states
    attention: AttentionStats | None  # fields [N, L, B, ...] of deferred attention rows, else None
    steps: int


def reduce_raw_steps(
    raw: Sequence[RawStep],
    options: CaptureOptions,
    *,
    sketch: Tensor | None,
    keys: Sequence[Tensor] | None = None,
    attention_budget: int | None = None,
) -> StepBatch:
    """The statistics of ``raw`` steps of one :meth:`RawStep.kind` (tokens chosen), in one batch.

    ``keys``: the cache's keys of every layer now, needed when the steps deferred attention rows.
    ``attention_budget``: the largest float32 size of the attention probabilities scored at once
    (None: every step's at once); the rows of more steps are scored in pieces of consecutive steps,
    so a window need not close early because its attention rows are large (batch 8, long caches).
    """
    n = len(raw)
    stacked, rows = _window_rows(raw)  # [N, B, V], [N, B, L or 2L, d] or None
    batch = stacked.shape[1]
    logits_rows = stacked.reshape(n * batch, stacked.shape[-1])  # [N·B, V]: a view
    tokens = _chosen_tokens(raw, logits_rows.device)  # [N·B]
    logits, log_probs = summarize_logits_keeping_log_probs(
        logits_rows, topk=options.topk, mass_k=options.topk_mass_k, entropy_mode=options.entropy_mode
    )
    if log_probs is not None:
        surprisal = surprisal_from_log_probs(log_probs, tokens)
    else:
        surprisal = token_surprisal(logits_rows, logits.log_normalizer, tokens)
    sampling_entropy = sampling_prob = None
    if raw[0].scores is not None:
        scores = torch.stack([_given(step.scores, "sampling scores") for step in raw]).flatten(0, 1)
        sampling_entropy, sampling_prob = sampling_distribution_stats(scores, tokens)
    chosen = ChosenTokenStats(tokens, surprisal, sampling_entropy, sampling_prob)
    hidden = None
    first = raw[0]
    if rows is not None:
        layers = rows.shape[2] // 2 if first.joined else rows.shape[2]
        # [N·L, B, d] in one copy: every step's layers as rows of one reduction
        states = _step_layer_rows(rows[:, :, :layers] if first.joined else rows)
        inputs = _step_layer_rows(rows[:, :, layers:]) if first.joined else None
        stats = summarize_hidden(
            states, clip_value=options.hidden_clip_value, sketch_matrix=sketch, layers=layers
        )
        if inputs is None and first.mlp_inputs is not None and first.mlp_inputs.shape[1] == layers:
            residuals = [_given(step.mlp_inputs, "pre-MLP residuals") for step in raw]
            inputs = _step_layer_rows(torch.stack(residuals))
        if inputs is not None:
            stats = replace(stats, mlp_update_ratio=mlp_update_ratio(states, inputs, layers))
        hidden = _leading(stats, (n, layers))
    attention = None
    if raw[0].decode_rows is not None:
        if keys is None:
            raise RuntimeError("deferred attention rows need the cache's keys")
        pieces = [
            reduce_decode_rows(
                [_given(step.decode_rows, "deferred attention rows") for step in piece], keys, options.tuning
            )
            for piece in _pieces(raw, attention_budget)
        ]
        attention = pieces[0] if len(pieces) == 1 else _steps_joined(pieces)
    return StepBatch(_leading(logits, (n, batch)), _leading(chosen, (n, batch)), hidden, attention, n)


def _window_rows(raw: Sequence[RawStep]) -> tuple[Tensor, Tensor | None]:
    """The steps' logits rows ``[N, B, V]`` and per-layer rows ``[N, B, L or 2L, d]`` (None where the
    steps have none): views of their slab where they fill consecutive slots of one, else stacked."""
    first = raw[0]
    if first.slab is not None:
        slab = first.slab
        if all(step.slab is slab and step.slot == first.slot + i for i, step in enumerate(raw)):
            return slab.block(first.slot, len(raw))
        parts = [_given(step.slab, "a slab").block(step.slot, 1) for step in raw]
        return torch.cat([logits for logits, _ in parts]), torch.cat([rows for _, rows in parts])
    stacked = torch.stack(
        [_given(step.logits_row, "logits rows") for step in raw]
    )  # [N, B, 1, V] or [N, B, V]
    logits = stacked.view(len(raw), stacked.shape[1], stacked.shape[-1])
    if first.states is None:
        return logits, None
    # [N, B, L, d] (or [N, B, 2L, d], the pre-MLP residuals after the states) in one copy
    return logits, torch.stack([_given(step.states, "per-layer hidden states") for step in raw])


def _pieces(raw: Sequence[RawStep], budget: int | None) -> list[Sequence[RawStep]]:
    """``raw`` cut into runs of consecutive steps whose attention probabilities fit ``budget``.

    A run holds one step at least, however large its rows.
    """
    if budget is None:
        return [raw]
    pieces: list[Sequence[RawStep]] = []
    start, used = 0, 0
    for index, step in enumerate(raw):
        size = step.attention_bytes()
        if index > start and used + size > budget:
            pieces.append(raw[start:index])
            start, used = index, 0
        used += size
    pieces.append(raw[start:])
    return pieces


def _steps_joined(pieces: Sequence[AttentionStats]) -> AttentionStats:
    """Attention statistics of consecutive pieces of steps (fields [n, ...] each) as one ([N, ...])."""
    values = {f.name: torch.cat([getattr(piece, f.name) for piece in pieces]) for f in fields(AttentionStats)}
    return AttentionStats(**values)


def split_host_batch(batch: StepBatch, attention: Sequence[tuple[Any, Any]]) -> list[DeviceStep]:
    """The per-step records of a batch moved to the host (numpy fields; ``attention`` per step)."""
    logits, chosen = _steps_of(batch.logits), _steps_of(batch.chosen)
    hidden = None if batch.hidden is None else _steps_of(batch.hidden)
    deferred = None if batch.attention is None else _steps_of(batch.attention)
    return [
        DeviceStep(
            logits=logits(i),
            chosen=chosen(i),
            hidden=None if hidden is None else hidden(i),
            attention=attention[i][0] if deferred is None else deferred(i),
            cross_attention=attention[i][1],
        )
        for i in range(batch.steps)
    ]


def _chosen_tokens(raw: Sequence[RawStep], device: torch.device) -> Tensor:
    """The tokens ``raw`` steps chose, step-major ([N·B]) on ``device``.

    A step without ids has its token in the ids of the next step that has them, one column from
    the end per step between: consecutive steps of one generation are the last N columns of the
    last step's ids, one slice for the window instead of one per step.
    """
    parts: list[Tensor] = []
    start = 0
    for index, step in enumerate(raw):
        if step.ids is not None:
            parts.append(step.ids[:, step.ids.shape[1] - (index + 1 - start) :])  # [B, steps start..index]
            start = index + 1
    if start != len(raw):
        raise RuntimeError("a deferred step was reduced before its token was chosen")
    ids = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return ids.transpose(0, 1).reshape(-1).to(device)


def follows(step: RawStep, previous: RawStep) -> bool:
    """Whether ``step``'s ids hold ``previous``'s token, one column before its own (the usual
    decoding step: generate() appends one token), in a window that reduces both together."""
    return (
        step.ids is not None
        and previous.ids is not None
        and step.ids.shape[1] == previous.ids.shape[1] + 1
        and step.kind() == previous.kind()
    )


def _given(value: T | None, missing: str) -> T:
    """``value``, which every step of a batch holds when its first does; a RuntimeError naming what
    is ``missing`` where one does not."""
    if value is None:
        raise RuntimeError(f"a batch of steps mixes steps with and without {missing}")
    return value


def _step_layer_rows(stacked: Tensor) -> Tensor:
    """Steps' rows [N, B, L, d] as [N·L, B, d], step-major: one copy."""
    n, batch, layers = stacked.shape[:3]
    return stacked.permute(0, 2, 1, 3).reshape(n * layers, batch, -1)


def _leading(stats: T, shape: tuple[int, int]) -> T:
    """``stats`` with each tensor's flattened leading axis split into ``shape`` (views)."""
    values = {}
    for f in fields(stats):  # type: ignore[arg-type]
        value = getattr(stats, f.name)
        values[f.name] = None if value is None else value.unflatten(0, shape)
    return type(stats)(**values)


def _steps_of(stats: T) -> Callable[[int], T]:
    """Step ``i`` of host-side ``stats`` whose fields have the step as leading axis (numpy views),
    the fields read once for every step."""
    cls = type(stats)
    values = ((f.name, getattr(stats, f.name)) for f in fields(stats))  # type: ignore[arg-type]
    arrays = {name: None if value is None else np.asarray(value) for name, value in values}

    def step(i: int) -> T:
        return cls(**{name: None if value is None else value[i] for name, value in arrays.items()})

    return step
