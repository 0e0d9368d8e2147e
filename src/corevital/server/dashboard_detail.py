"""What the run page shows on a click: the attention explorer and one layer at one step.

:func:`attention_view` answers the explorer of the *Prompt* tab from the report's sparse prompt
attention (``prompt_analysis.layers[l].heads[h]``: the strongest query → key entries per head) with
:class:`~corevital.report.attention_query.AttentionQuery`: for one prompt token, in one layer and
one head (or all the layer's heads), the tokens it attends to and the tokens that attend to it;
and, always, the heads whose basin score is below the threshold (they skip the prompt's middle).

:func:`layer_detail` answers a click on a heat-map cell: the layer's statistics at that generated
step (attention entropy, concentration, collapsed and focused heads, each head's largest weight,
sink and previous-token mass; the hidden state's mean, spread, norm and clipping; NaN/Inf).

Both parse only what they read (pydantic-core against a partial shape, as
:func:`~corevital.server.dashboard_view.read_document` does): the explorer skips the timeline, the
layer detail skips the hidden-state sketches and every other part of the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from corevital.views.lenient import as_list, as_map, finite

if TYPE_CHECKING:  # imported when first used: the report models and numpy are not loaded with the server
    from corevital.report.attention_query import AttentionQuery, Connection

MAX_LISTED = 50  # connections listed per direction


class _Prompt(TypedDict, total=False):
    token_ids: Any
    num_tokens: Any


class _TextToken(TypedDict, total=False):
    token_id: Any
    token_text: Any


class _TextLogits(TypedDict, total=False):
    topk_probs: list[_TextToken] | None


class _TextStep(TypedDict, total=False):
    token: _TextToken | None
    logits_summary: _TextLogits | None


class _AttentionDocument(TypedDict, total=False):
    prompt: _Prompt | None
    prompt_analysis: Any
    timeline: list[_TextStep] | None


class _DetailToken(TypedDict, total=False):
    token_text: Any
    is_prompt_token: Any


class _DetailHidden(TypedDict, total=False):
    mean: Any
    std: Any
    l2_norm_mean: Any
    max_abs: Any
    clipped: Any
    clip_fraction: Any
    clip_max_before: Any


class _DetailLayer(TypedDict, total=False):
    layer_index: Any
    hidden_summary: _DetailHidden | None
    attention_summary: Any
    cross_attention: Any
    anomalies: Any


class _DetailStep(TypedDict, total=False):
    token: _DetailToken | None
    layers: list[_DetailLayer] | None


class _DetailDocument(TypedDict, total=False):
    model: Any
    timeline: list[_DetailStep] | None


_ATTENTION = TypeAdapter(_AttentionDocument)
_DETAIL = TypeAdapter(_DetailDocument)


class DetailError(ValueError):
    """The asked layer, head, step or token is not in the report (the route answers 404)."""


def _read(adapter: TypeAdapter[Any], text: str) -> Mapping[str, Any]:
    try:
        document = adapter.validate_json(text)
    except ValidationError:
        document = json.loads(text)
    return document if isinstance(document, Mapping) else {}


def _query(document: Mapping[str, Any]) -> AttentionQuery | None:
    from corevital.report.attention_query import AttentionQuery
    from corevital.report.schema import PromptAnalysis

    analysis = document.get("prompt_analysis")
    if not isinstance(analysis, Mapping):
        return None
    try:
        return AttentionQuery(PromptAnalysis.model_validate(analysis))
    except (ValidationError, ValueError):
        return None


def _grouped(connections: list[Connection], other: str, heads: int | None) -> list[dict[str, Any]]:
    """Connections to or from one token, one entry per other token: with one head its weight; over
    all heads the mean over the layer's ``heads`` (a head without a stored entry counts 0) and how
    many heads have one."""
    if heads is None:
        rows = [
            {"token": getattr(c, other), "weight": c.weight, "heads": 1, "head": c.head}
            for c in connections[:MAX_LISTED]
        ]
        return rows
    sums: dict[int, list[float]] = {}
    for c in connections:
        entry = sums.setdefault(getattr(c, other), [0.0, 0.0])
        entry[0] += c.weight
        entry[1] += 1
    rows = [
        {"token": token, "weight": total / max(heads, 1), "heads": int(count)}
        for token, (total, count) in sums.items()
    ]
    rows.sort(key=lambda row: (-float(row["weight"]), int(row["token"])))
    return rows[:MAX_LISTED]


def _known_texts(document: Mapping[str, Any], ids: list[int]) -> list[str | None]:
    """The text of each prompt token where the report names it: a generated token or a top-k
    alternative with the same id (reports keep no prompt token strings); None elsewhere."""
    wanted = set(ids)
    known: dict[int, str] = {}
    for step in as_list(document.get("timeline")):
        step = as_map(step)
        items = [
            as_map(step.get("token")),
            *map(as_map, as_list(as_map(step.get("logits_summary")).get("topk_probs"))),
        ]
        for item in items:
            token_id, text = item.get("token_id"), item.get("token_text")
            if token_id in wanted and isinstance(text, str):
                known.setdefault(token_id, text)
    return [known.get(token_id) for token_id in ids]


def attention_view(text: str, token: int | None, layer: int | None, head: int | None) -> dict[str, Any]:
    """The explorer's answer for the stored report JSON ``text`` (see the module docstring).

    Without ``token`` only the report's shape and the basin anomalies; with it, ``layer`` defaults
    to 0 and ``head`` None means all the layer's heads. DetailError for an index out of range.
    """
    from corevital.report.attention_query import DEFAULT_BASIN_THRESHOLD

    document = _read(_ATTENTION, text)
    prompt = as_map(document.get("prompt"))
    ids = [value for value in as_list(prompt.get("token_ids")) if isinstance(value, int)]
    query = _query(document)
    layers = query.num_layers if query is not None else 0
    answer: dict[str, Any] = {
        "prompt_tokens": len(ids)
        or (prompt.get("num_tokens") if isinstance(prompt.get("num_tokens"), int) else 0),
        "token_ids": ids,
        "token_texts": _known_texts(document, ids),
        "layers": layers,
        "heads": [query.num_heads(index) for index in range(layers)] if query is not None else [],
        "entries": len(query) if query is not None else 0,
        "basin_threshold": DEFAULT_BASIN_THRESHOLD,
        "basin_anomalies": [
            {"layer": a.layer, "head": a.head, "score": a.score} for a in query.basin_anomalies()
        ]
        if query is not None
        else [],
        "query": None,
    }
    if token is None:
        return answer
    if query is None or layers == 0:
        raise DetailError("this report has no sparse prompt attention")
    layer = 0 if layer is None else layer
    if not 0 <= layer < layers:
        raise DetailError(f"layer {layer} is not in this report (0 to {layers - 1})")
    heads = query.num_heads(layer)
    if head is not None and not 0 <= head < heads:
        raise DetailError(f"head {head} is not in layer {layer} (0 to {heads - 1})")
    if token < 0 or (answer["prompt_tokens"] and token >= answer["prompt_tokens"]):
        raise DetailError(f"token {token} is not in the prompt")
    outgoing = query.from_token(token, layer=layer, head=head)
    incoming = query.to_token(token, layer=layer, head=head)
    over = None if head is not None else heads
    answer["query"] = {
        "token": token,
        "layer": layer,
        "head": head,
        "layer_heads": heads,
        "attends_to": _grouped(outgoing, "key_index", over),
        "attended_by": _grouped(incoming, "query_index", over),
    }
    return answer


def _generated(timeline: list[Any]) -> list[Any]:
    return [step for step in timeline if not as_map(as_map(step).get("token")).get("is_prompt_token")]


def _numbers(values: Any) -> list[float | None] | None:
    if not isinstance(values, list):
        return None
    return [finite(value) for value in values]


def _summary(value: Any, lists: tuple[str, ...] = ()) -> dict[str, Any] | None:
    summary = as_map(value)
    if not summary:
        return None
    out: dict[str, Any] = {}
    for key, item in summary.items():
        if key in lists:
            out[key] = _numbers(item)
        elif item is None or isinstance(item, bool | int):  # counts and flags as they are
            out[key] = item
        elif isinstance(item, float):
            out[key] = finite(item)
    return out


def layer_detail(text: str, layer: int, step: int) -> dict[str, Any]:
    """One layer at one generated step of the stored report JSON ``text``; DetailError when the
    report has no such step or layer."""
    document = _read(_DETAIL, text)
    timeline = _generated(as_list(document.get("timeline")))
    if not 0 <= step < len(timeline):
        raise DetailError(f"step {step} is not in this run (0 to {len(timeline) - 1})")
    at = as_map(timeline[step])
    found = [
        as_map(entry) for entry in as_list(at.get("layers")) if as_map(entry).get("layer_index") == layer
    ]
    indices = [
        index
        for entry in as_list(at.get("layers"))
        if isinstance(index := as_map(entry).get("layer_index"), int)
    ]
    if not found:
        where = f"0 to {max(indices)}" if indices else "none kept at this step"
        raise DetailError(f"layer {layer} has no values at step {step} (layers: {where})")
    entry = found[0]
    token = as_map(at.get("token")).get("token_text")
    heads = as_map(document.get("model")).get("num_attention_heads")
    return {
        "layer": layer,
        "step": step,
        "steps": len(timeline),
        "layers": max(indices) + 1,
        "heads": heads if isinstance(heads, int) else None,
        "token": token if isinstance(token, str) else None,
        "attention": _summary(entry.get("attention_summary"), ("max_weight_per_head",)),
        "cross_attention": _summary(entry.get("cross_attention"), ("max_weight_per_head",)),
        "hidden": _summary(entry.get("hidden_summary")),
        "anomalies": _summary(entry.get("anomalies")),
    }
