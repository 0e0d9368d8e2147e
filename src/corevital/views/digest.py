"""What a person wants to see of one stored run, read from its report JSON document.

:func:`digest_document` reads the parsed report JSON (``json.loads`` of
:meth:`~corevital.sinks.base.ReportStore.get_json`) without building the pydantic models, so that
``corevital show`` starts fast; the terminal, the comparison and the server all use the same
:class:`RunDigest`. A missing or malformed part of a document is read as absent, never an error:
reports of every schema version the store holds can be shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from corevital.analysis.hashing import prompt_hash
from corevital.sinks.rows import HealthFlag, finite_mean, percentile
from corevital.views.lenient import as_int, as_list, as_map, as_str, finite


@dataclass(frozen=True)
class SeriesStats:
    """Summary of one per-step series over its finite values (all ``None`` when there is none)."""

    mean: float | None
    p50: float | None
    p90: float | None
    min: float | None
    max: float | None
    max_step: int | None
    finite: int
    steps: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> SeriesStats:
        """The statistics of ``values`` (``None`` marks a step without a finite value)."""
        kept = [(index, value) for index, value in enumerate(values) if value is not None]
        ordered = sorted(value for _, value in kept)
        top = max(kept, key=lambda item: item[1]) if kept else None
        return cls(
            mean=finite_mean(ordered),
            p50=percentile(ordered, 0.5),
            p90=percentile(ordered, 0.9),
            min=ordered[0] if ordered else None,
            max=ordered[-1] if ordered else None,
            max_step=None if top is None else top[0],
            finite=len(kept),
            steps=len(values),
        )


@dataclass(frozen=True)
class FactorView:
    """One risk factor and, when the report gives it, its contribution to the score."""

    name: str
    contribution: float | None


@dataclass(frozen=True)
class SignalView:
    """A compound signal: a multi-metric failure pattern with its evidence."""

    name: str
    severity: float | None
    description: str
    evidence: list[str]


@dataclass(frozen=True)
class WarningFiring:
    """An early-warning signal and the generated step (0-based) where it first fired (``None``: unknown)."""

    signal: str
    step: int | None


@dataclass(frozen=True)
class BlamedLayerView:
    """A layer the risk analysis holds responsible, with its severity, reasons and, where the report
    records it, the first generated step at which its strongest reason was seen."""

    layer: int
    severity: float | None
    reasons: list[str]
    first_step: int | None = None


@dataclass(frozen=True)
class RunDigest:
    """The facts of one report that ``show`` and ``compare`` display.

    ``entropy`` and ``surprisal`` hold one value per generated step (bits; ``None`` where the
    report has no finite value); ``token_ids`` are the generated token ids. ``flags`` maps each
    :class:`~corevital.sinks.rows.HealthFlag` value to its value (empty without ``health_flags``).
    """

    trace_id: str
    created_at_utc: str
    schema_version: str
    migrated_from: str | None
    model_id: str
    architecture: str | None
    device: str | None
    quantization: str | None
    capture_mode: str | None
    prompt_hash: str
    prompt_text: str
    output_text: str
    prompt_tokens: int | None
    generated_tokens: int | None
    finish_reason: str | None
    elapsed_ms: int | None
    narrative: str | None
    risk_score: float | None
    risk_model: str | None
    risk_factors: list[FactorView]
    flags: dict[str, bool]
    high_entropy_steps: int | None
    compound_signals: list[SignalView]
    failure_risk: float | None
    warnings_fired: list[WarningFiring]
    peak_warning_step: int | None
    blamed_layers: list[BlamedLayerView]
    repetition: dict[str, Any] | None
    stopped: str | None
    report_warnings: list[str]
    token_ids: list[int] = field(repr=False)
    token_texts: list[str] = field(repr=False)
    entropy: list[float | None] = field(repr=False)
    surprisal: list[float | None] = field(repr=False)
    ttft_ms: float | None = None
    inter_token_ms: dict[str, float | None] | None = None
    tokens_per_second: float | None = None

    @property
    def flags_set(self) -> list[str]:
        """The values of the flags that are set, in :class:`HealthFlag` order."""
        return [flag.value for flag in HealthFlag if self.flags.get(flag.value) is True]

    @property
    def entropy_stats(self) -> SeriesStats:
        """Statistics of the per-step entropy."""
        return SeriesStats.of(self.entropy)

    @property
    def surprisal_stats(self) -> SeriesStats:
        """Statistics of the per-step surprisal."""
        return SeriesStats.of(self.surprisal)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, with the series' statistics."""
        data = asdict(self)
        data["flags_set"] = self.flags_set
        data["entropy_stats"] = asdict(self.entropy_stats)
        data["surprisal_stats"] = asdict(self.surprisal_stats)
        return data


def digest_document(document: Mapping[str, Any]) -> RunDigest:
    """The :class:`RunDigest` of a report JSON document."""
    model = as_map(document.get("model"))
    prompt = as_map(document.get("prompt"))
    generated = as_map(document.get("generated"))
    summary = as_map(document.get("summary"))
    ext = as_map(document.get("extensions"))
    risk = as_map(ext.get("risk"))
    health = as_map(document.get("health_flags"))
    early = as_map(ext.get("early_warning"))
    quantization = as_map(model.get("quantization"))
    steps = [
        as_map(step)
        for step in as_list(document.get("timeline"))
        if not as_map(as_map(step).get("token")).get("is_prompt_token")
    ]
    logits = [as_map(step.get("logits_summary")) for step in steps]
    model_id = as_str(model.get("hf_id")) or "?"
    prompt_text = as_str(prompt.get("text")) or ""
    fingerprint_hash = as_str(as_map(ext.get("fingerprint")).get("prompt_hash"))
    token_ids = [value for value in as_list(generated.get("token_ids")) if isinstance(value, int)]
    if not token_ids:
        token_ids = [as_int(as_map(step.get("token")).get("token_id")) or 0 for step in steps]
    return RunDigest(
        trace_id=as_str(document.get("trace_id")) or "?",
        created_at_utc=as_str(document.get("created_at_utc")) or "",
        schema_version=as_str(document.get("schema_version")) or "?",
        migrated_from=as_str(ext.get("migrated_from")),
        model_id=model_id,
        architecture=as_str(model.get("architecture")),
        device=as_str(model.get("device")),
        quantization=as_str(quantization.get("method"))
        or ("enabled" if quantization.get("enabled") is True else None),
        capture_mode=as_str(as_map(document.get("run_config")).get("capture_mode")),
        prompt_hash=fingerprint_hash or prompt_hash(model_id, prompt_text),
        prompt_text=prompt_text,
        output_text=as_str(generated.get("output_text")) or "",
        prompt_tokens=as_int(summary.get("prompt_tokens")),
        generated_tokens=as_int(summary.get("generated_tokens")),
        finish_reason=as_str(generated.get("finish_reason")),
        elapsed_ms=as_int(summary.get("elapsed_ms")),
        narrative=as_str(as_map(ext.get("narrative")).get("summary")),
        risk_score=finite(risk.get("risk_score")),
        risk_model=as_str(risk.get("model")),
        risk_factors=_factors(risk),
        flags={
            flag.value: health[flag.value] for flag in HealthFlag if isinstance(health.get(flag.value), bool)
        },
        high_entropy_steps=as_int(health.get("high_entropy_steps")),
        compound_signals=[
            SignalView(
                name=as_str(signal.get("name")) or "?",
                severity=finite(signal.get("severity")),
                description=as_str(signal.get("description")) or "",
                evidence=[text for text in as_list(signal.get("evidence")) if isinstance(text, str)],
            )
            for signal in map(as_map, as_list(ext.get("compound_signals")))
        ],
        failure_risk=finite(early.get("failure_risk")),
        warnings_fired=_firings(early),
        peak_warning_step=as_int(early.get("peak_step")),
        blamed_layers=[
            BlamedLayerView(
                layer=as_int(layer.get("layer")) or 0,
                severity=finite(layer.get("severity")),
                reasons=[text for text in as_list(layer.get("reasons")) if isinstance(text, str)],
                first_step=as_int(layer.get("first_step")),
            )
            for layer in map(as_map, as_list(risk.get("blamed_layers")))
        ],
        repetition=dict(as_map(ext.get("repetition"))) or None,
        stopped=_stopped(as_map(ext.get("intervention"))),
        report_warnings=[
            f"{as_str(item.get('code')) or '?'}: {as_str(item.get('message')) or ''}"
            for item in map(as_map, as_list(document.get("warnings")))
        ],
        token_ids=token_ids,
        token_texts=[as_str(as_map(step.get("token")).get("token_text")) or "" for step in steps],
        entropy=[finite(summary.get("entropy")) for summary in logits],
        surprisal=[finite(summary.get("surprisal")) for summary in logits],
        ttft_ms=finite(summary.get("ttft_ms")),
        inter_token_ms={k: finite(v) for k, v in as_map(summary.get("inter_token_ms")).items()} or None,
        tokens_per_second=finite(summary.get("tokens_per_second")),
    )


def _stopped(intervention: Mapping[str, Any]) -> str | None:
    """``"by POLICY at step N: REASON"`` when a live intervention stopped the generation."""
    if not intervention:
        return None
    step = as_int(intervention.get("step"))
    reason = as_str(intervention.get("reason"))
    where = "" if step is None else f" at step {step}"
    return f"by {as_str(intervention.get('policy')) or 'a callback'}{where}" + (
        f": {reason}" if reason else ""
    )


def _factors(risk: Mapping[str, Any]) -> list[FactorView]:
    contributions = {
        as_str(item.get("name")): finite(item.get("contribution"))
        for item in map(as_map, as_list(risk.get("factor_contributions")))
    }
    names = [name for name in as_list(risk.get("risk_factors")) if isinstance(name, str)]
    names += [name for name in contributions if name is not None and name not in names]
    return [FactorView(name=name, contribution=contributions.get(name)) for name in names]


def _firings(early: Mapping[str, Any]) -> list[WarningFiring]:
    firings = [
        WarningFiring(signal=as_str(item.get("signal")) or "?", step=as_int(item.get("step")))
        for item in map(as_map, as_list(early.get("firings")))
    ]
    seen = {firing.signal for firing in firings}
    firings += [
        WarningFiring(signal=name, step=None)
        for name in as_list(early.get("warning_signals"))
        if isinstance(name, str) and name not in seen
    ]
    return firings
