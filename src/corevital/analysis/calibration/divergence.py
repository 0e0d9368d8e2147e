"""How far one run is from a calibration profile (``extensions.calibration``, ``metrics.md`` §6).

Every value is z-scored against the healthy distribution it belongs to: a step metric against its
generation-position bucket (steps beyond the calibration runs' length use the last bucket they
reached), a per-layer metric against that layer. A metric's divergence is its mean
|z|; the run's ``divergence_score`` is the mean over the metrics the run and the profile both have,
divided by 6 and capped at 1 (healthy runs sit near 0.13, the mean |z| of a normal variable / 6).

Anomalies are the values with |z| ≥ ``anomaly_z``: for step metrics, each such step; for per-layer
metrics, each layer whose median z over the run's steps is that far off (one persistent shift, not
a burst). The strongest ``max_anomalies`` are kept, largest |z| first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from corevital.analysis.calibration.profile import STEP_METRICS, CalibrationProfile, MetricStats
from corevital.analysis.calibration.risk_model import TrainingSummary
from corevital.analysis.depth import log_norms
from corevital.analysis.signals import SequenceSignals

_UNITS = {"entropy": " bits", "surprisal": " bits"}


@dataclass(frozen=True)
class MetricAnomaly:
    metric: str
    z: float
    value: float
    reference_mean: float
    reference_std: float
    step: int | None = None
    layer: int | None = None

    def describe(self) -> str:
        where = f"step {self.step}" if self.step is not None else f"layer {self.layer}"
        unit = _UNITS.get(self.metric, "")
        return (
            f"{self.metric} at {where}: {self.value:.3g}{unit} "
            f"(healthy {self.reference_mean:.3g} ± {self.reference_std:.2g}, z = {self.z:+.1f})"
        )


@dataclass(frozen=True)
class DivergenceScore:
    metric: str
    mean_abs_z: float
    values: int


@dataclass(frozen=True)
class CalibrationDivergence:
    divergence_score: float
    metrics: tuple[DivergenceScore, ...]
    anomalies: tuple[MetricAnomaly, ...]
    baseline_model_id: str
    baseline_num_runs: int
    low_attention_entropy_layers: tuple[int, ...] = ()  # layers whose attention entropy fell far below
    risk_model_training: TrainingSummary | None = None


def _step_z(
    profile: CalibrationProfile, metric: str, values: np.ndarray
) -> tuple[np.ndarray, list[MetricStats | None]]:
    """z of each step's value against its position bucket's reference, and that reference."""
    vals = np.asarray(values, dtype=np.float64)
    buckets = profile.bucket_index(np.arange(vals.size))
    per_bucket = [profile.step_stats(metric, index) for index in range(len(profile.buckets))]
    means, scales = _reference_arrays(per_bucket)
    z: np.ndarray = (vals - means[buckets]) / scales[buckets]
    return z, [per_bucket[b] for b in buckets]


def _layer_z(refs: list[MetricStats | None], values: np.ndarray) -> np.ndarray:
    vals = np.asarray(values, dtype=np.float64)
    width = min(vals.shape[1], len(refs))
    means, scales = _reference_arrays(refs[:width])
    z: np.ndarray = (vals[:, :width] - means) / scales
    return z


def _reference_arrays(refs: list[MetricStats | None]) -> tuple[np.ndarray, np.ndarray]:
    """Means and scales of references as arrays (NaN where there is none)."""
    means = np.asarray([r.mean if r is not None else np.nan for r in refs], dtype=np.float64)
    scales = np.asarray([r.scale if r is not None else np.nan for r in refs], dtype=np.float64)
    return means, scales


def score_divergence(
    sig: SequenceSignals,
    profile: CalibrationProfile,
    *,
    anomaly_z: float = 4.0,
    max_anomalies: int = 20,
) -> CalibrationDivergence:
    metrics: list[DivergenceScore] = []
    anomalies: list[MetricAnomaly] = []
    series = {
        "entropy": sig.entropy,
        "margin": sig.top_k_margin,
        "surprisal": sig.surprisal,
        "topk_mass": sig.topk_mass,
    }
    for metric in STEP_METRICS:
        z, stats = _step_z(profile, metric, series[metric])
        _add_metric(metrics, metric, z)
        for step in np.flatnonzero(np.abs(np.nan_to_num(z)) >= anomaly_z):
            ref = stats[int(step)]
            assert ref is not None
            anomalies.append(
                MetricAnomaly(
                    metric, float(z[step]), float(series[metric][step]), ref.mean, ref.std, step=int(step)
                )
            )
    low_attention: tuple[int, ...] = ()
    if sig.hidden_l2 is not None and np.ndim(sig.hidden_l2) == 2 and sig.num_steps:
        refs = [ref.log_l2 for ref in profile.layers]
        logs = log_norms(sig.hidden_l2)
        z = _layer_z(refs, logs)
        _add_metric(metrics, "log_l2_norm", z)
        anomalies.extend(_layer_anomalies("log_l2_norm", z, logs, refs, anomaly_z))
    if sig.attn_entropy_norm is not None and np.ndim(sig.attn_entropy_norm) == 2 and sig.num_steps:
        refs = [ref.attention_entropy for ref in profile.layers]
        values = np.asarray(sig.attn_entropy_norm, dtype=np.float64)
        z = _layer_z(refs, values)
        _add_metric(metrics, "attention_entropy", z)
        found = _layer_anomalies("attention_entropy", z, values, refs, anomaly_z)
        anomalies.extend(found)
        low_attention = tuple(a.layer for a in found if a.z < 0 and a.layer is not None)
    mean_abs = [m.mean_abs_z for m in metrics]
    score = min(1.0, float(np.mean(mean_abs)) / 6.0) if mean_abs else 0.0
    anomalies.sort(key=lambda a: (-abs(a.z), a.metric, a.step or 0, a.layer or 0))
    return CalibrationDivergence(
        divergence_score=score,
        metrics=tuple(metrics),
        anomalies=tuple(anomalies[:max_anomalies]),
        baseline_model_id=profile.model.model_id,
        baseline_num_runs=profile.num_runs,
        low_attention_entropy_layers=tuple(sorted(low_attention)),
        risk_model_training=profile.risk_model.training if profile.risk_model is not None else None,
    )


def _add_metric(out: list[DivergenceScore], metric: str, z: np.ndarray) -> None:
    ok = np.isfinite(z)
    if ok.any():
        out.append(DivergenceScore(metric, float(np.abs(z[ok]).mean()), int(ok.sum())))


def _layer_anomalies(
    metric: str, z: np.ndarray, values: np.ndarray, refs: list[MetricStats | None], bound: float
) -> list[MetricAnomaly]:
    found = []
    for layer in range(z.shape[1]):
        column = z[:, layer]
        ok = np.isfinite(column)
        ref = refs[layer]
        if not ok.any() or ref is None:
            continue
        median_z = float(np.median(column[ok]))
        if abs(median_z) < bound:
            continue
        value = float(np.median(values[:, layer][ok]))
        mean, std = ref.mean, ref.std
        if metric == "log_l2_norm":  # shown as norms, not their logs
            value, mean, std = math.exp(value), math.exp(mean), math.exp(mean) * std
            metric_name = "l2_norm"
        else:
            metric_name = metric
        found.append(MetricAnomaly(metric_name, median_z, value, mean, std, layer=layer))
    return found
