"""PNG plots of measured detection quality: reliability diagrams and ROC curves, one line per score.

matplotlib is optional (``pip install "corevital[validate]"``) and imported only when a plot is drawn.
Figures are built with matplotlib's object API (``matplotlib.figure.Figure`` rendered by the Agg
canvas), never through ``pyplot``: no global backend is switched, an application that already uses
pyplot interactively is left alone, and no figure lingers in pyplot's registry after a call.

Each :class:`PlotSeries` is one score on one labelled set (labels: 1 = failure, 0 = success; scores:
higher = more likely failure). The reliability diagram needs probabilities in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corevital.analysis.evaluation import auroc, compute_ece, reliability_bins, roc_curve
from corevital.errors import NotAvailableError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
LINESTYLES = ("-", "--", ":", "-.")
INSTALL_HINT = 'plots need matplotlib: pip install "corevital[validate]"'


@dataclass(frozen=True)
class PlotSeries:
    name: str
    scores: np.ndarray
    labels: np.ndarray


def _new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise NotAvailableError(INSTALL_HINT) from exc
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _check_series(series: Sequence[PlotSeries]) -> None:
    if not series:
        raise ValueError("at least one series is needed for a plot")
    names = [s.name for s in series]
    if len(set(names)) != len(names):
        raise ValueError(f"series names must be distinct, got {names}")


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=DPI)
    figure.clear()
    return out


def write_reliability_diagram(
    path: str | os.PathLike[str],
    series: Sequence[PlotSeries],
    *,
    n_bins: int = 10,
    title: str = "Reliability diagram",
) -> Path:
    """Observed failure rate against mean predicted probability per bin, with bin counts below.

    Each series is drawn at the non-empty bins of ``n_bins`` equal-width bins on [0, 1]; its ECE
    and size are in the legend. The lower panel shows how many records fall in each bin.
    """
    _check_series(series)
    binned = [reliability_bins(s.scores, s.labels, n_bins) for s in series]
    eces = [compute_ece(s.scores, s.labels, n_bins) for s in series]
    figure = _new_figure(6.4, 6.4)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="0.55", linewidth=1.0, label="perfectly calibrated")
    width = 1.0 / n_bins
    bar_width = width * 0.8 / len(series)
    for k, (one, bins, ece) in enumerate(zip(series, binned, eces, strict=True)):
        color = f"C{k % 10}"
        full = bins.counts > 0
        label = f"{one.name} (ECE {ece:.3f}, n={int(bins.counts.sum())})"
        top.plot(
            bins.mean_predicted[full],
            bins.observed_rate[full],
            marker="o",
            markersize=5,
            linewidth=1.6,
            color=color,
            label=label,
        )
        left = bins.edges[:-1] + width * 0.1 + k * bar_width
        bottom.bar(left, bins.counts, width=bar_width, align="edge", color=color, alpha=0.8, label=one.name)
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="Observed failure rate", title=title)
    top.set_aspect("auto")
    top.grid(True, color="0.9", linewidth=0.8)
    top.legend(loc="upper left", fontsize="small", frameon=True)
    bottom.set(xlabel="Predicted probability of failure (bin)", ylabel="Records")
    bottom.set_xticks(np.round(np.linspace(0, 1, 6), 2))
    bottom.grid(True, axis="y", color="0.9", linewidth=0.8)
    return _save(figure, path)


def write_roc_curves(
    path: str | os.PathLike[str],
    series: Sequence[PlotSeries],
    *,
    title: str = "ROC curves",
) -> Path:
    """One ROC curve per series (AUROC in the legend) over the chance diagonal."""
    _check_series(series)
    curves = [roc_curve(s.scores, s.labels) for s in series]
    figure = _new_figure(6.0, 6.0)
    axes: Any = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.55", linewidth=1.0, label="chance (AUROC 0.500)")
    ranked = sorted(
        zip(series, curves, range(len(series)), strict=True), key=lambda t: -auroc(t[0].scores, t[0].labels)
    )
    for one, curve, k in ranked:  # legend ordered best first, colours by input order
        score = auroc(one.scores, one.labels)
        n_pos = int(np.asarray(one.labels).sum())
        label = f"{one.name} (AUROC {score:.3f}, {n_pos}/{np.asarray(one.labels).size} failures)"
        style = LINESTYLES[k % len(LINESTYLES)]  # a rescaled score has the same curve: keep both visible
        axes.plot(curve.fpr, curve.tpr, linewidth=1.8, linestyle=style, color=f"C{k % 10}", label=label)
    axes.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="False-positive rate (successes flagged)",
        ylabel="True-positive rate (failures caught)",
        title=title,
    )
    axes.set_aspect("equal")
    axes.grid(True, color="0.9", linewidth=0.8)
    axes.legend(loc="lower right", fontsize="small", frameon=True)
    return _save(figure, path)
