"""Live generation: per-step stream events and intervention policies, on top of capture's callback.

:class:`LiveSession` is the step callback handed to capture. For every running sequence it updates
an :class:`~corevital.analysis.online.OnlineSequenceMonitor`, emits a :class:`StreamEvent` and asks
the intervention policies whether to stop that sequence; capture stops it at this very step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from corevital.analysis.online import LayerRows, OnlineSequenceMonitor
from corevital.analysis.policies import StopDecision, StopPolicy, first_decision
from corevital.analysis.profiles import ModelProfile
from corevital.analysis.updates import LayerReferences
from corevital.capture.records import RunCapture, StepEvent
from corevital.report.numbers import num


def _num(value: float | None) -> float | None:
    """Rounded exactly as the report rounds it, so stream and report agree value for value."""
    return None if value is None else num(value)


@dataclass(frozen=True)
class StreamEvent:
    """One event of a live stream: a generated token (``kind == "step"``) or the end (``"final"``).

    Supports ``event["entropy"]`` and ``event.get("entropy")`` as well as attribute access.
    """

    kind: str
    batch_index: int
    step_index: int | None = None  # 0-based generated-token index
    token_id: int | None = None
    token_text: str | None = None
    entropy: float | None = None
    surprisal: float | None = None
    margin: float | None = None
    topk_mass: float | None = None
    running_risk: float | None = None
    warning_signals: tuple[str, ...] = ()  # early-warning signals that fired at this step
    loop_period: int | None = None
    stopped_by: str | None = None  # the policy that stopped the sequence at this step
    summary: dict[str, Any] | None = None  # final event: the finished report's summary
    report: Any = field(default=None, repr=False)  # final event: the Report itself

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("report")
        return data


class LiveSession:
    """The step callback of one generate() call: online analysis, stream events, policies."""

    def __init__(
        self,
        profile: ModelProfile,
        *,
        policies: Sequence[StopPolicy] = (),
        token_text: Callable[[int], str] = str,
        emit: Callable[[StreamEvent], None] | None = None,
        prompt_text: Callable[[int], str] | None = None,
        calibration: LayerReferences | None = None,
    ) -> None:
        """``prompt_text``: the prompt of a sequence (by its index in the run), so that a repetition
        loop the prompt asks for is recognised live as in the report; ``calibration``: the profile
        the report judges layer updates against."""
        self._profile = profile
        self._policies = tuple(policies)
        self._token_text = token_text
        self._emit = emit
        self._prompt_text = prompt_text
        self._calibration = calibration
        self._monitors: dict[int, OnlineSequenceMonitor] = {}
        self.decisions: dict[int, StopDecision] = {}

    def __call__(self, event: StepEvent) -> np.ndarray:
        batch = len(event.token_ids)
        stop = np.zeros(batch, dtype=bool)
        hidden_bad = None
        if event.hidden is not None:
            hidden_bad = np.asarray(event.hidden.has_nan) | np.asarray(event.hidden.has_inf)  # [L, B]
        for b in range(batch):
            if event.finished[b]:
                continue
            index = event.batch_offset + b
            monitor = self._monitors.get(index)
            if monitor is None:
                prompt = self._prompt_text(index) if self._prompt_text is not None else ""
                monitor = self._monitors[index] = OnlineSequenceMonitor(
                    self._profile, prompt_text=prompt, calibration=self._calibration
                )
            non_finite = bool(event.logits.has_nan[b] or event.logits.has_inf[b])
            if hidden_bad is not None:
                non_finite = non_finite or bool(hidden_bad[:, b].any())
            token = int(event.token_ids[b])
            text = self._token_text(token)
            step = monitor.update(
                token_id=token,
                entropy=float(event.logits.entropy[b]),
                surprisal=float(event.chosen.surprisal[b]),
                margin=float(event.logits.top_k_margin[b]),
                topk_mass=float(event.logits.topk_mass[b]),
                non_finite=non_finite,
                token_text=text,
                layers=_layer_rows(event, b),
            )
            decision = first_decision(self._policies, step) if index not in self.decisions else None
            if decision is not None:
                self.decisions[index] = decision
                stop[b] = True
            if self._emit is not None:
                self._emit(
                    StreamEvent(
                        kind="step",
                        batch_index=index,
                        step_index=step.step,
                        token_id=token,
                        token_text=text,
                        entropy=_num(step.entropy),
                        surprisal=_num(step.surprisal),
                        margin=_num(step.margin),
                        topk_mass=_num(step.topk_mass),
                        running_risk=step.running_risk,
                        warning_signals=step.warnings_fired,
                        loop_period=step.loop.period if step.loop is not None else None,
                        stopped_by=decision.policy if decision is not None else None,
                    )
                )
        return stop

    def annotate(self, run: RunCapture) -> None:
        """Record in each stopped sequence which policy stopped it and why."""
        for seq in run.sequences:
            decision = self.decisions.get(seq.batch_index)
            if decision is not None and seq.finish_reason == "stopped_by_callback":
                seq.stop_policy = decision.policy
                seq.stop_reason = decision.reason


def _layer_rows(event: StepEvent, b: int) -> LayerRows | None:
    """Row ``b``'s per-layer values of the step (the update ratios and the attention entropy)."""
    if event.hidden is None and event.attention is None:
        return None

    def column(stats: object, name: str) -> np.ndarray | None:
        values = None if stats is None else getattr(stats, name, None)
        return None if values is None else np.asarray(values)[:, b]

    return LayerRows(
        update_ratio=column(event.hidden, "update_ratio"),
        mlp_update_ratio=column(event.hidden, "mlp_update_ratio"),
        attention_entropy=column(event.attention, "entropy_mean_normalized"),
    )
