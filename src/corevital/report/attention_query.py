"""Questions about how the model read its prompt, answered from a report's sparse attention.

``prompt_analysis.layers[l].heads[h]`` holds, per layer and head, the strongest (query, key, weight)
entries of the prompt's attention (at most a fixed number per head, above a threshold; see
``docs/metrics.md`` §5), with indices into the prompt's tokens. :class:`AttentionQuery` indexes all
of them once (numpy, no torch) and answers:

* :meth:`~AttentionQuery.to_token`: which queries attend to a key token;
* :meth:`~AttentionQuery.from_token`: which keys a query token attends to;
* :meth:`~AttentionQuery.top_connections`: the strongest entries overall, or of a layer or head;
* :meth:`~AttentionQuery.heads_attending_to_range`: heads that concentrate on a span of keys (for
  example a retrieved RAG context);
* :meth:`~AttentionQuery.basin_anomalies`: heads whose basin score says they skip the middle.

Only the stored entries are known: weights below the threshold, and those beyond a head's cap, are
not in the report, so every mass here is a mass of the stored entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corevital.report.schema import PromptAnalysis

__all__ = [
    "AttentionQuery",
    "BasinAnomaly",
    "Connection",
    "HeadRangeAttention",
]

DEFAULT_BASIN_THRESHOLD = 0.3
DEFAULT_RANGE_MIN_MASS = 0.5


@dataclass(frozen=True)
class Connection:
    """One stored attention entry: in ``layer``, ``head``, query token attends to key token."""

    layer: int
    head: int
    query_index: int
    key_index: int
    weight: float
    query_text: str | None  # None when the token texts were not given or do not reach the index
    key_text: str | None


@dataclass(frozen=True)
class HeadRangeAttention:
    """How much of one head's stored attention lands on keys in ``[start, end)``."""

    layer: int
    head: int
    mass: float  # range_weight / total_weight, in [0, 1]
    range_weight: float  # sum of the head's stored weights whose key is in the range
    total_weight: float  # sum of all the head's stored weights
    connections: int  # stored entries whose key is in the range


@dataclass(frozen=True)
class BasinAnomaly:
    """A head whose basin score (middle-third mass over edge mass) is below the threshold."""

    layer: int
    head: int
    score: float


class AttentionQuery:
    """An index over the sparse prompt attention of one report.

    ``token_texts`` are the prompt's token strings, in order (``token_texts[i]`` is token ``i``,
    the index the report's entries use); without them the ``*_text`` fields are None. Entries whose
    weight is missing (null in JSON) are skipped. Raises ValueError when a head's three arrays
    differ in length.
    """

    def __init__(self, prompt_analysis: PromptAnalysis, token_texts: Sequence[str] | None = None) -> None:
        self._texts: tuple[str, ...] | None = tuple(token_texts) if token_texts is not None else None
        layers: list[np.ndarray] = []
        heads: list[np.ndarray] = []
        queries: list[np.ndarray] = []
        keys: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        self._num_heads: list[int] = []
        self._basin: list[list[float]] = []
        for layer_index, layer in enumerate(prompt_analysis.layers):
            self._num_heads.append(len(layer.heads))
            self._basin.append([math.nan if s is None else float(s) for s in (layer.basin_scores or [])])
            for head_index, head in enumerate(layer.heads):
                n = len(head.weights)
                if len(head.query_indices) != n or len(head.key_indices) != n:
                    raise ValueError(
                        f"layer {layer_index} head {head_index}: query_indices, key_indices and weights "
                        f"have lengths {len(head.query_indices)}, {len(head.key_indices)}, {n}"
                    )
                layers.append(np.full(n, layer_index, dtype=np.int64))
                heads.append(np.full(n, head_index, dtype=np.int64))
                queries.append(np.asarray(head.query_indices, dtype=np.int64))
                keys.append(np.asarray(head.key_indices, dtype=np.int64))
                weights.append(
                    np.array([math.nan if w is None else w for w in head.weights], dtype=np.float64)
                )
        w = _concat(weights, np.float64)
        keep = np.isfinite(w)
        self._layer = _concat(layers, np.int64)[keep]
        self._head = _concat(heads, np.int64)[keep]
        self._query = _concat(queries, np.int64)[keep]
        self._key = _concat(keys, np.int64)[keep]
        self._weight = w[keep]

    @property
    def num_layers(self) -> int:
        return len(self._num_heads)

    def num_heads(self, layer: int) -> int:
        self._check_layer(layer)
        return self._num_heads[layer]

    def __len__(self) -> int:
        """Number of stored (finite) entries over all layers and heads."""
        return int(self._weight.size)

    # ------------------------------------------------------------------ entries

    def to_token(
        self, index: int, *, layer: int | None = None, head: int | None = None, min_weight: float = 0.0
    ) -> list[Connection]:
        """Entries whose key is token ``index``: who attends to it. Heaviest first."""
        self._check_token(index)
        return self._connections(self._where(layer, head, min_weight) & (self._key == index))

    def from_token(
        self, index: int, *, layer: int | None = None, head: int | None = None, min_weight: float = 0.0
    ) -> list[Connection]:
        """Entries whose query is token ``index``: what it attends to. Heaviest first."""
        self._check_token(index)
        return self._connections(self._where(layer, head, min_weight) & (self._query == index))

    def top_connections(
        self, n: int = 10, *, layer: int | None = None, head: int | None = None
    ) -> list[Connection]:
        """The ``n`` heaviest entries (of one layer and/or head when given)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        return self._connections(self._where(layer, head, 0.0), limit=n)

    # ------------------------------------------------------------------ heads

    def heads_attending_to_range(
        self,
        start: int,
        end: int,
        *,
        min_mass: float = DEFAULT_RANGE_MIN_MASS,
        layer: int | None = None,
    ) -> list[HeadRangeAttention]:
        """Heads whose stored attention lands mostly on keys in ``[start, end)`` (end exclusive).

        A head's ``mass`` is the share of its stored weight whose key lies in the range; heads with
        ``mass >= min_mass`` (and some weight in the range) are returned, largest mass first. For a
        RAG prompt whose first ``n`` tokens are the retrieved context, ``(0, n)`` finds the heads that
        read it; compare with the range's share of the prompt to judge what is "mostly".
        """
        if start < 0 or end < start:
            raise ValueError(f"need 0 <= start <= end, got [{start}, {end})")
        sel = self._where(layer, None, 0.0)
        lh = self._layer[sel] * self._max_heads() + self._head[sel]
        w = self._weight[sel]
        in_range = (self._key[sel] >= start) & (self._key[sel] < end)
        size = self.num_layers * self._max_heads()
        total = np.bincount(lh, weights=w, minlength=size)
        ranged = np.bincount(lh, weights=np.where(in_range, w, 0.0), minlength=size)
        count = np.bincount(lh, weights=in_range.astype(np.float64), minlength=size)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(total > 0, ranged / total, 0.0)
        hits = np.flatnonzero((ranged > 0) & (share >= min_mass))
        order = sorted(hits.tolist(), key=lambda i: (-share[i], i))
        heads = self._max_heads()
        return [
            HeadRangeAttention(
                layer=i // heads,
                head=i % heads,
                mass=float(share[i]),
                range_weight=float(ranged[i]),
                total_weight=float(total[i]),
                connections=int(count[i]),
            )
            for i in order
        ]

    def basin_anomalies(self, threshold: float = DEFAULT_BASIN_THRESHOLD) -> list[BasinAnomaly]:
        """Heads with a basin score below ``threshold`` (they skip the middle), lowest first.

        Heads without a score (null: prompt shorter than 3 tokens, or non-finite) are not anomalies.
        """
        found = [
            BasinAnomaly(layer=layer, head=head, score=score)
            for layer, scores in enumerate(self._basin)
            for head, score in enumerate(scores)
            if math.isfinite(score) and score < threshold
        ]
        return sorted(found, key=lambda a: (a.score, a.layer, a.head))

    # ------------------------------------------------------------------ helpers

    def _max_heads(self) -> int:
        return max(self._num_heads, default=0) or 1

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} out of range: the report has {self.num_layers} layers")

    def _check_token(self, index: int) -> None:
        if index < 0:
            raise ValueError(f"token index must be >= 0, got {index}")

    def _where(self, layer: int | None, head: int | None, min_weight: float) -> np.ndarray:
        sel: np.ndarray = self._weight >= min_weight
        if layer is not None:
            self._check_layer(layer)
            sel &= self._layer == layer
            if head is not None and not 0 <= head < self._num_heads[layer]:
                raise ValueError(f"head {head} out of range: layer {layer} has {self._num_heads[layer]}")
        if head is not None:
            if head < 0 or head >= self._max_heads():
                raise ValueError(f"head {head} out of range")
            sel &= self._head == head
        return sel

    def _connections(self, sel: np.ndarray, limit: int | None = None) -> list[Connection]:
        idx = np.flatnonzero(sel)
        # Heaviest first; ties by layer, head, query, key (lexsort's last key is the primary one).
        order = idx[
            np.lexsort(
                (self._key[idx], self._query[idx], self._head[idx], self._layer[idx], -self._weight[idx])
            )
        ]
        if limit is not None:
            order = order[:limit]
        return [
            Connection(
                layer=int(self._layer[i]),
                head=int(self._head[i]),
                query_index=int(self._query[i]),
                key_index=int(self._key[i]),
                weight=float(self._weight[i]),
                query_text=self._text(int(self._query[i])),
                key_text=self._text(int(self._key[i])),
            )
            for i in order
        ]

    def _text(self, index: int) -> str | None:
        if self._texts is not None and 0 <= index < len(self._texts):
            return self._texts[index]
        return None


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)
