"""The :class:`SequenceSignals` of a stored report, ours or the original CoreVital's.

Lets the tests run the analysis on traces written by the original CoreVital (schema 0.3.0/0.4.0)
and check that healthy runs stay quiet. No command re-analyses stored reports, so this lives with
the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from corevital.analysis.signals import SequenceSignals
from corevital.report.schema import Report


def _layer_matrix(report: Report, read: Any, dtype: Any = np.float64) -> np.ndarray | None:
    steps = report.timeline
    if not steps or not steps[0].layers:
        return None
    width = max(len(s.layers) for s in steps)
    out = np.full((len(steps), width), np.nan if dtype is np.float64 else False, dtype=dtype)
    for t, step in enumerate(steps):
        for layer in step.layers:
            value = read(layer)
            if value is not None and layer.layer_index < width:
                out[t, layer.layer_index] = value
    return out


def signals_from_report(report: Report, *, num_heads: int | None = None) -> SequenceSignals:
    """From a stored report (schema 0.3.0-0.5.0); per-layer arrays only when the report kept layers."""
    steps = report.timeline

    def col(read: Any) -> np.ndarray:
        return np.array([np.nan if (v := read(s)) is None else float(v) for s in steps], dtype=np.float64)

    entropy = col(lambda s: s.logits_summary.entropy)
    heads = num_heads or report.model.num_attention_heads

    def collapse_rate(layer: Any) -> float | None:
        summary = layer.attention_summary
        if summary.collapsed_head_rate is not None:
            return float(summary.collapsed_head_rate)
        if summary.collapsed_head_count is not None and heads:
            return float(summary.collapsed_head_count) / heads
        return None

    def flag(layer: Any, name: str) -> bool:
        return bool(layer.anomalies is not None and getattr(layer.anomalies, name))

    return SequenceSignals(
        model_id=report.model.hf_id,
        architecture=report.model.architecture,
        model_type=_model_type(report.model.architecture, report.model.hf_id),
        num_layers=report.model.num_layers,
        num_heads=heads,
        prompt_text=report.prompt.text,
        prompt_tokens=report.prompt.num_tokens,
        token_ids=np.array([s.token.token_id for s in steps], dtype=np.int64),
        token_texts=[s.token.token_text for s in steps],
        entropy=entropy,
        surprisal=col(lambda s: s.logits_summary.surprisal),
        top_k_margin=col(lambda s: s.logits_summary.top_k_margin),
        topk_mass=col(lambda s: s.logits_summary.topk_mass),
        perplexity=np.exp2(entropy),
        logits_nan=np.array([bool(s.logits_summary.has_nan) for s in steps], dtype=bool),
        logits_inf=np.array([bool(s.logits_summary.has_inf) for s in steps], dtype=bool),
        hidden_l2=_layer_matrix(report, lambda layer: layer.hidden_summary.l2_norm_mean),
        hidden_max_abs=_layer_matrix(report, lambda layer: layer.hidden_summary.max_abs),
        hidden_nan=_layer_matrix(report, lambda layer: flag(layer, "has_nan"), dtype=bool),
        hidden_inf=_layer_matrix(report, lambda layer: flag(layer, "has_inf"), dtype=bool),
        last_layer_sketch=_last_sketch(report),
        attn_entropy_norm=_layer_matrix(
            report, lambda layer: layer.attention_summary.entropy_mean_normalized
        ),
        attn_collapse_rate=_layer_matrix(report, collapse_rate),
        attn_concentration_max=_layer_matrix(report, lambda layer: layer.attention_summary.concentration_max),
    )


def _last_sketch(report: Report) -> np.ndarray | None:
    rows = []
    for step in report.timeline:
        if not step.layers or step.layers[-1].hidden_summary.sketch is None:
            return None
        rows.append([np.nan if v is None else v for v in step.layers[-1].hidden_summary.sketch])
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    return np.asarray(rows, dtype=np.float64)


_FAMILIES = ("mixtral", "mistral", "llama", "qwen2", "phi3", "phi", "gpt2", "t5", "bart")


def _model_type(architecture: str, hf_id: str) -> str:
    text = f"{architecture} {hf_id}".lower().replace("-", "")
    for family in _FAMILIES:
        if family in text:
            return "phi3" if family == "phi" else family
    return "default"
