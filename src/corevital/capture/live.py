"""A live step callback: it reads each step's statistics as generation runs and may stop sequences."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from corevital.capture.records import StepCallback, StepEvent
from corevital.capture.steps import DeviceStep


class LiveCallback:
    """Asks the user's callback after each step and remembers where it stopped each sequence."""

    def __init__(self, callback: StepCallback, eos_token_ids: tuple[int, ...], batch_offset: int) -> None:
        self.callback = callback
        self.eos_token_ids = eos_token_ids
        self.batch_offset = batch_offset
        self.stop_steps: dict[int, int] = {}  # batch index -> step at which the callback stopped it
        self._finished: np.ndarray | None = None

    def ask(self, host: DeviceStep, step_index: int, batch: int, device: torch.device) -> Tensor:
        """The callback's answer for step ``step_index`` as the stopping criterion's [B] tensor."""
        tokens = np.asarray(host.chosen.token_ids).astype(np.int64)
        if self._finished is None:
            self._finished = np.zeros(batch, dtype=bool)
        event = StepEvent(
            step=step_index,
            token_ids=tokens,
            finished=self._finished.copy(),
            batch_offset=self.batch_offset,
            logits=host.logits,
            chosen=host.chosen,
            hidden=host.hidden,
            attention=host.attention,
            cross_attention=host.cross_attention,
        )
        decision = self.callback(event)
        stop = np.zeros(batch, dtype=bool)
        if decision is True:
            stop[:] = True
        elif isinstance(decision, np.ndarray):
            stop |= decision.astype(bool).reshape(batch)
        stop &= ~self._finished
        for index in np.flatnonzero(stop):
            self.stop_steps.setdefault(int(index), step_index)
        self._finished |= stop | np.isin(tokens, self.eos_token_ids)
        return torch.as_tensor(stop, device=device)
