"""The attention rows of one forward pass, with the masks they were computed under.

A :class:`RowBuffer` lives for one forward pass of the model (:class:`~.attention_tap.AttentionTap`
makes a new one when a pass begins and drops it when the step's rows are taken). Each layer leaves
its observed rows in it: finished probabilities (eager path), what the fast path needs to compute
them later (:class:`~.attention_rows.PendingRows`), or a decoding step's bare query row (deferred
to the window's reduction, :mod:`.attention_window`). The buffer holds every mask and position
bias it is shown, as a :class:`MaskEntry` found by identity, so what is derived from a mask (its
SDPA layout, the keys it leaves visible, whether it hides anything) is computed once per pass
however many layers use it (usually one mask; two for models mixing full and sliding-window layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

from corevital.capture.attention_rows import PendingRows, finish_group, sdpa_aligned
from corevital.capture.attention_window import DecodeRows
from corevital.capture.options import Tuning
from corevital.capture.registry import SiteKind

LAST_ROW = slice(-1, None)
_UNSET = object()


def visible_keys(
    mask: Tensor | None, rows: slice, batch: int, q_len: int, kv_len: int, device: torch.device
) -> Tensor:
    """Boolean [B, R, K] of the keys each observed query row may attend to, from the model's mask."""
    n_rows = len(range(q_len)[rows])
    if mask is None:
        return torch.ones(batch, n_rows, kv_len, dtype=torch.bool, device=device)
    m = mask[:, 0, rows, :kv_len]
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    return m.expand(batch, n_rows, kv_len)


class MaskEntry:
    """One mask (or position bias) seen in this pass, and what was derived from it.

    Compared by identity: the entry holds its tensor, so two entries never stand for one tensor.
    ``decode`` marks a plain decoding step's mask built by CoreVital (:mod:`.decode_mask`), with
    the padding it came from; ``hides_nothing`` one of those that hides no key (or no mask at all).
    ``sdpa_skips`` marks a mask that SDPA, under transformers' own rule, takes as its ``is_causal``
    flag instead of a tensor (a prompt pass without padding): the statistics still read the tensor.
    """

    __slots__ = ("tensor", "decode", "padding", "hides_nothing", "sdpa_skips", "_aligned")

    def __init__(
        self,
        tensor: Tensor | None,
        *,
        decode: bool = False,
        padding: Tensor | None = None,
        sdpa_skips: bool = False,
    ) -> None:
        self.tensor = tensor
        self.decode = decode
        self.padding = padding
        self.hides_nothing = tensor is None or (decode and padding is None)
        self.sdpa_skips = sdpa_skips
        self._aligned: object = _UNSET

    def for_sdpa(self) -> Tensor | None:
        """The mask as SDPA takes it without a per-layer copy (aligned once per pass, on CUDA).

        A mask that hides nothing, or one SDPA gets as ``is_causal`` in plain generation
        (``sdpa_skips``), is not passed at all: that is how SDPA gets it without CoreVital, and
        without a mask it may choose its fastest kernel (flash attention).
        """
        if self.hides_nothing or self.sdpa_skips:
            return None
        if self._aligned is _UNSET:
            self._aligned = sdpa_aligned(self.tensor)
        return cast(Tensor | None, self._aligned)


# A layer's key visibility: the mask it used (the entry of None when it hides nothing) and its keys.
VisibleKey = tuple[MaskEntry, int]


@dataclass
class _Rows:
    """The observed rows each layer of one kind (self, cross) reported in this pass."""

    per_layer: dict[int, Tensor] = field(default_factory=dict)  # finished [B, R, H, K] (eager path)
    pending: dict[int, PendingRows] = field(default_factory=dict)  # to finish together (fast path)
    layer_mask: dict[int, VisibleKey] = field(default_factory=dict)

    def stacked(self, tuning: Tuning) -> Tensor:
        """Every layer's observed probabilities, [L, B, R, H, K] in layer order.

        Pending layers are finished group by group (one group, a few kernels, for a usual decoder);
        layers that see fewer keys (sliding windows) are padded with zero weights.
        """
        finished = dict(self.per_layer)
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, pending in self.pending.items():
            groups.setdefault(pending.group, []).append(index)
        for members in groups.values():
            members.sort()
            probs = finish_group([self.pending[i] for i in members], tuning)
            probs = probs.transpose(2, 3)  # [n, B, R, H, K]
            if len(groups) == 1 and not finished:
                return probs
            finished.update(zip(members, probs.unbind(0), strict=True))
        ordered = [finished[index] for index in sorted(finished)]
        kv_len = max(t.shape[-1] for t in ordered)
        if any(t.shape[-1] != kv_len for t in ordered):
            ordered = [torch.nn.functional.pad(t, (0, kv_len - t.shape[-1])) for t in ordered]
        return torch.stack(ordered)


class DecodeRowsBuffer:
    """Each layer's decoding-step query row of this pass, kept for the window's reduction.

    ``check_layout``: whether :meth:`keep` compares every layer's shapes, dtype and device with the
    first layer's (they may wait together only where they agree). Each layer's are constants of the
    model's generation (the batch, the layer's heads and head size; every layer's keys grow by one
    position a step), so the tap checks them at one step of a generation and not again; every step
    still compares each layer's mask and scale (:meth:`~.attention_tap.AttentionTap.take_decode_rows`).
    """

    def __init__(self, layers: int, *, check_layout: bool = True) -> None:
        # per layer: (query [B, Hq, 1, D], key [B, Hkv, K, D], mask, scale)
        self.rows: list[tuple[Tensor, Tensor, MaskEntry, float] | None] = [None] * layers
        self.count = 0
        self.check_layout = check_layout
        self._signature: tuple[object, ...] | None = None  # what every layer must share
        self.uniform = True

    def keep(self, layer: int, query: Tensor, key: Tensor, mask: MaskEntry, scale: float) -> None:
        # Layers spread over several devices (device_map) are not scored together: per step then.
        if self.check_layout:
            signature: tuple[object, ...] = (scale, mask, query.shape, key.shape, key.dtype, key.device)
        else:
            signature = (scale, mask)
        if self._signature is None:
            self._signature = signature
        elif signature != self._signature:
            self.uniform = False
        self.rows[layer] = (query, key, mask, scale)
        self.count += 1

    def keys_are(self, keys: list[Tensor] | None) -> bool:
        """Whether every layer's row was scored over the given key tensors (the very same objects)."""
        return (
            keys is not None
            and len(keys) == len(self.rows)
            and all(row is not None and row[1] is key for row, key in zip(self.rows, keys, strict=True))
        )

    def window_rows(self) -> DecodeRows:
        """Every layer's rows as one :class:`DecodeRows` (all layers kept theirs, uniformly): the
        query rows copied side by side (one kernel), so the step holds none of the model's tensors
        (see :meth:`corevital.capture.step_window.StepWindow.keep_rows`)."""
        entries = cast(list[tuple[Tensor, Tensor, MaskEntry, float]], self.rows)
        _, key, mask, scale = entries[0]
        queries = torch.cat([entry[0] for entry in entries], dim=2).transpose(1, 2)  # [B, L, Hq, D]
        return DecodeRows(queries, key_length=key.shape[2], padding=mask.padding, scale=scale)


class RowBuffer:
    """The rows one forward pass observed, by site kind, and the masks they used."""

    def __init__(self, rows: slice, decode_layers: int, *, check_layout: bool = True) -> None:
        self.rows = rows  # which query rows are observed
        self._masks: list[MaskEntry] = []
        self._none = MaskEntry(None)
        self._kinds: dict[SiteKind, _Rows] = {}
        self._visible_args: dict[VisibleKey, tuple[int, int, torch.device]] = {}
        self._visible: dict[VisibleKey, Tensor] = {}
        self.decode = DecodeRowsBuffer(decode_layers, check_layout=check_layout)

    @property
    def used(self) -> bool:
        """Whether the pass left anything here (an unused buffer serves the next pass as it is)."""
        return bool(self._masks or self._kinds or self.decode.count)

    # --- masks ---------------------------------------------------------------------------------
    def mask(self, tensor: Tensor | None) -> MaskEntry:
        """The entry of ``tensor`` (made, and the tensor held, on first sight in this pass)."""
        if tensor is None:
            return self._none
        for entry in self._masks:
            if entry.tensor is tensor:
                return entry
        entry = MaskEntry(tensor)
        self._masks.append(entry)
        return entry

    def add_sdpa_skipped_mask(self, tensor: Tensor) -> None:
        """A mask the model's SDPA would take as ``is_causal`` (no tensor) in plain generation."""
        self._masks.append(MaskEntry(tensor, sdpa_skips=True))

    def add_decode_mask(self, tensor: Tensor, padding: Tensor | None) -> None:
        """A plain decoding step's mask built from ``padding`` (None: it hides no key)."""
        self._masks.append(MaskEntry(tensor, decode=True, padding=padding))

    def visible_key(
        self, mask: MaskEntry, batch: int, q_len: int, kv_len: int, device: torch.device
    ) -> VisibleKey:
        """The key of this mask's visibility; computed only when asked for (:meth:`visible`)."""
        key = (self._none if mask.hides_nothing else mask, kv_len)
        if key not in self._visible_args:
            self._visible_args[key] = (batch, q_len, device)
        return key

    def visible(self, key: VisibleKey) -> Tensor:
        found = self._visible.get(key)
        if found is None:
            batch, q_len, device = self._visible_args[key]
            found = visible_keys(key[0].tensor, self.rows, batch, q_len, key[1], device)
            self._visible[key] = found
        return found

    # --- rows ----------------------------------------------------------------------------------
    def _of(self, kind: SiteKind) -> _Rows:
        rows = self._kinds.get(kind)
        if rows is None:
            rows = self._kinds[kind] = _Rows()
        return rows

    def seen(self, kind: SiteKind) -> int:
        """How many layers of ``kind`` left rows in this pass (decoding-step rows included)."""
        rows = self._kinds.get(kind)
        layers = 0 if rows is None else len(rows.per_layer.keys() | rows.pending.keys())
        if kind is SiteKind.SELF and self.decode.count:
            layers += sum(row is not None for row in self.decode.rows)
        return layers

    def add_finished(self, kind: SiteKind, layer: int, weights: Tensor, key: VisibleKey) -> None:
        """Finished probabilities [B, H, R, K] of the observed rows."""
        rows = self._of(kind)
        rows.per_layer[layer] = weights.transpose(1, 2)  # [B, R, H, K]
        rows.layer_mask[layer] = key

    def add_pending(
        self,
        kind: SiteKind,
        layer: int,
        query: Tensor,
        key: Tensor,
        mask: MaskEntry,
        bias: Tensor | None,
        scale: float,
    ) -> None:
        """A layer's query rows and keys, its probabilities computed with its group's (fast path)."""
        batch, q_heads, q_len, _ = query.shape
        visible = self.visible_key(mask, batch, q_len, key.shape[2], query.device)
        bias_entry = None if bias is None else self.mask(bias)  # held until the pass ends
        every_row = q_len == 1 and self.rows == LAST_ROW  # slicing would change nothing
        mask_rows = None
        if not mask.hides_nothing:
            assert mask.tensor is not None
            mask_rows = mask.tensor if every_row else mask.tensor[:, :, self.rows]
        rows = self._of(kind)
        rows.pending[layer] = PendingRows(
            query=query if every_row else query[:, :, self.rows],
            key=key,
            mask=mask_rows,
            position_bias=bias if bias is None or every_row else bias[:, :, self.rows],
            scale=scale,
            group=(mask, bias_entry, scale, q_heads, *key.shape, key.dtype),
        )
        rows.layer_mask[layer] = visible

    def collected(self, kind: SiteKind, tuning: Tuning) -> tuple[Tensor, Tensor | None] | None:
        """(weights [L, B, R, H, K], visible [L or 1, B, R, K]) of every layer of ``kind``.

        ``visible`` is None when no layer had a mask: every key was visible.
        """
        rows = self._kinds.get(kind)
        if rows is None:
            return None
        weights = rows.stacked(tuning)
        kv_len = weights.shape[-1]
        keys = set(rows.layer_mask.values())
        if len(keys) == 1:
            (only,) = keys
            if only[0] is self._none and only[1] == kv_len:
                return weights, None
            return weights, self.visible(only).unsqueeze(0)  # the same for every layer
        layers, batch, count = weights.shape[:3]
        visible = torch.zeros(layers, batch, count, kv_len, dtype=torch.bool, device=weights.device)
        for key in keys:  # one pass per distinct mask
            row = self.visible(key)
            which = [index for index, used in rows.layer_mask.items() if used == key]
            visible[which, ..., : row.shape[-1]] = row
        return weights, visible

    def held_tensors(self) -> list[Tensor]:
        """The tensors the buffer keeps alive of its own (keys and masks are the model's)."""
        held = [t for rows in self._kinds.values() for t in rows.per_layer.values()]
        held += [p.query for rows in self._kinds.values() for p in rows.pending.values()]
        return held + list(self._visible.values())
