"""Compound signals (``metrics.md`` §6): multi-metric failure patterns, each with cited evidence.

- ``context_loss``: recent entropy high while the prompt's basin scores are low (the middle of the
  prompt is being ignored). Needs prompt basin scores; without them it is not evaluated.
- ``confident_confusion``: steps whose distribution is diffuse (high entropy) yet dominated by one
  token (high top-1/top-2 margin): fluent output the model is not actually sure of.
- ``degenerating_generation``: from the first third of the run to the last, entropy and surprisal
  rise while the margin falls.
- ``attention_bottleneck``: steps with a high collapsed-head rate (denominator: layers × the
  model's true head count) and high entropy.
- ``confident_repetition_risk``: a window of low entropy and near-total top-10 mass in which most
  tokens continue an n-gram already generated: the model is confidently re-emitting itself.

Thresholds come from the model profile. Step numbers are 0-based generated-token indices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from corevital.analysis.collapse import step_collapse_rate
from corevital.analysis.profiles import CompoundProfile
from corevital.analysis.signals import SequenceSignals
from corevital.analysis.stats import clip, fmean, rolling_mean

DESCRIPTIONS = {
    "context_loss": "High entropy with low prompt basin scores: the model appears to lose track of the "
    "middle of its context.",
    "confident_confusion": "Diffuse distributions that are still dominated by one token: plausible-looking "
    "output the model is not actually sure of.",
    "degenerating_generation": "Entropy and surprisal rise while the confidence margin falls: output "
    "quality is degrading over the run.",
    "attention_bottleneck": "Many collapsed attention heads together with high entropy: information flow "
    "through attention looks restricted.",
    "confident_repetition_risk": "Very low entropy and near-total top-10 mass while re-emitting n-grams it "
    "already produced: the model may be locking into repetition.",
}


@dataclass(frozen=True)
class CompoundFinding:
    name: str
    description: str
    severity: float
    evidence: tuple[str, ...]
    first_step: int | None = None


def _token(sig: SequenceSignals, t: int) -> str:
    return repr(sig.token_texts[t]) if 0 <= t < len(sig.token_texts) else "?"


def _examples(steps: np.ndarray, describe: Callable[[int], str], limit: int = 3) -> str:
    return "; ".join(describe(int(t)) for t in steps[:limit])


def context_loss(
    sig: SequenceSignals,
    p: CompoundProfile,
    basin_scores: Sequence[Sequence[float]] | np.ndarray | None,
    context_share: float | None = None,
) -> CompoundFinding | None:
    """High recent entropy while the prompt reads poorly: low basin scores (the middle of the prompt
    is ignored) or, with a RAG context span, little of the later prompt's attention on the context."""
    if sig.num_steps == 0:
        return None
    basin = np.nan
    if basin_scores is not None:
        rows = [np.asarray(row, dtype=np.float64).reshape(-1) for row in basin_scores]
        flat = np.concatenate(rows) if rows else np.zeros(0)
        flat = flat[np.isfinite(flat)]
        basin = float(flat.mean()) if flat.size else np.nan
    share = np.nan if context_share is None else float(context_share)
    if np.isnan(basin) and np.isnan(share):
        return None  # nothing known about how the prompt was read: do not guess
    recent = fmean(sig.entropy[-p.window :], default=np.nan)
    basin_low = basin < p.context_loss_basin_max
    share_low = share < p.context_loss_rag_share_min
    if not (recent > p.context_loss_entropy_bits and (basin_low or share_low)):
        return None
    ent_x = (recent - p.context_loss_entropy_bits) / max(p.context_loss_entropy_bits, 1e-3)
    read_x = max(
        (p.context_loss_basin_max - basin) / max(p.context_loss_basin_max, 1e-3) if basin_low else 0.0,
        (p.context_loss_rag_share_min - share) / max(p.context_loss_rag_share_min, 1e-3)
        if share_low
        else 0.0,
    )
    first = max(0, sig.num_steps - p.window)
    evidence = [
        f"mean entropy {recent:.2f} bits over steps {first}-{sig.num_steps - 1} "
        f"(> {p.context_loss_entropy_bits:g})"
    ]
    if not np.isnan(basin):
        evidence.append(
            f"mean prompt basin score {basin:.2f} "
            f"(< {p.context_loss_basin_max:g} is low; uniform attention gives 0.5)"
        )
    if not np.isnan(share):
        evidence.append(
            f"{100 * share:.0f}% of the later prompt's attention lands on the RAG context "
            f"(< {100 * p.context_loss_rag_share_min:.0f}% is low)"
        )
    return CompoundFinding(
        name="context_loss",
        description=DESCRIPTIONS["context_loss"],
        severity=round(clip(0.5 + 0.25 * clip(ent_x, 0, 1) + 0.25 * clip(read_x, 0, 1), 0, 1), 4),
        evidence=tuple(evidence),
        first_step=first,
    )


def confident_confusion(sig: SequenceSignals, p: CompoundProfile) -> CompoundFinding | None:
    with np.errstate(invalid="ignore"):
        mask = (sig.entropy > p.confusion_entropy_bits) & (sig.top_k_margin > p.confusion_margin_min)
    steps = np.flatnonzero(mask)
    if steps.size < p.confusion_min_steps:
        return None
    share = steps.size / sig.num_steps

    def describe(t: int) -> str:
        return (
            f"step {t} {_token(sig, t)}: entropy {sig.entropy[t]:.2f} bits, margin {sig.top_k_margin[t]:.2f}"
        )

    return CompoundFinding(
        name="confident_confusion",
        description=DESCRIPTIONS["confident_confusion"],
        severity=round(clip(0.35 + 0.65 * clip(3.0 * share, 0, 1), 0, 1), 4),
        evidence=(
            f"{steps.size} of {sig.num_steps} steps with entropy > {p.confusion_entropy_bits:g} bits "
            f"and margin > {p.confusion_margin_min:g}",
            _examples(steps, describe),
        ),
        first_step=int(steps[0]),
    )


def degenerating_generation(sig: SequenceSignals, p: CompoundProfile) -> CompoundFinding | None:
    n = sig.num_steps
    if n < p.degeneration_min_steps:
        return None
    third = n // 3
    head, tail = slice(0, third), slice(n - third, n)

    def change(values: np.ndarray) -> float:
        return fmean(values[tail], default=np.nan) - fmean(values[head], default=np.nan)

    ent, margin, surp = change(sig.entropy), -change(sig.top_k_margin), change(sig.surprisal)
    if not (
        ent > p.degeneration_entropy_rise_bits
        and margin > p.degeneration_margin_drop
        and surp > p.degeneration_surprisal_rise_bits
    ):
        return None
    excess = min(
        ent / p.degeneration_entropy_rise_bits,
        margin / p.degeneration_margin_drop,
        surp / p.degeneration_surprisal_rise_bits,
    )
    span = f"steps 0-{third - 1} vs {n - third}-{n - 1}"
    return CompoundFinding(
        name="degenerating_generation",
        description=DESCRIPTIONS["degenerating_generation"],
        severity=round(clip(0.5 + 0.25 * (excess - 1.0), 0.5, 1.0), 4),
        evidence=(
            f"entropy +{ent:.2f} bits ({span})",
            f"margin -{margin:.2f} ({span})",
            f"surprisal +{surp:.2f} bits ({span})",
        ),
        first_step=n - third,
    )


def attention_bottleneck(sig: SequenceSignals, p: CompoundProfile) -> CompoundFinding | None:
    rate = step_collapse_rate(sig.attn_collapse_rate)
    if rate is None or rate.shape[0] != sig.num_steps:
        return None
    with np.errstate(invalid="ignore"):
        mask = (rate > p.bottleneck_collapse_rate) & (sig.entropy > p.bottleneck_entropy_bits)
    steps = np.flatnonzero(mask)
    if steps.size < p.bottleneck_min_steps:
        return None
    total_heads = max(1, sig.num_layers * sig.num_heads)
    peak = int(steps[np.argmax(rate[steps])])

    def describe(t: int) -> str:
        return f"step {t}: {rate[t]:.0%} of heads collapsed, entropy {sig.entropy[t]:.2f} bits"

    share = steps.size / sig.num_steps
    return CompoundFinding(
        name="attention_bottleneck",
        description=DESCRIPTIONS["attention_bottleneck"],
        severity=round(clip(0.4 + 0.3 * clip(3.0 * share, 0, 1) + 0.3 * float(rate[peak]), 0, 1), 4),
        evidence=(
            f"{steps.size} steps with more than {p.bottleneck_collapse_rate:.0%} of the "
            f"{sig.num_layers}×{sig.num_heads} = {total_heads} heads collapsed and entropy "
            f"> {p.bottleneck_entropy_bits:g} bits",
            f"peak at step {peak}: {rate[peak]:.0%} (~{round(rate[peak] * total_heads)} heads)",
            _examples(steps, describe),
        ),
        first_step=int(steps[0]),
    )


def ngram_repeats(token_ids: np.ndarray, n: int) -> np.ndarray:
    """``[T]`` bool: the n-gram ending at step t already ended at an earlier step."""
    ids = [int(i) for i in np.asarray(token_ids).reshape(-1)]
    out = np.zeros(len(ids), dtype=bool)
    seen: set[tuple[int, ...]] = set()
    for t in range(n - 1, len(ids)):
        gram = tuple(ids[t - n + 1 : t + 1])
        out[t] = gram in seen
        seen.add(gram)
    return out


def confident_repetition_risk(sig: SequenceSignals, p: CompoundProfile) -> CompoundFinding | None:
    n, w = sig.num_steps, p.window
    if n < w:
        return None
    repeats = ngram_repeats(sig.token_ids, p.repetition_risk_ngram).astype(np.float64)
    share = rolling_mean(repeats, w)
    ent = rolling_mean(sig.entropy, w)
    mass = rolling_mean(sig.topk_mass, w)
    ends = np.arange(n) >= w - 1
    with np.errstate(invalid="ignore"):
        mask = (
            ends
            & (ent < p.repetition_risk_entropy_bits)
            & (mass > p.repetition_risk_mass)
            & (share >= p.repetition_risk_share)
        )
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return None
    end = int(hits[0])
    start = end - w + 1
    covered = hits.size / max(1, n - w + 1)
    return CompoundFinding(
        name="confident_repetition_risk",
        description=DESCRIPTIONS["confident_repetition_risk"],
        severity=round(clip(0.4 + 0.3 * float(share[end]) + 0.3 * clip(2.0 * covered, 0, 1), 0, 1), 4),
        evidence=(
            f"steps {start}-{end}: mean entropy {ent[end]:.2f} bits (< {p.repetition_risk_entropy_bits:g}), "
            f"top-10 mass {mass[end]:.3f} (> {p.repetition_risk_mass:g})",
            f"{share[end]:.0%} of those tokens repeat an earlier {p.repetition_risk_ngram}-gram",
            f"{hits.size} windows of {w} steps qualify",
        ),
        first_step=start,
    )


def detect_compound_signals(
    sig: SequenceSignals,
    profile: CompoundProfile,
    *,
    basin_scores: Sequence[Sequence[float]] | np.ndarray | None = None,
    context_share: float | None = None,
) -> tuple[CompoundFinding, ...]:
    """Every compound signal that fires, in the spec's order."""
    if sig.num_steps == 0:
        return ()
    found = (
        context_loss(sig, profile, basin_scores, context_share),
        confident_confusion(sig, profile),
        degenerating_generation(sig, profile),
        attention_bottleneck(sig, profile),
        confident_repetition_risk(sig, profile),
    )
    return tuple(s for s in found if s is not None)
