"""What ``corevital run`` shows: a live line per sequence while generating, a table for a batch.

:class:`LiveLines` is capture's progress callback (:data:`~corevital.capture.records.ProgressCallback`):
called at the end of every decoding step with the steps reduced to the host so far, it adds no
reduction, copy or synchronisation of its own. Tokens so far and tokens/s follow every step; the
entropy and the running risk (:class:`~corevital.live.LiveSession`, as ``monitor.stream`` computes
it) follow the reduced steps, which are up to one window of steps behind when steps are deferred.
Drawn on stderr by rich, only on a terminal; redrawn at most ``refresh_hz`` times a second and
removed when generation ends. Before a batch's first token (the prompt pass, which on a CPU takes
seconds) a spinner line says what the model is reading: ``Reading the prompt (37 tokens)``, or for
a batch ``Reading 8 prompts (37–41 tokens each), batch 1 of 3``; the next batch's line follows the
step at which every sequence of a batch has ended.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from corevital.analysis.profiles import ModelProfile
from corevital.analysis.updates import LayerReferences
from corevital.capture.records import StepEvent
from corevital.live import LiveSession, StreamEvent
from corevital.summary import RunSummary
from corevital.views.terminal import factor_words, one_line

if TYPE_CHECKING:
    from corevital.pipeline import Pipeline

TokenCounter = Callable[[int, int], list[int] | None]
"""``count(start, stop)``: the prompt tokens of prompts ``start:stop`` (None: not known)."""


@dataclass
class _Row:
    tokens: int = 0
    entropy: float | None = None
    risk: float | None = None
    done: bool = False
    done_at: float | None = None  # clock time of its last token: its tokens/s stops there


class LiveLines:
    """One live line per sequence of the batch being generated (stderr, a terminal only)."""

    def __init__(
        self,
        console: Console,
        profile: ModelProfile,
        eos_token_ids: Sequence[int],
        *,
        total: int,
        clock: Callable[[], float] = time.perf_counter,
        refresh_hz: float = 8.0,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        count_tokens: TokenCounter | None = None,
        calibration: LayerReferences | None = None,
        token_text: Callable[[int], str] = str,
        prompt_text: Callable[[int], str] | None = None,
    ) -> None:
        """``total`` prompts, ``batch_size`` of them per generation (default all), each generating at
        most ``max_new_tokens``; ``count_tokens(start, stop)``: the prompt tokens of prompts
        ``start:stop`` (None when they cannot be counted), for the line shown while a batch is read.
        ``calibration`` (the run's calibration profile), ``token_text`` (a token id's text) and
        ``prompt_text`` (a sequence's prompt, by index) are what the report's analysis has, so the
        running risk is the report's model (:class:`~corevital.live.LiveSession`)."""
        self._console = console
        self._profile = profile
        self._eos = np.asarray(list(eos_token_ids), dtype=np.int64)
        self._total = total
        self._clock = clock
        self._interval = 1.0 / refresh_hz
        self._live: Live | None = None
        self._offset: int | None = None
        self._rows: dict[int, _Row] = {}
        self._session: LiveSession | None = None
        self._consumed = 0
        self._finished = np.zeros(0, dtype=bool)
        self._batch_start = clock()
        self._last_draw = 0.0
        self._steps = 0
        self._refresh_hz = refresh_hz
        self._batch_size = batch_size if batch_size is not None and batch_size > 0 else max(total, 1)
        self._max_new_tokens = max_new_tokens
        self._count_tokens = count_tokens
        self._calibration = calibration
        self._token_text = token_text
        self._prompt_text = prompt_text
        self._batches_read = 0  # batches whose reading line has been shown
        self._ended = False  # the current batch has ended (every step read)
        self._waiting = False  # a batch has ended; the next one's first step has not come yet

    @property
    def batches(self) -> int:
        return max(1, -(-self._total // self._batch_size))

    def reading_text(self, batch_number: int) -> str:
        """What the spinner line says while batch ``batch_number`` (from 1) is read."""
        start = (batch_number - 1) * self._batch_size
        stop = min(self._total, start + self._batch_size)
        counts = self._count_tokens(start, stop) if self._count_tokens is not None else None
        count = stop - start
        if counts:
            low, high = min(counts), max(counts)
            span = f"{low} tokens" if low == high else f"{low}\u2013{high} tokens"
            text = f"Reading the prompt ({span})" if count == 1 else f"Reading {count} prompts ({span} each)"
        else:
            text = "Reading the prompt" if count == 1 else f"Reading {count} prompts"
        return text + (f", batch {batch_number} of {self.batches}" if self.batches > 1 else "")

    def start(self) -> None:
        """The spinner line of the first batch, shown until its first step (call before generating)."""
        self._show_reading()

    def _show_reading(self) -> None:
        self._batches_read += 1
        if self._batches_read > self.batches:
            return
        spinner = Spinner("dots", text=Text(self.reading_text(self._batches_read)))
        self._ensure_live()
        assert self._live is not None
        self._live.update(spinner, refresh=True)
        self._waiting = True

    def __call__(self, batch_offset: int, batch: int, steps_done: int, host_steps: list[Any]) -> None:
        now = self._clock()
        if batch_offset != self._offset:
            self._new_batch(batch_offset, batch)
        after_generation = steps_done == self._steps  # the call after the last step repeats its count
        self._steps = steps_done
        for index in range(self._consumed, len(host_steps)):
            self._read(index, host_steps[index])
        self._consumed = len(host_steps)
        for row in self._rows.values():
            if not row.done:
                row.tokens = steps_done
        # A batch ends once, at the first call with every step read (the call after its generation
        # at the latest): its rows then show the report's risk.
        ended = (
            not self._ended
            and (self._consumed >= steps_done or after_generation)
            and (
                all(row.done for row in self._rows.values())
                or (self._max_new_tokens is not None and steps_done >= self._max_new_tokens)
            )
        )
        if now - self._last_draw >= self._interval or self._waiting or ended:
            self._last_draw = now
            self._waiting = False
            self._draw(now)
        if ended:
            self._ended = True
            if self._batches_read < self.batches:
                self._show_reading()  # the next batch's prompt pass comes next

    def _new_batch(self, batch_offset: int, batch: int) -> None:
        if self._offset is not None:
            self._batch_start = self._clock()  # the previous batch ended at its last step
        self._offset = batch_offset
        if self._batches_read == 0:
            self._batches_read = 1  # start() was not called: its batch is read without a line
        self._rows = {batch_offset + b: _Row() for b in range(batch)}
        self._session = LiveSession(
            self._profile,
            emit=self._event,
            calibration=self._calibration,
            token_text=self._token_text,
            prompt_text=self._prompt_text,
        )
        self._consumed = 0
        self._steps = 0
        self._ended = False
        self._finished = np.zeros(batch, dtype=bool)

    def _read(self, index: int, host: Any) -> None:
        tokens = np.asarray(host.chosen.token_ids).astype(np.int64)
        event = StepEvent(
            step=index,
            token_ids=tokens,
            finished=self._finished.copy(),
            batch_offset=self._offset or 0,
            logits=host.logits,
            chosen=host.chosen,
            hidden=host.hidden,
            attention=host.attention,
            cross_attention=host.cross_attention,
        )
        if self._session is not None:
            self._session(event)
        ended = np.isin(tokens, self._eos) & ~self._finished
        for b in np.flatnonzero(ended):
            row = self._rows.get((self._offset or 0) + int(b))
            if row is not None:
                row.done, row.tokens, row.done_at = True, index + 1, self._clock()
        self._finished |= ended

    def _event(self, event: StreamEvent) -> None:
        row = self._rows.get(event.batch_index)
        if row is not None:
            row.entropy, row.risk = event.entropy, event.running_risk

    def render(self, now: float | None = None) -> Group:
        """The lines as they are now (one per sequence of the current batch)."""
        current = self._clock() if now is None else now
        lines = []
        for index, row in sorted(self._rows.items()):
            end = row.done_at if row.done_at is not None else current
            rate = row.tokens / max(end - self._batch_start, 1e-9)
            entropy = "  —  " if row.entropy is None else f"{row.entropy:5.2f}"
            risk = " —  " if row.risk is None else f"{row.risk:4.2f}"
            state = "done" if row.done else "…"
            lines.append(
                Text(
                    f"  #{index + 1:<3} of {self._total}  {row.tokens:>4} tokens  {rate:6.1f} tokens/s  "
                    f"entropy {entropy}  risk {risk}  {state}"
                )
            )
        return Group(*lines)

    def _ensure_live(self) -> None:
        if self._live is None:
            # Refreshed by rich's thread too (the spinner turns while the prompt is read); what
            # it redraws is the last renderable handed to it, never the rows being updated.
            self._live = Live(console=self._console, refresh_per_second=self._refresh_hz, transient=True)
            self._live.start()

    def _draw(self, now: float) -> None:
        self._ensure_live()
        assert self._live is not None
        self._live.update(self.render(now), refresh=True)

    def close(self) -> None:
        """Remove the lines (generation ended, or was interrupted)."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def prompt_token_counter(loaded: Any, prompts: Sequence[Any], chat_template: Any) -> TokenCounter:
    """``count(start, stop)``: how many tokens each of ``prompts[start:stop]`` is to the model (the
    chat template applied as the generation applies it); None when they cannot be tokenized (the
    generation then gives the error)."""
    from corevital.capture.prompts import prepare_batch
    from corevital.errors import CoreVitalError

    def count(start: int, stop: int) -> list[int] | None:
        chunk = list(prompts[start:stop])
        if not chunk:
            return None
        try:
            batch = prepare_batch(
                loaded.tokenizer,
                chunk,
                chat_template=chat_template,
                device=loaded.device,
                is_encoder_decoder=loaded.capabilities.is_encoder_decoder,
            )
        except (CoreVitalError, ValueError, TypeError):
            return None
        return [len(p.token_ids) for p in batch.prompts]

    return count


def live_lines(
    console: Console,
    loaded: Any,
    profile: ModelProfile,
    total: int,
    *,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    count_tokens: TokenCounter | None = None,
    calibration: LayerReferences | None = None,
    prompt_text: Callable[[int], str] | None = None,
) -> LiveLines | None:
    """Live lines on ``console`` when it is a terminal, else None (tokens' texts from ``loaded``)."""
    if not console.is_terminal:
        return None
    from corevital.capture.runner import eos_ids

    return LiveLines(
        console,
        profile,
        eos_ids(loaded),
        total=total,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        count_tokens=count_tokens,
        calibration=calibration,
        token_text=lambda token: str(loaded.tokenizer.decode([token])),
        prompt_text=prompt_text,
    )


def run_live_lines(console: Console, pipeline: Pipeline, prompts: Sequence[str]) -> LiveLines | None:
    """``corevital run``'s live lines over ``prompts`` with ``pipeline``'s model and settings: the
    thresholds, calibration profile, prompts and tokens' texts its reports are analysed with."""
    loaded = pipeline.loaded
    settings = pipeline.settings
    return live_lines(
        console,
        loaded,
        pipeline.profile(loaded.capabilities.model_type),
        len(prompts),
        batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens,
        count_tokens=prompt_token_counter(loaded, prompts, settings.chat_template),
        calibration=pipeline.calibration(),
        prompt_text=lambda index: prompts[index],
    )


def batch_table(summaries: Sequence[RunSummary], *, excerpt: int = 60) -> Table:
    """One row per sequence: risk, flags, finish reason, tokens, tokens/s and the output's start.

    Text from the model is escaped (:func:`~corevital.views.terminal.one_line`) and never markup.
    """
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in (
        ("#", "right"),
        ("risk", "right"),
        ("flags", "left"),
        ("finish", "left"),
        ("tokens", "right"),
        ("tokens/s", "right"),
        ("output", "left"),
    ):
        # One line per row: on a narrow terminal the flags and the output excerpt give up width (cut
        # with an ellipsis, never wrapped); the other columns keep theirs.
        table.add_column(name, justify=justify, no_wrap=name not in ("flags", "output"))  # type: ignore[arg-type]
    for number, s in enumerate(summaries, start=1):
        risk = "—" if s.risk_score is None else f"{s.risk_score:.2f}"
        style = "" if s.risk_score is None else "bold red" if s.risk_score >= 0.7 else ""
        table.add_row(
            str(number),
            Text(risk, style=style),
            Text(", ".join(s.flags) or "—", no_wrap=True, overflow="ellipsis"),
            Text(s.finish_reason or "—"),
            f"{s.prompt_tokens}+{s.generated_tokens}",
            "—" if s.tokens_per_second is None else f"{s.tokens_per_second:.1f}",
            Text(one_line(s.output_text.strip(), excerpt), no_wrap=True, overflow="ellipsis"),
        )
    return table


def batch_footer(summaries: Sequence[RunSummary], *, width: int | None = None) -> list[str]:
    """Lines under the table: the riskiest sequences in words, calibration, where the reports are.

    With ``width`` (a terminal's), each line is wrapped to it at spaces, continuation lines indented
    by two; the path of the first report is a line of its own so it stays whole for copying.
    """
    lines = []
    risky = sorted(
        (s for s in summaries if s.risk_score is not None and s.risk_factors),
        key=lambda s: -(s.risk_score or 0.0),
    )[:3]
    for s in risky:
        number = summaries.index(s) + 1
        words = "; ".join(factor_words(one_line(name)) for name in s.risk_factors)
        lines.append(f"#{number} risk {s.risk_score:.2f}: {words}")
    divergences = [s.calibration_divergence for s in summaries if s.calibration_divergence is not None]
    if divergences:
        lines.append(
            f"Calibration divergence: mean {sum(divergences) / len(divergences):.2f}, "
            f"max {max(divergences):.2f} (0 typical, 1 far from the profile)"
        )
    for warning in dict.fromkeys(w for s in summaries for w in s.calibration_warnings):
        lines.append(f"Calibration warning: {one_line(warning, 300)}")
    if width is not None:
        lines = [
            wrapped
            for line in lines
            for wrapped in textwrap.wrap(
                line, width=max(width, 20), subsequent_indent="  ", break_long_words=False
            )
        ]
    stored = [s.location for s in summaries if s.location]
    if stored and width is not None:
        lines.extend(
            [f"Reports: {len(stored)} of {len(summaries)} stored; the first:", f"  {one_line(stored[0])}"]
        )
    elif stored:
        lines.append(f"Reports: {len(stored)} of {len(summaries)} stored (the first: {one_line(stored[0])})")
    else:
        lines.append("Reports: not stored")
    return lines
