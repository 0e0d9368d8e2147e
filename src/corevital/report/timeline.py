"""The per-step and per-layer part of a report (``timeline``, ``encoder_layers``), built column-wise.

A full report of a 32-layer model holds tens of thousands of layer summaries. Each statistic is
converted once, for all steps and layers together, into a flat Python list (rounded floats, None
for non-finite values, see :mod:`corevital.report.numbers`), and each kind of model is assembled
from one such column per field (:mod:`corevital.report.columns`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from corevital.capture.records import SequenceCapture
from corevital.report.columns import Columns, M, construct_rows
from corevital.report.numbers import as_list
from corevital.report.schema import (
    Anomalies,
    AttentionSummary,
    HiddenSummary,
    LayerSummary,
    LogitsSummary,
    TimelineStep,
    TokenInfo,
    TopKProb,
)

# HiddenSummary field <- HiddenStats attribute
_HIDDEN_FLOATS = {"mean": "mean", "std": "std", "l2_norm_mean": "l2_norm", "max_abs": "max_abs"}
_CLIP_FLOATS = ("clip_fraction", "clip_max_before")  # written only where the layer was clipped
_ATTENTION_COUNTS = ("collapsed_head_count", "focused_head_count")
_ATTENTION_VECTORS = ("max_weight_per_head",)


def timeline(seq: SequenceCapture, prompt_tokens: int, layers_kept: bool) -> list[TimelineStep]:
    """One :class:`TimelineStep` per generated token; layer detail only when ``layers_kept``."""
    steps = seq.num_steps
    ids = seq.generated_token_ids
    tokens: Columns = {
        "token_id": ids,
        "token_text": [seq.token_texts.get(i, "") for i in ids],
        "is_prompt_token": [False] * steps,
    }
    columns: Columns = {
        "step_index": list(range(prompt_tokens, prompt_tokens + steps)),
        "token": construct_rows(TokenInfo, tokens),
        "logits_summary": logits_summaries(seq),
        "layers": step_layers(seq) if layers_kept else [[] for _ in range(steps)],
        "extensions": [{} for _ in range(steps)],
    }
    return construct_rows(TimelineStep, columns)


def logits_summaries(seq: SequenceCapture) -> list[LogitsSummary]:
    """Each step's :class:`LogitsSummary`."""
    steps = seq.num_steps
    if steps == 0:
        return []
    lg, chosen = seq.logits, seq.chosen
    entropy = _floats(lg.entropy, 1)
    sampled = chosen.sampling_entropy is not None
    columns: Columns = {
        "entropy": entropy,
        # 2 ** the written (rounded) entropy, as a reader of the report would compute it
        "perplexity": as_list([np.nan if e is None else 2.0**e for e in entropy]),
        "surprisal": _floats(chosen.surprisal, 1),
        "top_k_margin": _floats(lg.top_k_margin, 1),
        "topk_mass": _floats(lg.topk_mass, 1),
        "topk_probs": _topk_probs(seq),
        "sampling_entropy": _floats(chosen.sampling_entropy, 1) if sampled else [None] * steps,
        "sampling_prob": _floats(chosen.sampling_prob, 1) if sampled else [None] * steps,
        "has_nan": [flag or None for flag in _flags(lg.has_nan, 1)],
        "has_inf": [flag or None for flag in _flags(lg.has_inf, 1)],
        # the logprobs capture's entropy bounds (capture/logprobs.py); other captures have none
        "entropy_lower": _optional(lg, "entropy_lower", steps),
        "entropy_upper": _optional(lg, "entropy_upper", steps),
        "remaining_mass": _optional(lg, "remaining_mass", steps),
    }
    return construct_rows(LogitsSummary, columns)


def _optional(stats: Any, name: str, steps: int) -> list[float | None]:
    values = getattr(stats, name, None)
    return [None] * steps if values is None else _floats(values, 1)


def _topk_probs(seq: SequenceCapture) -> list[list[TopKProb]]:
    ids = np.asarray(seq.logits.topk_ids).astype(np.int64)
    k = ids.shape[1]
    flat_ids = ids.reshape(-1).tolist()
    columns: Columns = {
        "token_id": flat_ids,
        "token_text": [seq.token_texts.get(i, "") for i in flat_ids],
        "prob": _floats(seq.logits.topk_probs, 2),
    }
    return _chunks(construct_rows(TopKProb, columns), k, seq.num_steps)


def step_layers(seq: SequenceCapture) -> list[list[LayerSummary]]:
    """Each step's decoder :class:`LayerSummary` list (requires hidden-state summaries)."""
    assert seq.hidden is not None, "layers are only built when hidden-state summaries exist"
    layers = np.asarray(seq.hidden.mean).shape[1]
    flat = _layer_summaries(seq.hidden, seq.attention, seq.cross_attention, lead=2, layers=layers)
    return _chunks(flat, layers, seq.num_steps)


def encoder_layers(seq: SequenceCapture) -> list[LayerSummary] | None:
    """The encoder's :class:`LayerSummary` list (encoder-decoder models), or None."""
    if seq.encoder_hidden is None:
        return None
    layers = np.asarray(seq.encoder_hidden.mean).shape[0]
    return _layer_summaries(seq.encoder_hidden, seq.encoder_attention, None, lead=1, layers=layers)


def _layer_summaries(
    hidden: Any, attention: Any | None, cross: Any | None, *, lead: int, layers: int
) -> list[LayerSummary]:
    """Layer summaries over the ``lead`` leading axes of the stats arrays, merged, layer fastest."""
    hiddens = _hidden_summaries(hidden, lead)
    count = len(hiddens)
    columns: Columns = {
        "layer_index": [i % layers for i in range(count)],
        "hidden_summary": hiddens,
        "attention_summary": _attention_summaries(attention, lead)
        if attention is not None
        else [AttentionSummary() for _ in range(count)],
        "cross_attention": _attention_summaries(cross, lead) if cross is not None else [None] * count,
        "anomalies": _anomalies(hidden, attention, lead),
        "extensions": [{} for _ in range(count)],
    }
    return construct_rows(LayerSummary, columns)


def _hidden_summaries(h: Any, lead: int) -> list[HiddenSummary]:
    clipped = _flat(h.clipped, lead).astype(bool)
    columns: Columns = {field: _floats(getattr(h, name), lead) for field, name in _HIDDEN_FLOATS.items()}
    columns["sketch"] = _vectors(getattr(h, "sketch", None), lead, len(clipped))
    columns["clipped"] = clipped.tolist()
    for name in _CLIP_FLOATS:
        columns[name] = as_list(np.where(clipped, _flat(getattr(h, name), lead), np.nan))
    return construct_rows(HiddenSummary, columns)


def _attention_summaries(a: Any, lead: int) -> list[AttentionSummary]:
    rows = _flat(a.entropy_mean, lead).shape[0]
    columns: Columns = {}
    for name in AttentionSummary.model_fields:
        if name in _ATTENTION_COUNTS:
            columns[name] = _counts(getattr(a, name), lead)
        elif name in _ATTENTION_VECTORS:
            columns[name] = _vectors(getattr(a, name, None), lead, rows)
        else:
            columns[name] = _floats(getattr(a, name), lead)
    return construct_rows(AttentionSummary, columns)


def _anomalies(hidden: Any, attention: Any | None, lead: int) -> list[Anomalies | None]:
    """NaN/Inf seen in a layer's hidden state or self-attention; None where there was none."""
    nan = _flat(hidden.has_nan, lead).astype(bool)
    inf = _flat(hidden.has_inf, lead).astype(bool)
    if attention is not None:
        nan = nan | _flat(attention.has_nan, lead).astype(bool)
        inf = inf | _flat(attention.has_inf, lead).astype(bool)
    out: list[Anomalies | None] = [None] * len(nan)
    for i in np.flatnonzero(nan | inf).tolist():
        out[i] = Anomalies(has_nan=bool(nan[i]), has_inf=bool(inf[i]))
    return out


def _chunks(items: list[M], size: int, count: int) -> list[list[M]]:
    """``items`` cut into ``count`` consecutive lists of ``size``."""
    return [items[i * size : (i + 1) * size] for i in range(count)]


def _flat(values: Any, lead: int) -> np.ndarray:
    """The array with its ``lead`` leading axes merged into one."""
    array = np.asarray(values)
    return array.reshape((-1, *array.shape[lead:]))


def _floats(values: Any, lead: int) -> list[Any]:
    """Rounded floats (None where not finite); a list of such lists per position for vector values."""
    return as_list(_flat(values, lead))


def _flags(values: Any, lead: int) -> list[bool]:
    flags: list[bool] = _flat(values, lead).astype(bool).tolist()
    return flags


def _vectors(values: Any, lead: int, rows: int) -> list[Any]:
    """One list of rounded floats per position, or None for every position when not captured."""
    return [None] * rows if values is None else _floats(values, lead)


def _counts(values: Any, lead: int) -> list[int | None]:
    """Whole numbers stored as floats (NaN when not computed) as ints, None where not finite."""
    array = _flat(values, lead).astype(np.float64)
    finite = np.isfinite(array)
    counts = np.rint(np.where(finite, array, 0.0)).astype(np.int64).astype(object)
    counts[~finite] = None
    result: list[int | None] = counts.tolist()
    return result
