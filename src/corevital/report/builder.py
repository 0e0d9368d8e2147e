"""Building a :class:`Report` from one captured sequence (host arrays) and its analysis.

Numbers are written as finite floats rounded to 7 significant digits (float32 carries no more);
NaN and Inf become null and are counted by the health flags instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corevital.capture.records import RunCapture, SequenceCapture
from corevital.report.numbers import as_list, num
from corevital.report.schema import (
    Anomalies,
    AttentionSummary,
    AttentionSummaryConfig,
    Extensions,
    GeneratedInfo,
    GenerationConfig,
    HealthFlags,
    HiddenSummary,
    HiddenSummaryConfig,
    LayerSummary,
    LogitsSummary,
    LogitsSummaryConfig,
    ModelInfo,
    PromptAnalysis,
    PromptAttentionLayer,
    PromptInfo,
    QuantizationInfo,
    Report,
    ReportWarning,
    RunConfig,
    SinkConfig,
    SketchConfig,
    SparseAttentionHead,
    SummariesConfig,
    Summary,
    TimelineStep,
    TokenInfo,
    TopKProb,
)

SKETCH_METHOD = "gaussian_projection"
HIDDEN_STATS = ["mean", "std", "l2_norm_mean", "max_abs", "clipped", "sketch"]
ATTENTION_STATS = [
    "entropy_mean",
    "entropy_mean_normalized",
    "entropy_min",
    "entropy_max",
    "concentration_max",
    "concentration_min",
    "collapsed_head_count",
    "collapsed_head_rate",
    "focused_head_count",
    "max_weight_per_head",
    "sink_mass_mean",
    "prev_token_mass_mean",
    "prev_token_mass_max",
]
LOGITS_STATS = ["entropy", "perplexity", "surprisal", "top_k_margin", "topk_mass", "topk_probs"]


def _count(value: Any) -> int | None:
    x = float(value)
    return int(round(x)) if math.isfinite(x) else None


def _nums(values: Any) -> list[float | None]:
    return as_list(np.asarray(values).reshape(-1))


@dataclass(frozen=True)
class BuildContext:
    """Everything about a report that does not come from the capture (ids, clock, destinations)."""

    trace_id: str
    created_at_utc: str
    sink: SinkConfig
    device_requested: str
    topk: int = 5
    mass_k: int = 10
    sketch_dim: int = 32
    sketch_seed: int = 0
    include_layers: bool = True
    health_flags: HealthFlags | None = None
    extensions: Extensions = field(default_factory=Extensions)
    prompt_analysis: PromptAnalysis | None = None


def build_report(run: RunCapture, seq: SequenceCapture, ctx: BuildContext) -> Report:
    caps = run.model.capabilities
    prompt_tokens = len(seq.prompt.token_ids)
    steps = seq.num_steps
    layers_kept = ctx.include_layers and seq.hidden is not None
    return Report(
        trace_id=ctx.trace_id,
        created_at_utc=ctx.created_at_utc,
        model=ModelInfo(
            hf_id=run.model.hf_id,
            revision=run.model.revision,
            architecture=caps.architecture,
            num_layers=caps.num_layers,
            hidden_size=caps.hidden_size,
            num_attention_heads=caps.num_attention_heads,
            tokenizer_hf_id=run.model.hf_id,
            dtype=run.model.dtype,
            device=run.model.device,
            quantization=QuantizationInfo(
                enabled=run.model.quantization is not None, method=run.model.quantization
            ),
            num_key_value_heads=caps.num_key_value_heads,
            is_encoder_decoder=caps.is_encoder_decoder,
            source=run.model.source,  # type: ignore[arg-type]
        ),
        run_config=_run_config(run, seq, ctx, layers_kept),
        prompt=PromptInfo(
            text=seq.prompt.text, token_ids=list(seq.prompt.token_ids), num_tokens=prompt_tokens
        ),
        generated=GeneratedInfo(
            output_text=seq.generated_text,
            token_ids=list(seq.generated_token_ids),
            num_tokens=steps,
            finish_reason=seq.finish_reason,  # type: ignore[arg-type]
        ),
        timeline=_timeline(seq, prompt_tokens, layers_kept),
        summary=Summary(
            prompt_tokens=prompt_tokens,
            generated_tokens=steps,
            total_steps=prompt_tokens + steps,
            elapsed_ms=int(round(run.elapsed_ms)),
        ),
        warnings=[ReportWarning(code=w.code, message=w.message) for w in seq.warnings],
        encoder_layers=_encoder_layers(seq) if caps.is_encoder_decoder else None,
        prompt_analysis=ctx.prompt_analysis
        if ctx.prompt_analysis is not None
        else prompt_analysis(seq, layers_kept),
        health_flags=ctx.health_flags,
        extensions=ctx.extensions,
    )


def _run_config(run: RunCapture, seq: SequenceCapture, ctx: BuildContext, layers_kept: bool) -> RunConfig:
    gen = run.generation
    sketch = (
        SketchConfig(method=SKETCH_METHOD, dim=ctx.sketch_dim, seed=ctx.sketch_seed)
        if ctx.sketch_dim
        else None
    )
    return RunConfig(
        seed=gen.seed,
        device_requested=ctx.device_requested,
        max_new_tokens=gen.max_new_tokens,
        generation=GenerationConfig(
            do_sample=gen.do_sample,
            temperature=gen.temperature if gen.do_sample else 0.0,
            top_k=gen.top_k,
            top_p=gen.top_p,
            num_beams=gen.num_beams,
            early_stopping=gen.early_stopping,
        ),
        summaries=SummariesConfig(
            hidden=HiddenSummaryConfig(enabled=layers_kept, stats=HIDDEN_STATS, sketch=sketch),
            attention=AttentionSummaryConfig(
                enabled=layers_kept and seq.attention is not None, stats=ATTENTION_STATS
            ),
            logits=LogitsSummaryConfig(enabled=True, stats=LOGITS_STATS, topk=ctx.topk, mass_k=ctx.mass_k),
        ),
        sink=ctx.sink,
        entropy_mode=run.entropy_mode,  # type: ignore[arg-type]
        capture_mode=run.capture_mode,  # type: ignore[arg-type]
        batch_index=seq.batch_index if seq.batch_size > 1 else None,
        batch_size=seq.batch_size if seq.batch_size > 1 else None,
    )


def _timeline(seq: SequenceCapture, prompt_tokens: int, layers_kept: bool) -> list[TimelineStep]:
    columns = _columns(seq) if layers_kept else None
    layers = np.asarray(seq.hidden.mean).shape[1] if columns is not None and seq.hidden is not None else 0
    texts = seq.token_texts
    steps = []
    for t, token_id in enumerate(seq.generated_token_ids):
        steps.append(
            TimelineStep.model_construct(
                step_index=prompt_tokens + t,
                token=TokenInfo(token_id=token_id, token_text=texts.get(token_id, ""), is_prompt_token=False),
                logits_summary=_logits_summary(seq, t),
                layers=_layers(columns, t, layers) if columns is not None else [],
                extensions={},
            )
        )
    return steps


def _logits_summary(seq: SequenceCapture, t: int) -> LogitsSummary:
    lg, chosen = seq.logits, seq.chosen
    entropy = num(lg.entropy[t])
    ids = np.asarray(lg.topk_ids[t]).astype(np.int64).tolist()
    probs = _nums(lg.topk_probs[t])
    sampling_entropy = sampling_prob = None
    if chosen.sampling_entropy is not None:
        sampling_entropy = num(chosen.sampling_entropy[t])
        sampling_prob = num(chosen.sampling_prob[t])
    return LogitsSummary(
        entropy=entropy,
        perplexity=num(2.0**entropy) if entropy is not None else None,
        surprisal=num(chosen.surprisal[t]),
        top_k_margin=num(lg.top_k_margin[t]),
        topk_mass=num(lg.topk_mass[t]),
        topk_probs=[
            TopKProb(token_id=i, token_text=seq.token_texts.get(i, ""), prob=p)
            for i, p in zip(ids, probs, strict=True)
        ],
        sampling_entropy=sampling_entropy,
        sampling_prob=sampling_prob,
        has_nan=bool(lg.has_nan[t]) or None,
        has_inf=bool(lg.has_inf[t]) or None,
    )


_HIDDEN_FLOATS = ("mean", "std", "l2_norm", "max_abs", "clip_fraction", "clip_max_before")
_ATTENTION_FLOATS = (
    "entropy_mean",
    "entropy_mean_normalized",
    "entropy_min",
    "entropy_max",
    "concentration_max",
    "concentration_min",
    "collapsed_head_rate",
    "sink_mass_mean",
    "prev_token_mass_mean",
    "prev_token_mass_max",
)
_ATTENTION_COUNTS = ("collapsed_head_count", "focused_head_count")


class _Columns:
    """A stats dataclass as nested Python lists (rounded floats, None for non-finite), built once.

    Building thousands of layer summaries reads plain lists instead of converting one numpy value
    at a time; the pydantic models are constructed without re-validating values built here.
    """

    def __init__(
        self, stats: Any, floats: tuple[str, ...], counts: tuple[str, ...] = (), flags: tuple[str, ...] = ()
    ):
        self.values: dict[str, Any] = {name: as_list(getattr(stats, name)) for name in floats}
        for name in counts:
            array = np.asarray(getattr(stats, name), dtype=np.float64)
            self.values[name] = np.where(np.isfinite(array), np.rint(array), np.nan).tolist()
        for name in flags:
            self.values[name] = np.asarray(getattr(stats, name), dtype=bool).tolist()
        extra = ("sketch", "max_weight_per_head")
        for name in extra:
            value = getattr(stats, name, None)
            self.values[name] = None if value is None else as_list(value)

    def at(self, name: str, *index: int) -> Any:
        value = self.values[name]
        if value is None:
            return None
        for i in index:
            value = value[i]
        return value


def _count_or_none(value: float | None) -> int | None:
    return None if value is None or value != value else int(value)


def _hidden_summary(h: _Columns, *index: int) -> HiddenSummary:
    clipped = bool(h.at("clipped", *index))
    return HiddenSummary.model_construct(
        mean=h.at("mean", *index),
        std=h.at("std", *index),
        l2_norm_mean=h.at("l2_norm", *index),
        max_abs=h.at("max_abs", *index),
        sketch=h.at("sketch", *index),
        clipped=clipped,
        clip_fraction=h.at("clip_fraction", *index) if clipped else None,
        clip_max_before=h.at("clip_max_before", *index) if clipped else None,
    )


def _attention_summary(a: _Columns, *index: int) -> AttentionSummary:
    fields = {name: a.at(name, *index) for name in _ATTENTION_FLOATS}
    return AttentionSummary.model_construct(
        **fields,
        collapsed_head_count=_count_or_none(a.at("collapsed_head_count", *index)),
        focused_head_count=_count_or_none(a.at("focused_head_count", *index)),
        max_weight_per_head=a.at("max_weight_per_head", *index),
    )


def _anomalies(h: _Columns, a: _Columns | None, *index: int) -> Anomalies | None:
    has_nan = bool(h.at("has_nan", *index)) or (a is not None and bool(a.at("has_nan", *index)))
    has_inf = bool(h.at("has_inf", *index)) or (a is not None and bool(a.at("has_inf", *index)))
    return Anomalies(has_nan=has_nan, has_inf=has_inf) if (has_nan or has_inf) else None


def _columns(seq: SequenceCapture) -> tuple[_Columns, _Columns | None, _Columns | None]:
    assert seq.hidden is not None, "layers are only built when hidden-state summaries exist"
    hidden = _Columns(seq.hidden, _HIDDEN_FLOATS, flags=("clipped", "has_nan", "has_inf"))
    attention = cross = None
    if seq.attention is not None:
        attention = _Columns(seq.attention, _ATTENTION_FLOATS, _ATTENTION_COUNTS, ("has_nan", "has_inf"))
    if seq.cross_attention is not None:
        cross = _Columns(seq.cross_attention, _ATTENTION_FLOATS, _ATTENTION_COUNTS, ("has_nan", "has_inf"))
    return hidden, attention, cross


def _layers(
    columns: tuple[_Columns, _Columns | None, _Columns | None], t: int, layers: int
) -> list[LayerSummary]:
    h, a, c = columns
    return [
        LayerSummary.model_construct(
            layer_index=layer,
            hidden_summary=_hidden_summary(h, t, layer),
            attention_summary=_attention_summary(a, t, layer) if a is not None else AttentionSummary(),
            cross_attention=_attention_summary(c, t, layer) if c is not None else None,
            anomalies=_anomalies(h, a, t, layer),
            extensions={},
        )
        for layer in range(layers)
    ]


def _encoder_layers(seq: SequenceCapture) -> list[LayerSummary] | None:
    if seq.encoder_hidden is None:
        return None
    h = _Columns(seq.encoder_hidden, _HIDDEN_FLOATS, flags=("clipped", "has_nan", "has_inf"))
    a = None
    if seq.encoder_attention is not None:
        a = _Columns(seq.encoder_attention, _ATTENTION_FLOATS, _ATTENTION_COUNTS, ("has_nan", "has_inf"))
    return [
        LayerSummary.model_construct(
            layer_index=layer,
            hidden_summary=_hidden_summary(h, layer),
            attention_summary=_attention_summary(a, layer) if a is not None else AttentionSummary(),
            cross_attention=None,
            anomalies=_anomalies(h, a, layer),
            extensions={},
        )
        for layer in range(np.asarray(seq.encoder_hidden.mean).shape[0])
    ]


def prompt_analysis(seq: SequenceCapture, layers_kept: bool) -> PromptAnalysis | None:
    """The ``prompt_analysis`` object from captured prompt telemetry (per-layer detail: full capture)."""
    telemetry = seq.prompt_telemetry
    if telemetry is None or not layers_kept:
        return None
    layers = []
    for index, heads in enumerate(telemetry.heads):
        basin = telemetry.basin_scores[index] if telemetry.basin_scores is not None else None
        layers.append(
            PromptAttentionLayer(
                heads=[
                    SparseAttentionHead(
                        query_indices=[int(i) for i in head.query_indices],
                        key_indices=[int(i) for i in head.key_indices],
                        weights=_nums(head.weights),
                    )
                    for head in heads
                ],
                basin_scores=_nums(basin) if basin is not None else None,
            )
        )
    return PromptAnalysis(
        layers=layers,
        layer_transformations=_nums(telemetry.layer_transformations),
        prompt_surprisals=_nums(telemetry.surprisals) if telemetry.surprisals is not None else [],
    )
