"""Comparisons of stored runs: N runs side by side, and summaries of runs grouped by model or prompt.

Typed results with a JSON form, shared by ``corevital compare`` and the HTTP server:

- :func:`compare_runs` puts runs (their :class:`~corevital.views.digest.RunDigest`) side by side:
  risk, flags, entropy and surprisal statistics, blamed layers and, when every run has the same
  prompt hash (same model, same prompt text), the first generated step where their token streams
  diverge.
- :func:`group_summary` turns the store's per-model (or per-prompt-hash) aggregates into the
  original CoreVital's model comparison: runs, risk mean/p50/p90, flag rates, mean entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from corevital.sinks.base import ReportStore
from corevital.sinks.rows import ModelAggregate, TraceQuery
from corevital.views.digest import RunDigest, SeriesStats


@dataclass(frozen=True)
class RunColumn:
    """One run of a side-by-side comparison."""

    trace_id: str
    created_at_utc: str
    model_id: str
    prompt_hash: str
    prompt_text: str
    output_text: str
    generated_tokens: int | None
    finish_reason: str | None
    risk_score: float | None
    failure_risk: float | None
    flags: list[str]
    compound_signals: list[str]
    warning_signals: list[str]
    entropy: SeriesStats
    surprisal: SeriesStats
    blamed_layers: list[int]

    @classmethod
    def of(cls, digest: RunDigest) -> RunColumn:
        """The column of one run."""
        return cls(
            trace_id=digest.trace_id,
            created_at_utc=digest.created_at_utc,
            model_id=digest.model_id,
            prompt_hash=digest.prompt_hash,
            prompt_text=digest.prompt_text,
            output_text=digest.output_text,
            generated_tokens=digest.generated_tokens,
            finish_reason=digest.finish_reason,
            risk_score=digest.risk_score,
            failure_risk=digest.failure_risk,
            flags=digest.flags_set,
            compound_signals=[signal.name for signal in digest.compound_signals],
            warning_signals=[firing.signal for firing in digest.warnings_fired],
            entropy=digest.entropy_stats,
            surprisal=digest.surprisal_stats,
            blamed_layers=[layer.layer for layer in digest.blamed_layers],
        )


@dataclass(frozen=True)
class Divergence:
    """Where the generated token streams of runs with one prompt hash part.

    ``step`` is the first 0-based generated step at which not every run has the same token id
    (a run that has ended counts as different); ``None`` when the streams are identical.
    ``common_prefix`` is the number of leading tokens they share.
    """

    step: int | None
    common_prefix: int
    identical: bool


@dataclass(frozen=True)
class RunComparison:
    """Runs side by side; ``divergence`` is set when they share a prompt hash."""

    runs: list[RunColumn]
    shared_prompt: bool
    divergence: Divergence | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def first_divergence(streams: Sequence[Sequence[int]]) -> Divergence:
    """The :class:`Divergence` of token streams."""
    shortest = min((len(stream) for stream in streams), default=0)
    for step in range(shortest):
        if len({stream[step] for stream in streams}) > 1:
            return Divergence(step=step, common_prefix=step, identical=False)
    identical = len({len(stream) for stream in streams}) <= 1
    return Divergence(step=None if identical else shortest, common_prefix=shortest, identical=identical)


def compare_runs(digests: Sequence[RunDigest]) -> RunComparison:
    """Runs side by side, in the order given."""
    shared = len(digests) > 1 and len({digest.prompt_hash for digest in digests}) == 1
    return RunComparison(
        runs=[RunColumn.of(digest) for digest in digests],
        shared_prompt=shared,
        divergence=first_divergence([digest.token_ids for digest in digests]) if shared else None,
    )


@dataclass(frozen=True)
class GroupSummary:
    """Stored runs grouped ``by`` model or prompt (prompt hash); ``total_runs`` over every group.

    Grouped by prompt, ``prompts`` maps each prompt hash to the model id and prompt preview of its
    newest run (a prompt hash is one prompt on one model).
    """

    by: str
    groups: list[ModelAggregate]
    total_runs: int
    prompts: dict[str, PromptOfGroup] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class PromptOfGroup:
    """What a prompt hash stands for: the model id and prompt preview of a run that has it."""

    model_id: str
    prompt_preview: str


def group_summary(
    aggregates: Sequence[ModelAggregate], by: str, store: ReportStore | None = None
) -> GroupSummary:
    """The summary of a store's aggregates (as :meth:`ReportStore.aggregate` returns them).

    Grouped by prompt and given the ``store``, the prompt of each group is looked up (one indexed
    query per group).
    """
    groups = list(aggregates)
    prompts: dict[str, PromptOfGroup] = {}
    if by == "prompt" and store is not None:
        for group in groups:
            rows = store.list(TraceQuery(prompt_hash=group.key, limit=1))
            if rows:
                prompts[group.key] = PromptOfGroup(rows[0].model_id, rows[0].prompt_preview)
    return GroupSummary(by=by, groups=groups, total_runs=sum(group.runs for group in groups), prompts=prompts)
