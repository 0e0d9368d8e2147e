"""Stopping a stream: the intervention policies over each streamed token's logit tier."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from corevital.analysis.online import OnlineSequenceMonitor
from corevital.analysis.policies import StopDecision, StopPolicy, first_decision
from corevital.analysis.profiles import load_profile
from corevital.capture.logprobs import TokenIds, logit_stats
from corevital.capture.openai_api import choice_tokens


class StreamWatch:
    """The intervention policies over a stream's tokens, choice by choice, as chunks arrive.

    Each token's logit tier (the entropy estimate as the report computes it: the midpoint of its
    bounds with ``vocab_size``, else the lower bound; surprisal, margin, top-k mass) goes to an
    online monitor per choice (running risk, early warnings, repetition); the first policy that
    fires is the :attr:`decision`. Tokens without a finite value (no logprob listed) are skipped.
    """

    def __init__(
        self, policies: Sequence[StopPolicy], *, mass_k: int = 10, vocab_size: int | None = None
    ) -> None:
        self.policies = tuple(policies)
        self.mass_k = mass_k
        self.vocab_size = vocab_size
        self._profile = load_profile("unknown")
        self._monitors: dict[int, OnlineSequenceMonitor] = {}
        self._ids: dict[int, TokenIds] = {}
        self.decision: tuple[int, StopDecision] | None = None
        self.head: dict[str, Any] = {}  # id, object, created, model of the last chunk
        self.indices: set[int] = set()

    def __call__(self, chunk: Mapping[str, Any]) -> None:
        self.head = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index", 0), int) else 0
            self.indices.add(index)
            if self.decision is not None:
                continue
            for token in choice_tokens(choice):
                ids = self._ids.setdefault(index, TokenIds())
                stats, chosen = logit_stats(
                    [token], ids, topk=1, mass_k=self.mass_k, vocab_size=self.vocab_size
                )
                values = [float(stats.entropy[0]), float(chosen.surprisal[0]), float(stats.top_k_margin[0])]
                if not all(math.isfinite(v) for v in values):
                    continue
                monitor = self._monitors.setdefault(index, OnlineSequenceMonitor(self._profile))
                step = monitor.update(
                    token_id=int(chosen.token_ids[0]),
                    entropy=values[0],
                    surprisal=values[1],
                    margin=values[2],
                    topk_mass=float(stats.topk_mass[0]),
                    token_text=token.token,
                )
                decision = first_decision(self.policies, step)
                if decision is not None:
                    self.decision = (index, decision)
                    break

    def final_event(self, chat: bool) -> bytes:
        """The event that ends the client's stream: each choice's finish reason names the policy."""
        assert self.decision is not None
        reason = stop_finish_reason(self.decision[1])
        choices: list[dict[str, Any]] = []
        for index in sorted(self.indices or {0}):
            if chat:
                choices.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": reason})
            else:
                choices.append({"index": index, "text": "", "logprobs": None, "finish_reason": reason})
        chunk = {**self.head, "choices": choices}
        return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def stop_finish_reason(decision: StopDecision) -> str:
    """The finish reason a stream stopped by CoreVital ends with: ``corevital:<policy>``."""
    return f"corevital:{decision.policy}"
