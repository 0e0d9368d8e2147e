"""The Prometheus metrics of CoreVital's runs: their definitions, and their values accumulated run by run.

Every metric is defined once, in :data:`METRICS`: the exporter (``--sink prometheus``), the
``/metrics`` route of ``corevital serve``, the Grafana dashboard and the alert rules all use these
names. Run series carry the labels of :data:`RUN_LABELS` only (model, device, quantization,
capture mode), flag series ``flag`` and ``model``: never a trace id, a prompt or anything else
unbounded. Distinct models are capped (:data:`DEFAULT_MAX_MODELS`; later ones count under
``model="other"``), and so are distinct flag names.

:class:`RunMetrics` accumulates the values from index rows (:class:`~corevital.sinks.rows.TraceRow`,
what a store holds and what :func:`~corevital.sinks.rows.trace_row_from_report` makes of a
report), each counted with its sampling weight. This module imports no ``prometheus_client``:
:mod:`corevital.exporters.prometheus` turns the values into metric families.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from corevital.report.schema import Report
from corevital.sinks.rows import TraceRow

MetricKind = Literal["counter", "gauge", "histogram"]

RUN_LABELS: Final = ("model", "device", "quantization", "capture_mode")
"""The labels of every run series: bounded sets of values."""

FLAG_LABELS: Final = ("flag", "model")
"""The labels of :data:`FLAGS`."""

RISK_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BITS_BUCKETS: Final = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)
# vLLM's bounds for its time-to-first-token and time-per-output-token histograms (seconds).
TTFT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
TPOT_BUCKETS: Final = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

DEFAULT_MAX_MODELS: Final = 200
"""Distinct ``model`` label values kept; runs of further models count under ``model="other"``."""

MAX_FLAG_NAMES: Final = 32
"""Distinct ``flag`` label values kept (health flags and compound signals); further ones are ``other``."""

MAX_LABEL_CHARS: Final = 200
OTHER: Final = "other"
_FLAG_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its exposed name (counters end in ``_total``), kind, help text and labels."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = RUN_LABELS
    buckets: tuple[float, ...] = ()

    @property
    def family(self) -> str:
        """The family name as ``prometheus_client`` takes it (a counter's without ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names a scrape shows (a histogram's ``_bucket``, ``_sum`` and ``_count``)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


RUNS = MetricSpec(
    "corevital_runs_total",
    "counter",
    "Runs, each counted with its sampling weight (the runs it stands for), so rates hold under sampling.",
)
RUNS_KEPT = MetricSpec(
    "corevital_runs_kept_total", "counter", "Runs kept by sampling (stored or exported), one each."
)
FLAGS = MetricSpec(
    "corevital_flag_total",
    "counter",
    "Runs in which a health flag or compound signal fired, by flag, with sampling weights.",
    FLAG_LABELS,
)
NONFINITE = MetricSpec(
    "corevital_nonfinite_runs_total",
    "counter",
    "Runs with NaN or Inf in the logits or hidden states, with sampling weights.",
)
GENERATED_TOKENS = MetricSpec(
    "corevital_generated_tokens_total", "counter", "Generated tokens, with sampling weights."
)
PROMPT_TOKENS = MetricSpec(
    "corevital_prompt_tokens_total", "counter", "Prompt tokens, with sampling weights."
)
RISK = MetricSpec(
    "corevital_risk_score",
    "histogram",
    "Risk score of the runs that have one (0 to 1, higher is riskier), with sampling weights.",
    buckets=RISK_BUCKETS,
)
ENTROPY = MetricSpec(
    "corevital_entropy_bits",
    "histogram",
    "Mean next-token entropy of a run's generated tokens, in bits, with sampling weights.",
    buckets=BITS_BUCKETS,
)
SURPRISAL = MetricSpec(
    "corevital_surprisal_bits",
    "histogram",
    "Mean surprisal of a run's generated tokens (-log2 of the chosen token's probability), in bits.",
    buckets=BITS_BUCKETS,
)
TTFT = MetricSpec(
    "corevital_time_to_first_token_seconds",
    "histogram",
    "Time to first token of a run's sequence (tokenizing and the prompt pass), in seconds, with "
    "sampling weights (from exported reports; runs read back from a store carry none).",
    buckets=TTFT_BUCKETS,
)
TPOT = MetricSpec(
    "corevital_time_per_output_token_seconds",
    "histogram",
    "Mean time between a run's generated tokens after the first, in seconds, one value per run, "
    "with sampling weights (from exported reports; runs read back from a store carry none).",
    buckets=TPOT_BUCKETS,
)
LAST_RUN = MetricSpec(
    "corevital_last_run_timestamp_seconds", "gauge", "Creation time of the newest run, in Unix seconds."
)

METRICS: Final = (
    RUNS,
    RUNS_KEPT,
    FLAGS,
    NONFINITE,
    GENERATED_TOKENS,
    PROMPT_TOKENS,
    RISK,
    ENTROPY,
    SURPRISAL,
    TTFT,
    TPOT,
    LAST_RUN,
)
"""Every metric CoreVital exposes, in exposition order."""

METRIC_NAMES: Final = frozenset(name for spec in METRICS for name in spec.series)
"""Every sample name a scrape can show."""


@dataclass
class Histogram:
    """Weighted counts per bucket (the last is ``+Inf``), their sum of values and their total."""

    bounds: tuple[float, ...]
    counts: list[float] = field(default_factory=list)
    total: float = 0.0
    count: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0.0] * (len(self.bounds) + 1)

    def observe(self, value: float | None, weight: float) -> None:
        if value is None or not math.isfinite(value):
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += weight  # the first bound >= value
        self.total += value * weight
        self.count += weight

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as exposed: counts of values at or below each bound, then ``+Inf``."""
        pairs, running = [], 0.0
        for bound, count in zip([*map(_le, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class Series:
    """The values of one set of run labels."""

    runs: float = 0.0
    kept: float = 0.0
    nonfinite: float = 0.0
    generated_tokens: float = 0.0
    prompt_tokens: float = 0.0
    last_run_s: float = 0.0
    risk: Histogram = field(default_factory=lambda: Histogram(RISK_BUCKETS))
    entropy: Histogram = field(default_factory=lambda: Histogram(BITS_BUCKETS))
    surprisal: Histogram = field(default_factory=lambda: Histogram(BITS_BUCKETS))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(TPOT_BUCKETS))

    def copy(self) -> Series:
        return replace(
            self,
            risk=self.risk.copy(),
            entropy=self.entropy.copy(),
            surprisal=self.surprisal.copy(),
            ttft=self.ttft.copy(),
            tpot=self.tpot.copy(),
        )


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of the values, for one scrape."""

    series: dict[tuple[str, ...], Series]
    flags: dict[tuple[str, str], float]


def _label(value: str | None, missing: str) -> str:
    if not value:
        return missing
    return value[:MAX_LABEL_CHARS]


def row_time_s(row: TraceRow) -> float:
    """The row's creation time in Unix seconds."""
    return row.created_at_ms / 1000.0


class RunMetrics:
    """The metrics' values accumulated over runs (thread-safe: ``add_row`` and ``snapshot`` lock)."""

    def __init__(self, *, max_models: int = DEFAULT_MAX_MODELS) -> None:
        self.max_models = max_models
        self._series: dict[tuple[str, ...], Series] = {}
        self._flags: dict[tuple[str, str], float] = {}
        self._models: set[str] = set()
        self._flag_names: set[str] = set()
        self._lock = threading.Lock()

    def add_row(
        self,
        row: TraceRow,
        *,
        weight: float = 1.0,
        signals: Iterable[str] = (),
        latency: tuple[float | None, float | None] = (None, None),
    ) -> None:
        """Count one run from its index row, standing for ``weight`` runs; ``signals`` are the names
        of compound signals that fired (health flags come from the row); ``latency`` is the run's
        time to first token and mean time per output token, in seconds (from its report)."""
        flags = [flag.short_name for flag in row.flags_set()]
        flags += [name for name in signals if name not in flags]
        nonfinite = row.nan_detected is True or row.inf_detected is True
        with self._lock:
            model = self._model(row.model_id)
            key = (
                model,
                _label(row.device, "unknown"),
                _label(row.quantization, "none"),
                _label(row.capture_mode, "unknown"),
            )
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = Series()
            series.runs += weight
            series.kept += 1
            series.nonfinite += weight if nonfinite else 0.0
            series.generated_tokens += row.generated_tokens * weight
            series.prompt_tokens += row.prompt_tokens * weight
            series.last_run_s = max(series.last_run_s, row_time_s(row))
            series.risk.observe(row.risk_score, weight)
            series.entropy.observe(row.mean_entropy, weight)
            series.surprisal.observe(row.mean_surprisal, weight)
            series.ttft.observe(latency[0], weight)
            series.tpot.observe(latency[1], weight)
            for name in flags:
                flag_key = (self._flag(name), model)
                self._flags[flag_key] = self._flags.get(flag_key, 0.0) + weight

    def snapshot(self) -> Snapshot:
        """A copy of the current values."""
        with self._lock:
            series = {key: value.copy() for key, value in self._series.items()}
            return Snapshot(series, dict(self._flags))

    def _model(self, model_id: str) -> str:
        model = _label(model_id, "unknown")
        if model in self._models:
            return model
        if len(self._models) >= self.max_models:
            return OTHER
        self._models.add(model)
        return model

    def _flag(self, name: str) -> str:
        if name in self._flag_names:
            return name
        if _FLAG_NAME.fullmatch(name) is None or len(self._flag_names) >= MAX_FLAG_NAMES:
            return OTHER
        self._flag_names.add(name)
        return name


def report_latency(report: Report) -> tuple[float | None, float | None]:
    """A report's time to first token and mean time per output token, in seconds (None: not measured)."""
    summary = report.summary
    ttft = summary.ttft_ms / 1000.0 if summary.ttft_ms is not None else None
    itl = summary.inter_token_ms
    tpot = itl.mean / 1000.0 if itl is not None and itl.mean is not None else None
    return ttft, tpot


def samples(snapshot: Snapshot) -> dict[MetricSpec, list[tuple[str, dict[str, str], float]]]:
    """The samples of every metric in ``snapshot``: ``(sample name, labels, value)`` per metric."""
    out: dict[MetricSpec, list[tuple[str, dict[str, str], float]]] = {spec: [] for spec in METRICS}
    scalar = {
        RUNS: "runs",
        RUNS_KEPT: "kept",
        NONFINITE: "nonfinite",
        GENERATED_TOKENS: "generated_tokens",
        PROMPT_TOKENS: "prompt_tokens",
        LAST_RUN: "last_run_s",
    }
    histograms = {RISK: "risk", ENTROPY: "entropy", SURPRISAL: "surprisal", TTFT: "ttft", TPOT: "tpot"}
    for key in sorted(snapshot.series):
        series = snapshot.series[key]
        labels = dict(zip(RUN_LABELS, key, strict=True))
        for spec, attribute in scalar.items():
            out[spec].append((spec.name, labels, float(getattr(series, attribute))))
        for spec, attribute in histograms.items():
            histogram: Histogram = getattr(series, attribute)
            for le, count in histogram.cumulative():
                out[spec].append((f"{spec.name}_bucket", {**labels, "le": le}, count))
            out[spec].append((f"{spec.name}_sum", labels, histogram.total))
            out[spec].append((f"{spec.name}_count", labels, histogram.count))
    for (flag, model), value in sorted(snapshot.flags.items()):
        out[FLAGS].append((FLAGS.name, {"flag": flag, "model": model}, value))
    return out


__all__ = [
    "BITS_BUCKETS",
    "DEFAULT_MAX_MODELS",
    "FLAGS",
    "FLAG_LABELS",
    "MAX_FLAG_NAMES",
    "METRICS",
    "METRIC_NAMES",
    "RISK_BUCKETS",
    "RUN_LABELS",
    "TPOT",
    "TTFT",
    "MetricSpec",
    "RunMetrics",
    "Snapshot",
    "report_latency",
    "samples",
]
