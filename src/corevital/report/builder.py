"""Building a :class:`Report` from one captured sequence (host arrays) and its analysis.

Numbers are written as finite floats rounded to 7 significant digits (float32 carries no more);
NaN and Inf become null and are counted by the health flags instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corevital.capture.generate_kwargs import recorded
from corevital.capture.records import SKETCH_SEED, PromptLayerAttention, RunCapture, SequenceCapture
from corevital.report.columns import Columns, construct_rows
from corevital.report.numbers import as_list
from corevital.report.schema import (
    AttentionSummaryConfig,
    Extensions,
    GeneratedInfo,
    GenerationConfig,
    HealthFlags,
    HiddenSummaryConfig,
    LatencyPercentiles,
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
)
from corevital.report.timeline import encoder_layers, timeline

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


def _nums(values: Any) -> list[float | None]:
    return as_list(np.asarray(values).reshape(-1))


@dataclass(frozen=True)
class BuildContext:
    """Everything about a report that does not come from the capture (ids, clock, destinations)."""

    trace_id: str
    created_at_utc: str
    sink: SinkConfig
    device_requested: str
    topk: int  # the settings topk, topk_mass_k and sketch_dim (their defaults live in Settings only)
    mass_k: int
    sketch_dim: int
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
            text=seq.prompt.text,
            token_ids=list(seq.prompt.token_ids),
            num_tokens=prompt_tokens,
            chat_template_applied=seq.prompt.chat_template_applied,
        ),
        generated=GeneratedInfo(
            output_text=seq.generated_text,
            token_ids=list(seq.generated_token_ids),
            num_tokens=steps,
            finish_reason=seq.finish_reason,  # type: ignore[arg-type]
        ),
        timeline=timeline(seq, prompt_tokens, layers_kept),
        summary=Summary(
            prompt_tokens=prompt_tokens,
            generated_tokens=steps,
            total_steps=prompt_tokens + steps,
            elapsed_ms=int(round(run.elapsed_ms)),
            started_at_utc=seq.started_at_utc or run.started_at_utc,
            generation_ms=round(seq.generation_ms if seq.generation_ms is not None else run.elapsed_ms, 3),
            **latency(seq.step_end_ms),
        ),
        warnings=[ReportWarning(code=w.code, message=w.message) for w in seq.warnings],
        encoder_layers=encoder_layers(seq) if caps.is_encoder_decoder else None,
        prompt_analysis=ctx.prompt_analysis
        if ctx.prompt_analysis is not None
        else prompt_analysis(seq, layers_kept),
        health_flags=ctx.health_flags,
        extensions=ctx.extensions,
    )


def _run_config(run: RunCapture, seq: SequenceCapture, ctx: BuildContext, layers_kept: bool) -> RunConfig:
    gen = run.generation
    sketch = (
        SketchConfig(method=SKETCH_METHOD, dim=ctx.sketch_dim, seed=SKETCH_SEED) if ctx.sketch_dim else None
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
        generate_kwargs=recorded(gen.generate_kwargs) if gen.generate_kwargs else None,
        generation_defaults="model" if gen.from_model else None,
    )


def latency(step_end_ms: list[float] | None) -> dict[str, Any]:
    """``ttft_ms``, ``inter_token_ms`` and ``tokens_per_second`` from a sequence's step end times."""
    if not step_end_ms:
        return {}
    ends = np.asarray(step_end_ms, dtype=np.float64)
    out: dict[str, Any] = {"ttft_ms": round(float(ends[0]), 3)}
    if ends[-1] > 0:
        out["tokens_per_second"] = round(float(len(ends) / (ends[-1] / 1000.0)), 3)
    if len(ends) > 1:
        gaps = np.diff(ends)
        p50, p90, p99 = np.percentile(gaps, [50, 90, 99])
        out["inter_token_ms"] = LatencyPercentiles(
            p50=round(float(p50), 3),
            p90=round(float(p90), 3),
            p99=round(float(p99), 3),
            mean=round(float(gaps.mean()), 3),
        )
    return out


def prompt_analysis(seq: SequenceCapture, layers_kept: bool) -> PromptAnalysis | None:
    """The ``prompt_analysis`` object from captured prompt telemetry (per-layer detail: full capture)."""
    telemetry = seq.prompt_telemetry
    if telemetry is None or not layers_kept:
        return None
    heads = _sparse_heads(telemetry.layers)
    basins = telemetry.basin_scores
    layers: Columns = {
        "heads": heads,
        "basin_scores": _rows(basins) if basins is not None else [None] * len(heads),
    }
    return PromptAnalysis.model_construct(
        layers=construct_rows(PromptAttentionLayer, layers),
        layer_transformations=_nums(telemetry.layer_transformations),
        prompt_surprisals=_nums(telemetry.surprisals) if telemetry.surprisals is not None else [],
    )


def _sparse_heads(layers: list[PromptLayerAttention]) -> list[list[SparseAttentionHead]]:
    """Each layer's heads; each field's entries of all heads converted together."""
    if not layers:
        return []
    kept = [layer.entries() for layer in layers]
    counts = np.concatenate([np.asarray(layer.count).reshape(-1) for layer in layers])

    def column(name: str, convert: Callable[[np.ndarray], list[Any]]) -> list[list[Any]]:
        arrays = [np.asarray(getattr(layer, name))[mask] for layer, mask in zip(layers, kept, strict=True)]
        return _split(convert(np.concatenate(arrays)), counts)

    columns: Columns = {
        "query_indices": column("query_indices", _ints),
        "key_indices": column("key_indices", _ints),
        "weights": column("weights", _nums),
    }
    built = iter(construct_rows(SparseAttentionHead, columns))
    return [[next(built) for _ in range(np.asarray(layer.count).size)] for layer in layers]


def _split(values: list[Any], counts: Any) -> list[list[Any]]:
    """``values`` cut into consecutive pieces of ``counts`` items."""
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    return [values[start:end] for start, end in zip(starts, ends, strict=True)]


def _ints(values: np.ndarray) -> list[int]:
    ints: list[int] = values.astype(np.int64).tolist()
    return ints


def _rows(values: Any) -> list[list[float | None]]:
    """A 2-D array as one list of rounded floats per row."""
    array = np.asarray(values)
    return as_list(array.reshape(array.shape[0], -1)) if array.size else [[] for _ in range(len(array))]
