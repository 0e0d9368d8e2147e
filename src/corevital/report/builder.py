"""Building a :class:`Report` from one captured sequence (host arrays) and its analysis.

Numbers are written as finite floats rounded to 7 significant digits (float32 carries no more);
NaN and Inf become null and are counted by the health flags instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corevital.capture.records import RunCapture, SequenceCapture
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


def num(value: Any) -> float | None:
    """A finite float rounded to float32 precision, or None."""
    x = float(value)
    if not math.isfinite(x):
        return None
    return float(f"{x:.7g}")


def _count(value: Any) -> int | None:
    x = float(value)
    return int(round(x)) if math.isfinite(x) else None


def _nums(values: Any) -> list[float | None]:
    return [num(v) for v in np.asarray(values).reshape(-1)]


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
    extra_warnings: list[ReportWarning] = field(default_factory=list)


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
        timeline=[_timeline_step(seq, t, prompt_tokens, layers_kept) for t in range(steps)],
        summary=Summary(
            prompt_tokens=prompt_tokens,
            generated_tokens=steps,
            total_steps=prompt_tokens + steps,
            elapsed_ms=int(round(run.elapsed_ms)),
        ),
        warnings=[ReportWarning(code=w.code, message=w.message) for w in seq.warnings]
        + list(ctx.extra_warnings),
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


def _timeline_step(seq: SequenceCapture, t: int, prompt_tokens: int, layers_kept: bool) -> TimelineStep:
    token_id = seq.generated_token_ids[t]
    texts = seq.token_texts
    return TimelineStep(
        step_index=prompt_tokens + t,
        token=TokenInfo(token_id=token_id, token_text=texts.get(token_id, ""), is_prompt_token=False),
        logits_summary=_logits_summary(seq, t),
        layers=_layers(seq, t) if layers_kept else [],
    )


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


def _hidden_summary(h: Any, index: Callable[[Any], Any]) -> HiddenSummary:
    clipped = bool(index(h.clipped))
    return HiddenSummary(
        mean=num(index(h.mean)),
        std=num(index(h.std)),
        l2_norm_mean=num(index(h.l2_norm)),
        max_abs=num(index(h.max_abs)),
        sketch=_nums(index(h.sketch)) if h.sketch is not None else None,
        clipped=clipped,
        clip_fraction=num(index(h.clip_fraction)) if clipped else None,
        clip_max_before=num(index(h.clip_max_before)) if clipped else None,
    )


def _attention_summary(a: Any, index: Callable[[Any], Any], *, per_head: bool = True) -> AttentionSummary:
    return AttentionSummary(
        entropy_mean=num(index(a.entropy_mean)),
        entropy_mean_normalized=num(index(a.entropy_mean_normalized)),
        entropy_min=num(index(a.entropy_min)),
        entropy_max=num(index(a.entropy_max)),
        concentration_max=num(index(a.concentration_max)),
        concentration_min=num(index(a.concentration_min)),
        collapsed_head_count=_count(index(a.collapsed_head_count)),
        collapsed_head_rate=num(index(a.collapsed_head_rate)),
        focused_head_count=_count(index(a.focused_head_count)),
        max_weight_per_head=_nums(index(a.max_weight_per_head)) if per_head else None,
        sink_mass_mean=num(index(a.sink_mass_mean)),
        prev_token_mass_mean=num(index(a.prev_token_mass_mean)),
        prev_token_mass_max=num(index(a.prev_token_mass_max)),
    )


def _anomalies(h: Any, a: Any, index: Callable[[Any], Any]) -> Anomalies | None:
    has_nan = bool(index(h.has_nan)) or (a is not None and bool(index(a.has_nan)))
    has_inf = bool(index(h.has_inf)) or (a is not None and bool(index(a.has_inf)))
    return Anomalies(has_nan=has_nan, has_inf=has_inf) if (has_nan or has_inf) else None


def _layers(seq: SequenceCapture, t: int) -> list[LayerSummary]:
    h, a, c = seq.hidden, seq.attention, seq.cross_attention
    assert h is not None, "layers are only built when hidden-state summaries exist"
    out = []
    for layer in range(np.asarray(h.mean).shape[1]):

        def at(values: Any, _l: int = layer) -> Any:
            return np.asarray(values)[t, _l]

        out.append(
            LayerSummary(
                layer_index=layer,
                hidden_summary=_hidden_summary(h, at),
                attention_summary=_attention_summary(a, at) if a is not None else AttentionSummary(),
                cross_attention=_attention_summary(c, at) if c is not None else None,
                anomalies=_anomalies(h, a, at),
            )
        )
    return out


def _encoder_layers(seq: SequenceCapture) -> list[LayerSummary] | None:
    h, a = seq.encoder_hidden, seq.encoder_attention
    if h is None:
        return None
    out = []
    for layer in range(np.asarray(h.mean).shape[0]):

        def at(values: Any, _l: int = layer) -> Any:
            return np.asarray(values)[_l]

        out.append(
            LayerSummary(
                layer_index=layer,
                hidden_summary=_hidden_summary(h, at),
                attention_summary=_attention_summary(a, at) if a is not None else AttentionSummary(),
                cross_attention=None,
                anomalies=_anomalies(h, a, at),
            )
        )
    return out


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
