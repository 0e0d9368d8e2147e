"""What the dashboard's run page draws, computed on the server from a stored report JSON document.

:func:`run_view` reads the parsed document (no report models, so every stored schema version
works) and returns what the page draws first: the digest (:mod:`corevital.views.digest`), the
per-step series, the tokens with their top-5 alternatives, the steps where flags, compound
signals and early warnings fired, the prompt analysis and the performance breakdown.
:func:`layer_view` returns the layer × step heat maps, fetched when the Layers tab is opened.
Heat maps are downsampled here: a map wider than
:data:`MAX_COLUMNS` steps has each block of ``k = ceil(steps / MAX_COLUMNS)`` consecutive steps
replaced by the mean of its finite values (``block`` in the answer), so the browser never draws
more than 400 columns whatever the run's length.

:func:`read_document` parses only what the page uses: the stored JSON is validated by pydantic-core
against :class:`_Document`, a partial shape whose step and layer entries name only the fields
read here, so the bulk of a large report is skipped by the parser instead of becoming Python
objects: the first view skips every step's layers, the heat maps skip the rest (hidden-state
sketches, per-head weights, sparse prompt attention).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from corevital.views.digest import digest_document
from corevital.views.html_heatmap import block_columns
from corevital.views.lenient import as_list, as_map, finite

MAX_COLUMNS = 400
MAX_LAYERS = 512
TOP_ALTERNATIVES = 5

Getter = Callable[[Mapping[str, Any]], float | None]


class _Token(TypedDict, total=False):
    token_id: Any
    token_text: Any
    is_prompt_token: Any


class _Logits(TypedDict, total=False):
    entropy: Any
    surprisal: Any
    top_k_margin: Any
    topk_mass: Any
    topk_probs: Any
    has_nan: Any
    has_inf: Any


class _Attention(TypedDict, total=False):
    entropy_mean_normalized: Any
    entropy_mean: Any
    collapsed_head_rate: Any
    collapsed_head_count: Any


class _Hidden(TypedDict, total=False):
    l2_norm_mean: Any


class _Layer(TypedDict, total=False):
    layer_index: Any
    attention_summary: _Attention | None
    hidden_summary: _Hidden | None


class _Step(TypedDict, total=False):
    step_index: Any
    token: _Token | None
    logits_summary: _Logits | None


class _LayerStep(TypedDict, total=False):
    token: _Token | None
    layers: list[_Layer] | None


class _PromptLayer(TypedDict, total=False):
    basin_scores: Any


class _PromptAnalysis(TypedDict, total=False):
    layers: list[_PromptLayer] | None
    layer_transformations: Any
    prompt_surprisals: Any


class _Document(TypedDict, total=False):
    """The parts of a report the dashboard reads (other keys are skipped while parsing)."""

    trace_id: Any
    created_at_utc: Any
    schema_version: Any
    model: Any
    run_config: Any
    prompt: Any
    generated: Any
    summary: Any
    warnings: Any
    timeline: list[_Step] | None
    prompt_analysis: _PromptAnalysis | None
    health_flags: Any
    extensions: Any


class _LayerDocument(TypedDict, total=False):
    """The parts of a report the layer heat maps read."""

    model: Any
    timeline: list[_LayerStep] | None


_DOCUMENT = TypeAdapter(_Document)
_LAYER_DOCUMENT = TypeAdapter(_LayerDocument)


def read_document(text: str, *, layers: bool = False) -> Mapping[str, Any]:
    """The parts of the stored report JSON ``text`` that :func:`run_view` (or, with ``layers``,
    :func:`layer_view`) reads.

    A document of another shape than the partial one (a step that is not an object, say) is read
    whole with ``json.loads``: the views read anything leniently.
    """
    try:
        return (_LAYER_DOCUMENT if layers else _DOCUMENT).validate_json(text)
    except ValidationError:
        document = json.loads(text)
        return document if isinstance(document, Mapping) else {}


def _step(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _series(timeline: list[Any], key: str) -> list[float | None]:
    return [finite(as_map(as_map(step).get("logits_summary")).get(key)) for step in timeline]


def _tokens(timeline: list[Any]) -> list[dict[str, Any]]:
    tokens = []
    for step in timeline:
        logits = as_map(as_map(step).get("logits_summary"))
        top = [
            [str(as_map(item).get("token_text", "")), finite(as_map(item).get("prob"))]
            for item in as_list(logits.get("topk_probs"))[:TOP_ALTERNATIVES]
        ]
        text = as_map(as_map(step).get("token")).get("token_text")
        tokens.append(
            {
                "text": text if isinstance(text, str) else "",
                "surprisal": finite(logits.get("surprisal")),
                "entropy": finite(logits.get("entropy")),
                "top": top,
            }
        )
    return tokens


def _markers(document: Mapping[str, Any], steps: int) -> list[dict[str, Any]]:
    """Each fired signal with the generated step where it fired (``None``: the report does not say)."""
    extensions = as_map(document.get("extensions"))
    flags = as_map(document.get("health_flags"))
    risk = as_map(extensions.get("risk"))
    markers: list[dict[str, Any]] = []

    def add(kind: str, name: str, step: Any, detail: str = "") -> None:
        at = _step(step)
        markers.append(
            {"kind": kind, "name": name, "step": at if at is None or at < steps else None, "detail": detail}
        )

    if flags.get("repetition_loop_detected") is True:
        repetition = as_map(extensions.get("repetition"))
        add(
            "flag",
            "repetition_loop",
            repetition.get("first_step"),
            str(repetition.get("repeated_text") or ""),
        )
    if flags.get("attention_collapse_detected") is True:
        add(
            "flag", "attention_collapse", as_map(risk.get("attention_collapse_detail")).get("trend_peak_step")
        )
    if flags.get("mid_layer_anomaly_detected") is True:
        jumps = [as_map(jump) for jump in as_list(as_map(extensions.get("mid_layer")).get("jumps"))]
        firsts = [s for s in (_step(jump.get("first_step")) for jump in jumps) if s is not None]
        add("flag", "mid_layer_anomaly", min(firsts) if firsts else None)
    for flag, key in (("nan_detected", "has_nan"), ("inf_detected", "has_inf")):
        if flags.get(flag) is True:
            timeline = as_list(document.get("timeline"))
            hit = next(
                (i for i, s in enumerate(timeline) if as_map(as_map(s).get("logits_summary")).get(key)), None
            )
            add("flag", flag.removesuffix("_detected"), hit)
    for signal in as_list(extensions.get("compound_signals")):
        signal = as_map(signal)
        add(
            "compound",
            str(signal.get("name", "")),
            signal.get("first_step"),
            str(signal.get("description", "")),
        )
    for firing in as_list(as_map(extensions.get("early_warning")).get("firings")):
        firing = as_map(firing)
        add("warning", str(firing.get("signal", "")), firing.get("step"))
    return markers


def _layer_rows(timeline: list[Any], layers: int, getters: list[Getter]) -> list[list[list[float | None]]]:
    """One layer × step matrix per getter, in one pass over the steps."""
    maps: list[list[list[float | None]]] = [[[None] * len(timeline) for _ in range(layers)] for _ in getters]
    for t, step in enumerate(timeline):
        for layer in as_list(as_map(step).get("layers")):
            layer = as_map(layer)
            index = layer.get("layer_index")
            if isinstance(index, int) and 0 <= index < layers:
                for rows, getter in zip(maps, getters, strict=True):
                    rows[index][t] = getter(layer)
    return maps


def _heat_map(
    title: str,
    unit: str,
    rows: list[list[float | None]],
    *,
    log: bool = False,
    domain: tuple[float, float] | None = None,
) -> dict[str, Any] | None:
    if not any(value is not None for row in rows for value in row):
        return None
    blocked, block = block_columns(rows, MAX_COLUMNS)
    return {"title": title, "unit": unit, "log": log, "domain": domain, "block": block, "rows": blocked}


def _heat_maps(document: Mapping[str, Any], timeline: list[Any]) -> list[dict[str, Any]]:
    indices = [
        index
        for step in timeline
        for layer in as_list(as_map(step).get("layers"))
        if isinstance(index := as_map(layer).get("layer_index"), int)
    ]
    layers = min(max(indices, default=-1) + 1, MAX_LAYERS)
    if layers == 0:
        return []
    heads = as_map(document.get("model")).get("num_attention_heads")

    def attention(key: str) -> Getter:
        return lambda layer: finite(as_map(layer.get("attention_summary")).get(key))

    def norm(layer: Mapping[str, Any]) -> float | None:
        value = finite(as_map(layer.get("hidden_summary")).get("l2_norm_mean"))
        return value if value is not None and value > 0 else None

    def collapsed(layer: Mapping[str, Any]) -> float | None:
        summary = as_map(layer.get("attention_summary"))
        rate = finite(summary.get("collapsed_head_rate"))
        count = finite(summary.get("collapsed_head_count"))
        if rate is None and count is not None and isinstance(heads, int) and heads > 0:
            rate = count / heads
        return rate

    normalized, nats, norms, rates = _layer_rows(
        timeline, layers, [attention("entropy_mean_normalized"), attention("entropy_mean"), norm, collapsed]
    )
    entropy = _heat_map("Attention entropy", "entropy / ln(keys)", normalized, domain=(0.0, 1.0))
    maps = [
        entropy or _heat_map("Attention entropy", "nats", nats),
        _heat_map("Hidden-state norm", "L2 norm", norms, log=True),
        _heat_map("Collapsed-head rate", "share of heads", rates, domain=(0.0, 1.0)),
    ]
    return [item for item in maps if item is not None]


def _prompt(document: Mapping[str, Any]) -> dict[str, Any]:
    analysis = as_map(document.get("prompt_analysis"))
    basins = [
        [finite(v) for v in as_list(as_map(layer).get("basin_scores"))]
        for layer in as_list(analysis.get("layers"))
    ]
    return {
        "surprisals": [finite(v) for v in as_list(analysis.get("prompt_surprisals"))],
        "transformations": [finite(v) for v in as_list(analysis.get("layer_transformations"))],
        "basins": basins if any(basins) else [],
    }


def _performance(document: Mapping[str, Any]) -> dict[str, Any] | None:
    performance = as_map(as_map(document.get("extensions")).get("performance"))
    if not performance:
        return None
    operations = [
        {
            "name": str(as_map(op).get("name", "")),
            "ms": finite(as_map(op).get("ms")),
            "pct": finite(as_map(op).get("pct")),
        }
        for op in as_list(performance.get("parent_operations"))
    ]
    return {"total_ms": finite(performance.get("total_wall_time_ms")), "operations": operations}


def _generated_steps(document: Mapping[str, Any]) -> list[Any]:
    return [
        step
        for step in as_list(document.get("timeline"))
        if not as_map(as_map(step).get("token")).get("is_prompt_token")
    ]


def layer_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """The layer × step heat maps of the run page's Layers tab (see the module docstring)."""
    timeline = _generated_steps(document)
    return {"steps": len(timeline), "max_columns": MAX_COLUMNS, "heat_maps": _heat_maps(document, timeline)}


def run_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """What the run page draws first, all but the heat maps (see the module docstring)."""
    timeline = _generated_steps(document)
    digest = digest_document(document).to_json()
    for key in ("token_ids", "token_texts", "entropy", "surprisal"):
        digest.pop(key, None)  # the series below carry them
    return {
        "digest": digest,
        "steps": len(timeline),
        "series": {
            "entropy": _series(timeline, "entropy"),
            "surprisal": _series(timeline, "surprisal"),
            "margin": _series(timeline, "top_k_margin"),
            "topk_mass": _series(timeline, "topk_mass"),
        },
        "tokens": _tokens(timeline),
        "markers": _markers(document, len(timeline)),
        "prompt": _prompt(document),
        "performance": _performance(document),
    }
