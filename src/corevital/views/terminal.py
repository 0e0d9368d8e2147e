"""Rendering stored runs in a terminal with rich: the runs table, one run, comparisons, sparklines.

Colour only on a terminal (rich decides, and honours ``NO_COLOR``); piped output is plain text
at a fixed width, so that ``grep`` and ``less`` see whole lines. Every string that comes from a
report (model ids, prompts, outputs, token texts) goes through :func:`one_line` or
:func:`safe_block` and is rendered as text, never as markup: control characters (ESC above all)
and bidirectional overrides are shown escaped (``\\x1b``), never sent raw.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.text import Text

from corevital.sinks.rows import HealthFlag, ModelAggregate, TraceRow

if TYPE_CHECKING:
    from corevital.views.compare import GroupSummary, RunComparison
    from corevital.views.digest import RunDigest, SeriesStats

SPARK_BARS = "▁▂▃▄▅▆▇█"
PIPE_WIDTH = 200
"""Width of output that does not go to a terminal (unless ``COLUMNS`` says otherwise)."""

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_SHORT_FLAG = {flag.value: flag.short_name for flag in HealthFlag}


def make_console(file: IO[str] | None = None) -> Console:
    """A console for ``file`` (stdout by default): colour on a terminal only, plain text elsewhere."""
    console = Console(file=file, highlight=False, emoji=False, markup=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def print_lines(console: Console, text: Text) -> None:
    """Print ``text`` one output line per line: cut with an ellipsis at a terminal's width, whole
    when piped (so that ``grep`` sees every character)."""
    terminal = console.is_terminal
    console.print(text, no_wrap=True, overflow="ellipsis" if terminal else "ignore", crop=terminal)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return {9: "\\t", 10: "\\n", 13: "\\r"}.get(code) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    )


def safe_block(text: str) -> str:
    """``text`` with every control character but newline and tab shown escaped."""
    return _UNSAFE.sub(_escape, text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (newlines and tabs shown as ``\\n``, ``\\t``), escaped, cut to ``limit``."""
    flat = _UNSAFE_LINE.sub(_escape, text)
    if limit is not None and len(flat) > limit:
        return flat[: max(limit - 1, 0)] + "…"
    return flat


def sparkline(values: Sequence[float | None], width: int = 64) -> str:
    """One character per value (``▁``..``█``, min to max; a space where a value is missing).

    More values than ``width`` are averaged in ``width`` equal buckets.
    """
    if len(values) > width > 0:
        buckets: list[float | None] = []
        for index in range(width):
            chunk = values[index * len(values) // width : (index + 1) * len(values) // width]
            kept = [value for value in chunk if value is not None]
            buckets.append(sum(kept) / len(kept) if kept else None)
        values = buckets
    finite = [value for value in values if value is not None]
    if not finite:
        return " " * len(values)
    low, high = min(finite), max(finite)
    top = len(SPARK_BARS) - 1
    chars = []
    for value in values:
        if value is None:
            chars.append(" ")
        elif high == low:
            chars.append(SPARK_BARS[top // 2])
        else:
            chars.append(SPARK_BARS[round((value - low) / (high - low) * top)])
    return "".join(chars)


def short_time(created_at_utc: str) -> str:
    """``YYYY-MM-DD HH:MM`` of a report time (UTC)."""
    return created_at_utc[:16].replace("T", " ")


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


FACTOR_WORDS = {
    "elevated_entropy": "the model was unsure (high mean entropy)",
    "entropy_peaks": "moments of high uncertainty (entropy peaks)",
    "high_surprisal": "it chose unlikely tokens (high mean surprisal)",
    "surprisal_spikes": "some very unlikely tokens (surprisal spikes)",
    "low_confidence_margin": "close calls between the top tokens (low margin)",
    "rising_entropy": "uncertainty grew as it went on (rising entropy)",
    "early_warning": "early-warning signals fired",
    "attention_collapse": "attention heads collapsed onto few tokens",
    "mid_layer_anomaly": "a middle layer behaved abnormally",
    "layer_norm_jump": "a hidden-state norm jumped between layers",
    "layer_update_anomaly": "a layer's attention or MLP was silenced or sharpened",
    "repetition_loop": "it repeated itself in a loop",
    "repeated_phrases": "it repeated phrases it had already written",
    "nan_or_inf": "NaN or infinite values appeared",
}
"""Each risk factor said in words (the name stays in brackets where it is shown with the words)."""


def factor_words(name: str) -> str:
    """A risk factor in words: ``"it repeated itself in a loop"`` for ``repetition_loop``."""
    return FACTOR_WORDS.get(name, name.replace("_", " "))


def latency_text(
    ttft_ms: float | None, tokens_per_second: float | None, itl: dict[str, float | None] | None
) -> str:
    """``first token 120 ms, 25.3 tokens/s, between tokens p50 30.1 / p90 35.2 / p99 40.0 ms``."""
    parts = []
    if ttft_ms is not None:
        parts.append(f"first token {ttft_ms:.0f} ms")
    if tokens_per_second is not None:
        parts.append(f"{tokens_per_second:.1f} tokens/s")
    if itl and all(itl.get(k) is not None for k in ("p50", "p90", "p99")):
        parts.append(f"between tokens p50 {itl['p50']:.1f} / p90 {itl['p90']:.1f} / p99 {itl['p99']:.1f} ms")
    return ", ".join(parts)


def _risk_style(risk: float | None) -> str:
    if risk is None:
        return "dim"
    return "bold red" if risk >= 0.7 else "yellow" if risk >= 0.3 else "green"


def _risk(risk: float | None) -> Text:
    return Text(_number(risk), style=_risk_style(risk))


def _flags(values: Sequence[str]) -> Text:
    names = [_SHORT_FLAG.get(value, value) for value in values]
    return Text(", ".join(names), style="red") if names else Text("—", style="dim")


RUNS_COLUMNS = ("id", "time (UTC)", "model", "tokens", "risk", "flags", "prompt")


def aligned(
    heads: Sequence[str], lines: Sequence[Sequence[Text]], *, right: frozenset[int], header: bool = True
) -> Text:
    """Rows of cells laid out as aligned columns (two spaces apart) in one styled text.

    Columns whose index is in ``right`` are right-aligned. A rich ``Table`` takes ten times as long
    to render, and listing runs must start fast.
    """
    head = [Text(name, style="bold") for name in heads]
    widths = [max(cell_len(line[index].plain) for line in [head, *lines]) for index in range(len(heads))]
    out = Text(no_wrap=True, overflow="ignore")
    for line in [head, *lines] if header else lines:
        for index, cell in enumerate(line):
            pad = " " * (widths[index] - cell_len(cell.plain))
            last = index == len(line) - 1
            out.append(pad if index in right else "")
            out.append_text(cell)
            if not last:
                out.append(("" if index in right else pad) + "  ")
        out.append("\n")
    out.rstrip()
    return out


def runs_table(rows: Sequence[TraceRow], *, total: int | None = None, header: bool = True) -> Text:
    """One line per run: short id, time, model (40 characters), generated tokens, risk, flags and
    prompt (60 characters), under an ``N of M runs`` line when ``total`` is given."""
    lines = [
        [
            Text(row.trace_id[:8], style="cyan"),
            Text(short_time(row.created_at_utc)),
            Text(one_line(row.model_id, 40)),
            Text(str(row.generated_tokens)),
            _risk(row.risk_score),
            _flags([flag.value for flag in row.flags_set()]),
            Text(one_line(row.prompt_preview, 60)),
        ]
        for row in rows
    ]
    table = aligned(RUNS_COLUMNS, lines, right=frozenset({3, 4}), header=header)
    return table if total is None else Text(f"{len(rows)} of {total} runs\n").append_text(table)


class KeyValues:
    """Rows of a bold key and a value, values aligned and wrapped under themselves (a light
    ``Table.grid``: ``show`` imports no rich table)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Text, Text]] = []

    def add_row(self, key: str | Text, value: str | Text) -> None:
        """One row; a string key is bold, a string value plain."""
        self.rows.append(
            (
                key if isinstance(key, Text) else Text(key, style="bold"),
                value if isinstance(value, Text) else Text(value),
            )
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max((cell_len(key.plain) for key, _ in self.rows), default=0)
        room = max(options.max_width - width - 2, 20)

        def lines() -> Iterator[Text]:
            for key, value in self.rows:
                for index, part in enumerate(value.wrap(console, room, overflow="fold")):
                    line = key.copy() if index == 0 else Text()
                    line.append(" " * (width - cell_len(line.plain) + 2))
                    line.append_text(part)
                    yield line

        yield _stacked(lines())


class Wrapped:
    """A text wrapped at the width it is drawn in, without the trailing spaces of rich's wrapping."""

    def __init__(self, text: Text) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _stacked(self.text.wrap(console, options.max_width, overflow="fold"))


def _stacked(lines: Iterable[Text]) -> Text:
    """``lines`` one under another, each without trailing spaces, and no line break at the end."""
    out = Text()
    for line in lines:
        line.rstrip()
        out.append_text(line)
        out.append("\n")
    out.rstrip()
    return out


def _pairs() -> KeyValues:
    return KeyValues()


def _section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _stats_line(stats: SeriesStats, values: Sequence[float | None]) -> Text:
    line = Text(sparkline(values) + "  ", style="cyan")
    peak = "" if stats.max_step is None else f" at step {stats.max_step}"
    missing = (
        ""
        if stats.finite == stats.steps
        else f", {stats.steps - stats.finite} of {stats.steps} steps missing"
    )
    line.append(
        f"bits: mean {_number(stats.mean)}, p90 {_number(stats.p90)}, "
        f"max {_number(stats.max)}{peak}{missing}",
        style="default",
    )
    return line


def show_run(digest: RunDigest) -> RenderableType:
    """One run: identity, narrative, risk with its factors, flags, compound signals, early warnings
    with their steps, blamed layers with reasons, and sparklines of entropy and surprisal."""
    parts: list[RenderableType] = [Text(f"Run {digest.trace_id}", style="bold")]
    head = _pairs()
    model = one_line(digest.model_id)
    details = [value for value in (digest.architecture, digest.device, digest.quantization) if value]
    head.add_row("time", f"{digest.created_at_utc} (schema {digest.schema_version})")
    head.add_row("model", Text(model + (f" ({', '.join(one_line(d) for d in details)})" if details else "")))
    seconds = "" if digest.elapsed_ms is None else f", {digest.elapsed_ms / 1000:.1f} s"
    finish = f" ({digest.finish_reason})" if digest.finish_reason else ""
    head.add_row(
        "tokens", f"{digest.prompt_tokens} prompt, {digest.generated_tokens} generated{finish}{seconds}"
    )
    latency = latency_text(digest.ttft_ms, digest.tokens_per_second, digest.inter_token_ms)
    if latency:
        head.add_row("latency", latency)
    head.add_row("prompt", Text(one_line(digest.prompt_text, 300)))
    head.add_row("output", Text(one_line(digest.output_text, 300)))
    if digest.stopped:
        head.add_row("stopped", Text(one_line(digest.stopped, 300)))
    if digest.migrated_from:
        head.add_row("migrated", f"from schema {digest.migrated_from}")
    parts.append(head)
    if digest.narrative:
        parts += [_section("Narrative"), Wrapped(Text(safe_block(digest.narrative)))]
    parts += [_section("Risk"), _risk_part(digest)]
    parts += [_section("Health flags"), Wrapped(_flags_part(digest))]
    if digest.compound_signals:
        parts += [_section("Compound signals"), Wrapped(_signals_part(digest))]
    parts += [_section("Early warning"), _warning_part(digest)]
    if digest.blamed_layers:
        parts += [_section("Blamed layers"), _layers_part(digest)]
    parts.append(_section("Per step"))
    steps = _pairs()
    steps.add_row("entropy", _stats_line(digest.entropy_stats, digest.entropy))
    steps.add_row("surprisal", _stats_line(digest.surprisal_stats, digest.surprisal))
    parts.append(steps)
    if digest.report_warnings:
        parts += [
            _section("Report warnings"),
            Text("\n".join(one_line(w, 200) for w in digest.report_warnings)),
        ]
    return Group(*parts)


def _risk_part(digest: RunDigest) -> RenderableType:
    table = _pairs()
    source = f" ({digest.risk_model})" if digest.risk_model else ""
    table.add_row("score", Text.assemble(_risk(digest.risk_score), source))
    for factor in digest.risk_factors:
        amount = "" if factor.contribution is None else f"{factor.contribution:+.2f}"
        words = f"  ({factor_words(factor.name)})" if factor.name in FACTOR_WORDS else ""
        table.add_row(Text(f"  {one_line(factor.name)}", style="default"), amount + words)
    if not digest.risk_factors:
        table.add_row(Text("  factors", style="default"), Text("none", style="dim"))
    return table


def _flags_part(digest: RunDigest) -> Text:
    if not digest.flags:
        return Text("not recorded", style="dim")
    line = Text()
    for flag in HealthFlag:
        value = digest.flags.get(flag.value)
        line.append(f"{flag.short_name} ", style="default")
        line.append("yes" if value else "no", style="bold red" if value else "green")
        line.append("   ")
    if digest.high_entropy_steps is not None:
        line.append(f"high-entropy steps {digest.high_entropy_steps}")
    return line


def _signals_part(digest: RunDigest) -> Text:
    lines = Text()
    for index, signal in enumerate(digest.compound_signals):
        if index:
            lines.append("\n")
        lines.append(one_line(signal.name), style="bold yellow")
        lines.append(f" (severity {_number(signal.severity)})")
        if signal.description:
            lines.append(f": {one_line(signal.description, 200)}")
        for evidence in signal.evidence:
            lines.append(f"\n    - {one_line(evidence, 200)}")
    return lines


def _warning_part(digest: RunDigest) -> RenderableType:
    table = _pairs()
    peak = "" if digest.peak_warning_step is None else f" (peak at step {digest.peak_warning_step})"
    table.add_row("failure risk", Text.assemble(_risk(digest.failure_risk), peak))
    for firing in digest.warnings_fired:
        where = "step unknown" if firing.step is None else f"first fired at step {firing.step}"
        table.add_row(Text(f"  {one_line(firing.signal)}", style="yellow"), where)
    if not digest.warnings_fired:
        table.add_row(Text("  signals", style="default"), Text("none fired", style="dim"))
    return table


def _layers_part(digest: RunDigest) -> RenderableType:
    lines = [
        [
            Text(str(layer.layer)),
            Text(_number(layer.severity)),
            Text("—" if layer.first_step is None else str(layer.first_step)),
            Text("; ".join(one_line(r) for r in layer.reasons)),
        ]
        for layer in digest.blamed_layers
    ]
    return aligned(("layer", "severity", "from step", "reasons"), lines, right=frozenset({0, 1, 2}))


def comparison_table(comparison: RunComparison) -> RenderableType:
    """Runs side by side, one column per run, and where their token streams diverge."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold cyan")
    table.add_column("", style="bold", no_wrap=True)
    for run in comparison.runs:
        table.add_column(run.trace_id[:8], max_width=48)
    runs = comparison.runs

    def add(label: str, cells: Sequence[RenderableType]) -> None:
        table.add_row(label, *cells)

    add("model", [Text(one_line(run.model_id)) for run in runs])
    add("time (UTC)", [short_time(run.created_at_utc) for run in runs])
    add("prompt", [Text(one_line(run.prompt_text, 60)) for run in runs])
    add(
        "tokens",
        [
            f"{run.generated_tokens}" + (f" ({run.finish_reason})" if run.finish_reason else "")
            for run in runs
        ],
    )
    add("risk", [_risk(run.risk_score) for run in runs])
    add("failure risk", [_risk(run.failure_risk) for run in runs])
    add("flags", [_flags(run.flags) for run in runs])
    add("compound", [Text(", ".join(run.compound_signals) or "—") for run in runs])
    add("warnings", [Text(", ".join(run.warning_signals) or "—") for run in runs])
    for label, attribute in (("entropy", "entropy"), ("surprisal", "surprisal")):
        stats = [getattr(run, attribute) for run in runs]
        add(f"{label} mean", [_number(s.mean) for s in stats])
        add(f"{label} p90", [_number(s.p90) for s in stats])
        add(f"{label} max", [_number(s.max) for s in stats])
    add("blamed layers", [", ".join(str(layer) for layer in run.blamed_layers) or "—" for run in runs])
    add("output", [Text(one_line(run.output_text, 60)) for run in runs])
    return Group(table, Text(_divergence_line(comparison)))


def _divergence_line(comparison: RunComparison) -> str:
    divergence = comparison.divergence
    if divergence is None:
        return "\nThe runs do not share a prompt hash (model and prompt): token streams not compared."
    if divergence.identical:
        return f"\nSame prompt: identical token streams ({divergence.common_prefix} tokens)."
    return f"\nSame prompt: the token streams first diverge at generated step {divergence.step}."


GROUP_FLAG_HEADS = {
    HealthFlag.NAN: "nan",
    HealthFlag.INF: "inf",
    HealthFlag.ATTENTION_COLLAPSE: "collapse",
    HealthFlag.REPETITION_LOOP: "loop",
    HealthFlag.MID_LAYER_ANOMALY: "mid-layer",
}


def group_table(summary: GroupSummary) -> Text:
    """The model (or prompt) comparison: runs, risk mean/p50/p90, the share of runs with each flag,
    mean entropy (bits) and generated tokens per group."""
    key = "model" if summary.by == "model" else "prompt hash"
    heads = [key, "runs", "risk", "p50", "p90", *GROUP_FLAG_HEADS.values(), "entropy", "tokens"]
    lines = [_group_cells(group, summary.by) for group in summary.groups]
    if summary.by == "prompt":
        heads += ["model", "prompt"]
        for line, group in zip(lines, summary.groups, strict=True):
            prompt = summary.prompts.get(group.key)
            line += (
                [Text(one_line(prompt.model_id, 40)), Text(one_line(prompt.prompt_preview, 60))]
                if prompt
                else [Text(""), Text("")]
            )
    title = Text(f"{summary.total_runs} runs by {summary.by} (risk: mean; flags: share of runs)\n")
    return title.append_text(aligned(heads, lines, right=frozenset(range(1, 12))))


def _group_cells(group: ModelAggregate, by: str) -> list[Text]:
    key = one_line(group.key, 48) if by == "model" else group.key[:16]
    rates = [_rate(group.flag_rates.get(flag.value, 0.0)) for flag in GROUP_FLAG_HEADS]
    return [
        Text(key),
        Text(str(group.runs)),
        _risk(group.risk_mean),
        Text(_number(group.risk_p50)),
        Text(_number(group.risk_p90)),
        *rates,
        Text(_number(group.mean_entropy)),
        Text(str(group.generated_tokens)),
    ]


def _rate(rate: float) -> Text:
    if rate == 0:
        return Text("0%", style="dim")
    return Text(f"{rate:.1%}" if rate < 0.1 else f"{rate:.0%}", style="red")
