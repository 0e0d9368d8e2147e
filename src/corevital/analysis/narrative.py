"""The narrative (``metrics.md`` §6): 2–6 sentences built from the run's actual values.

In order, each only when it has something to say: the risk and what drove it; the peak entropy with
its step and token, the mean and the trend (over the finite steps only: steps whose entropy is NaN
never make a trend); the hard findings (NaN/Inf, repetition loop, mid-layer
anomaly, attention collapse); the compound signals; the most-blamed layer; a recommendation when
the risk is high. Steps are 0-based generated-token indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corevital.analysis.blame import LayerBlame
from corevital.analysis.compound import CompoundFinding
from corevital.analysis.health import HealthReport
from corevital.analysis.repetition import RepetitionFinding
from corevital.analysis.risk import Risk, entropy_trend
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import fmean

HIGH_RISK = 0.7
MODERATE_RISK = 0.3
TREND_BITS = 0.5  # last-third minus first-third mean entropy (finite steps) that counts as a trend


@dataclass(frozen=True)
class NarrativeText:
    summary: str
    sentences: tuple[str, ...]


def _names(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _risk_sentence(risk: Risk) -> str:
    level = (
        "High" if risk.risk_score >= HIGH_RISK else "Moderate" if risk.risk_score >= MODERATE_RISK else "Low"
    )
    text = f"{level} risk (score {risk.risk_score:.2f})"
    if risk.risk_factors:
        names = [f.removeprefix("compound:").replace("_", " ") for f in risk.risk_factors[:3]]
        text += ", driven mainly by " + _names(names)
    return text + "."


def _entropy_sentence(sig: SequenceSignals) -> str:
    e = sig.entropy
    ok = np.isfinite(e)
    if not ok.any():
        return f"{sig.num_steps} tokens were generated but no entropy could be computed."
    peak = int(np.nanargmax(np.where(ok, e, -np.inf)))
    token = sig.token_texts[peak] if peak < len(sig.token_texts) else "?"
    n, finite_steps = sig.num_steps, int(ok.sum())
    trend = entropy_trend(e)  # over the finite steps only: a NaN step never makes a trend
    if np.isfinite(trend):
        change = round(trend, 2) + 0.0  # + 0.0: no "-0.00"
        word = "rising" if change > TREND_BITS else "falling" if change < -TREND_BITS else "stable"
        thirds = "thirds" if finite_steps == n else "thirds of the finite steps"
        trend_text = f"trend {word} ({change:+.2f} bits from the first to the last of the {thirds})"
    elif finite_steps < n:
        trend_text = "too few finite steps for a trend"
    else:
        trend_text = "too few steps for a trend"
    over = f"{n} tokens" if finite_steps == n else f"{finite_steps} finite of {n} tokens"
    return (
        f"Peak entropy {e[peak]:.2f} bits at step {peak} (token {token!r}); "
        f"mean {fmean(e):.2f} bits over {over}, {trend_text}."
    )


def _loop_text(rep: RepetitionFinding) -> str:
    if rep.level == "words":
        text = (
            f"the output loops from step {rep.first_step} to {rep.last_step}: the words {rep.unit!r} "
            f"repeat {rep.repeats:.1f} times (a {rep.period_words}-word period, {rep.span} tokens)"
        )
    else:
        text = (
            f"the output loops from step {rep.first_step}: a {rep.period}-token block {rep.repeated_text!r} "
            f"repeats {rep.repeats:.1f} times ({rep.span} tokens)"
        )
    return text + (", as the prompt asks" if rep.requested else "")


def _findings_sentence(health: HealthReport) -> str | None:
    parts: list[str] = []
    numeric = health.numeric
    if numeric.nan_detected or numeric.inf_detected:
        first = min(s for s in (numeric.first_nan_step, numeric.first_inf_step) if s is not None)
        kinds = "/".join(k for k, on in (("NaN", numeric.nan_detected), ("Inf", numeric.inf_detected)) if on)
        parts.append(f"{kinds} values appeared at step {first} (in {_names(list(numeric.sources))})")
    rep = health.repetition
    if rep.detected:
        parts.append(_loop_text(rep))
    if health.mid_layer.detected:
        layers = _names([str(i) for i in health.mid_layer.layers])
        parts.append(f"middle layer {layers} shows abnormal hidden-state norms")
    collapse = health.collapse
    if collapse.detected:
        where = (
            f" in layers {_names([str(i) for i in collapse.trend_layers[:5]])}"
            if collapse.trend_layers
            else ""
        )
        parts.append(f"attention collapsed (severity {collapse.severity:.2f}){where}")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _compound_sentence(compound: tuple[CompoundFinding, ...]) -> str | None:
    if not compound:
        return None
    items = [
        f"{s.name.replace('_', ' ')} (severity {s.severity:.2f}, from step {s.first_step})" for s in compound
    ]
    return "Compound signals: " + _names(items) + "."


def _blame_sentence(blamed: tuple[LayerBlame, ...]) -> str | None:
    if not blamed:
        return None
    top = blamed[0]
    text = f"Layer {top.layer} is blamed most ({_names([r.replace('_', ' ') for r in top.reasons])}"
    text += f", severity {top.severity:.2f})"
    if len(blamed) > 1:
        text += f", then layer {_names([str(b.layer) for b in blamed[1:4]])}"
    return text + "."


def _recommendation(risk: Risk, health: HealthReport) -> str | None:
    if risk.risk_score < HIGH_RISK:
        return None
    if health.flags.nan_detected or health.flags.inf_detected:
        return (
            "Recommendation: do not use this output; check the weights, dtype and quantization "
            "(rerun in float32 to confirm)."
        )
    if health.flags.repetition_loop_detected and not health.repetition.requested:
        return (
            "Recommendation: discard the looping tail and add a repetition penalty, "
            "a stop sequence or a lower token limit."
        )
    if health.flags.mid_layer_anomaly_detected:
        return "Recommendation: inspect the blamed layer's activations before trusting this output."
    return (
        "Recommendation: treat this output as unreliable; ground the prompt, lower the temperature or retry."
    )


def build_narrative(
    sig: SequenceSignals,
    health: HealthReport,
    risk: Risk,
    compound: tuple[CompoundFinding, ...],
    blamed: tuple[LayerBlame, ...],
) -> NarrativeText:
    sentences = [_risk_sentence(risk)]
    if sig.num_steps == 0:
        sentences.append("No tokens were generated, so there is no timeline to analyse.")
    else:
        sentences.append(_entropy_sentence(sig))
    for extra in (
        _findings_sentence(health),
        _compound_sentence(compound),
        _blame_sentence(blamed),
        _recommendation(risk, health),
    ):
        if extra:
            sentences.append(extra)
    return NarrativeText(summary=" ".join(sentences), sentences=tuple(sentences))
