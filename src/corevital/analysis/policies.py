"""Intervention policies: when to stop a generation while it runs.

A policy looks at one sequence's :class:`~corevital.analysis.online.OnlineStep` and returns a
reason to stop, or None. Policies are small and composable; the first one that fires stops the
sequence, and the report records which policy stopped it, at which step and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corevital.analysis.online import OnlineStep


class StopPolicy(Protocol):
    """Decides from one step of one sequence whether to stop that sequence."""

    @property
    def name(self) -> str:
        """The policy's name, recorded in the report when it stops a generation."""
        ...

    def check(self, step: OnlineStep) -> str | None:
        """A human-readable reason to stop now, or None to continue."""
        ...


@dataclass(frozen=True)
class StopOnRepetition:
    """Stop as soon as a repetition loop has formed, on the token ids or on the decoded words (same
    definitions as the post-run flag). A loop the prompt asks for ("… 50 times") does not stop the
    generation unless ``stop_requested``."""

    name: str = "repetition_loop"
    stop_requested: bool = False

    def check(self, step: OnlineStep) -> str | None:
        loop = step.loop
        if loop is None or (loop.requested and not self.stop_requested):
            return None
        if loop.level == "words":
            return (
                f"repetition loop of {loop.period_words} words {loop.unit!r} over {loop.span} tokens "
                f"since step {loop.first_step}"
            )
        return f"repetition loop of period {loop.period} over {loop.span} tokens since step {loop.first_step}"


@dataclass(frozen=True)
class StopOnNonFinite:
    """Stop when NaN or Inf appears in the step's logits or hidden states."""

    name: str = "non_finite"

    def check(self, step: OnlineStep) -> str | None:
        return "NaN or Inf in the model's outputs" if step.non_finite else None


@dataclass(frozen=True)
class StopOnRiskAbove:
    """Stop when the running risk estimate exceeds a threshold."""

    threshold: float
    name: str = "risk_above"

    def check(self, step: OnlineStep) -> str | None:
        if step.running_risk > self.threshold:
            return f"running risk {step.running_risk:.2f} above {self.threshold:.2f}"
        return None


@dataclass(frozen=True)
class StopWhen:
    """Stop when a user function of the step returns True."""

    predicate: Callable[[OnlineStep], bool]
    name: str = "custom"
    reason: str = field(default="user condition met")

    def check(self, step: OnlineStep) -> str | None:
        return self.reason if self.predicate(step) else None


@dataclass(frozen=True)
class StopDecision:
    policy: str
    step: int
    reason: str


def first_decision(policies: Sequence[StopPolicy], step: OnlineStep) -> StopDecision | None:
    for policy in policies:
        reason = policy.check(step)
        if reason is not None:
            return StopDecision(policy=policy.name, step=step.step, reason=reason)
    return None
