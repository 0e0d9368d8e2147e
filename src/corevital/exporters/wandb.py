"""Weights & Biases: each report's per-step metrics, the report as an artifact, a table of the runs.

:class:`WandbExporter` logs into one W&B run: a run of its own, started at the first report
(``--sink wandb``: one W&B run per ``corevital run``, project ``--wandb-project``, mode
``--wandb-mode``, files under ``<out>/wandb``) and finished at :meth:`WandbExporter.close`, or a
run the caller started (``WandbExporter(run=wandb_run)``), which it never finishes.

For each report:

* the per-step metrics of the generated tokens (``entropy``, ``surprisal``, ``top_k_margin``,
  ``topk_mass``, ``perplexity``) under ``report_<first 8 of the trace id>/``, logged against that
  report's own step metric ``report_<id>/token`` (the 0-based generated-token index): several
  reports in one run do not collide, each has its own x axis;
* its totals under ``corevital/`` (risk score, tokens, generation time, mean entropy, the number
  of flags) against the step metric ``report`` (1, 2, ... within the W&B run);
* the report JSON as an artifact ``report-<trace id>`` of type ``corevital-report``
  (``include_artifacts``). **The artifact holds the prompt and the output text**: leave it off
  (``include_artifacts=False``) or keep the project private when prompts are sensitive. Nothing
  else sent holds text.

At :meth:`~WandbExporter.close`: a table ``corevital_reports`` (trace id, model, risk, flags,
tokens, finish reason, time) and the run summary (``runs`` with sampling weights, ``reports``,
``risk_score_mean``, ``risk_score_max``, ``flagged_reports``).

W&B's calls take milliseconds per logged step, so :meth:`~WandbExporter.export` only queues the
report (up to ``max_queued``; beyond, a report is dropped and counted) and a worker thread of the
exporter logs it; ``close()`` waits for the queue (at most ``close_timeout_s``). Reports that could
not be logged or were dropped are reported by ``close()`` as an
:class:`~corevital.errors.ExporterError` (logged by the caller, never raised into a run).

``wandb`` (the ``wandb`` extra) is imported when the exporter is built; the run is started with
its console capture, system statistics, git and code saving off and ``silent=True``; nothing is
set in the environment.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Self

from corevital.closing import ClosesOnExit
from corevital.errors import ConfigError, ExporterError, import_extra
from corevital.exporters.sampling import report_weight
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.rows import HealthFlag

if TYPE_CHECKING:
    from corevital.config import Settings
    from corevital.report.schema import Report

log = logging.getLogger(__name__)

INSTALL_HINT = "Weights & Biases export needs the wandb extra: pip install 'corevital[wandb]'"
ARTIFACT_TYPE = "corevital-report"
TABLE_KEY = "corevital_reports"
TABLE_COLUMNS = [
    "trace_id",
    "model",
    "risk_score",
    "flags",
    "prompt_tokens",
    "generated_tokens",
    "finish_reason",
    "created_at_utc",
]
STEP_METRICS = ("entropy", "surprisal", "top_k_margin", "topk_mass", "perplexity")
"""The per-step values logged from each timeline entry's ``logits_summary``."""
REPORT_STEP = "report"
"""The step metric of the per-report totals (``corevital/*``)."""
Mode = Literal["online", "offline"]


def client() -> ModuleType:
    """The ``wandb`` package; :class:`NotAvailableError` without the extra."""
    return import_extra("wandb", hint=INSTALL_HINT)


def quiet_settings(wandb: ModuleType) -> Any:
    """Run settings that keep W&B quiet and minimal: no console capture, stats, git or code."""
    return wandb.Settings(
        silent=True,
        console="off",
        x_disable_stats=True,
        x_disable_machine_info=True,
        disable_git=True,
        save_code=False,
        disable_code=True,
        init_timeout=60.0,
    )


def fired_flags(report: Report) -> list[str]:
    """Health flags set (short names) and compound signals of ``report``."""
    flags = report.health_flags
    names = [] if flags is None else [f.short_name for f in HealthFlag if getattr(flags, f.value) is True]
    names += [signal.name for signal in report.extensions.compound_signals or ()]
    return names


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def step_rows(report: Report) -> list[dict[str, float | int]]:
    """One row per generated token: ``token`` (0-based index) and the finite :data:`STEP_METRICS`."""
    rows: list[dict[str, float | int]] = []
    for token, step in enumerate(report.timeline):
        row: dict[str, float | int] = {"token": token}
        for name in STEP_METRICS:
            value = _finite(getattr(step.logits_summary, name))
            if value is not None:
                row[name] = value
        rows.append(row)
    return rows


def _risk(report: Report) -> float | None:
    risk = report.extensions.risk
    return _finite(risk.risk_score) if risk is not None else None


@dataclass
class _Totals:
    reports: int = 0
    runs: float = 0.0
    risks: list[float] = field(default_factory=list)
    flagged: int = 0
    rows: list[list[Any]] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)  # section -> trace id


class WandbExporter(ClosesOnExit):
    """Logs reports into one W&B run (its own, or ``run``: the caller's, never finished here).

    ``project``, ``mode`` (``online`` or ``offline``), ``directory`` (where W&B writes the run's
    files), ``name`` and ``config`` are used when the exporter starts its own run.
    """

    def __init__(
        self,
        run: Any = None,
        *,
        project: str = "corevital",
        mode: Mode = "online",
        directory: str | Path | None = None,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        include_artifacts: bool = True,
        max_queued: int = 1000,
        close_timeout_s: float = 600.0,
    ) -> None:
        if mode not in ("online", "offline"):
            raise ConfigError(f"wandb mode must be online or offline, not {mode!r}")
        if not project.strip():
            raise ConfigError("the W&B project name is empty")
        self._wandb = client()
        self._run: Any = run
        self.owns_run = run is None
        self.project = project
        self.mode: Mode = mode
        self.directory = Path(directory) if directory is not None else None
        self.name = name
        self.config = dict(config or {})
        self.include_artifacts = include_artifacts
        self.totals = _Totals()
        self.close_timeout_s = close_timeout_s
        self.failed = 0  # reports the worker could not log
        self.dropped = 0  # reports refused because the queue was full
        self._queue: queue.Queue[EncodedReport | None] = queue.Queue(maxsize=max_queued)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._start_error: str | None = None
        self._last_error = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """``--sink wandb``: ``--wandb-project``, ``--wandb-mode``; files under ``<out>/wandb``.

        Online mode needs credentials now (``WANDB_API_KEY``, ``wandb login``): without them this
        fails before any model is loaded instead of prompting mid-run."""
        wandb = client()
        directory = Path(settings.out)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--sink wandb cannot write under {directory}: {exc.strerror}") from None
        if settings.wandb_mode == "online" and not wandb.login(prompt=False, verify=False):
            raise ConfigError(
                "--sink wandb needs W&B credentials in online mode: set WANDB_API_KEY or run "
                "`wandb login`, or pass --wandb-mode offline"
            )
        return cls(
            project=settings.wandb_project,
            mode=settings.wandb_mode,
            directory=directory,
            config={"corevital": {"model": settings.model, "capture": settings.capture}},
        )

    @property
    def run(self) -> Any:
        """The W&B run (started here at the first report when it is our own)."""
        return self._run

    def _ensure_run(self) -> Any:
        if self._start_error is not None:  # tried once: later reports fail fast instead of waiting again
            raise ExporterError(f"the W&B run could not start: {self._start_error}")
        if self._run is None:
            try:
                self._run = self._start()
            except Exception as exc:
                lines = str(exc).strip().splitlines()
                self._start_error = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                raise ExporterError(f"the W&B run could not start: {self._start_error}") from exc
        return self._run

    def _start(self) -> Any:
        from corevital import __version__

        return self._wandb.init(
            project=self.project,
            mode=self.mode,
            dir=str(self.directory) if self.directory is not None else None,
            name=self.name,
            config={**self.config, "corevital_version": __version__},
            job_type="corevital",
            settings=quiet_settings(self._wandb),
            reinit="create_new",
        )

    def _section(self, trace_id: str) -> str:
        section = f"report_{trace_id[:8]}"
        owner = self.totals.sections.setdefault(section, trace_id)
        return section if owner == trace_id else f"report_{trace_id}"

    def export(self, report: Report) -> None:
        """Queue ``report`` for the worker thread, which logs it into the run (W&B calls take
        milliseconds per step: they are kept off the generating thread)."""
        self.export_encoded(EncodedReport(report))

    def export_encoded(self, encoded: EncodedReport) -> None:
        """:meth:`export`; the artifact is the report's shared JSON encoding (made on the worker
        thread when no store made it)."""
        with self._lock:
            if self._closed:
                raise ExporterError("the W&B exporter is closed")
            if self._start_error is not None:
                raise ExporterError(f"the W&B run could not start: {self._start_error}")
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="corevital-wandb", daemon=True)
                self._worker.start()
        try:
            self._queue.put_nowait(encoded)
        except queue.Full:
            self.dropped += 1
            raise ExporterError(
                f"W&B logging is behind ({self._queue.maxsize} reports queued): "
                f"report {encoded.trace_id} dropped"
            ) from None

    def _work(self) -> None:
        while (encoded := self._queue.get()) is not None:
            try:
                self._log(encoded)
            except Exception as exc:  # counted and reported by close(); the worker goes on
                self.failed += 1
                lines = str(exc).strip().splitlines()
                self._last_error = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                log.warning("W&B: report %s not logged: %s", encoded.trace_id, self._last_error)

    def _log(self, encoded: EncodedReport) -> None:
        """Log the report's steps, totals and artifact into the run (the worker thread)."""
        report = encoded.report
        run = self._ensure_run()
        totals = self.totals
        totals.reports += 1
        index = totals.reports
        section = self._section(report.trace_id)
        run.define_metric(f"{section}/token", hidden=True)
        run.define_metric(f"{section}/*", step_metric=f"{section}/token")
        if index == 1:
            run.define_metric(REPORT_STEP, hidden=True)
            run.define_metric("corevital/*", step_metric=REPORT_STEP)
        rows = step_rows(report)
        for row in rows:
            run.log({f"{section}/{key}": value for key, value in row.items()})

        risk = _risk(report)
        flags = fired_flags(report)
        weight = report_weight(report)
        entropies = [float(row["entropy"]) for row in rows if "entropy" in row]
        values: dict[str, Any] = {
            REPORT_STEP: index,
            "corevital/prompt_tokens": report.summary.prompt_tokens,
            "corevital/generated_tokens": report.summary.generated_tokens,
            "corevital/flags": len(flags),
            "corevital/sampling_weight": weight,
        }
        if risk is not None:
            values["corevital/risk_score"] = risk
        for name in ("generation_ms", "ttft_ms", "tokens_per_second"):
            value = _finite(getattr(report.summary, name))
            if value is not None:
                values[f"corevital/{name}"] = value
        if entropies:
            values["corevital/mean_entropy"] = sum(entropies) / len(entropies)
        run.log(values)

        if self.include_artifacts:
            artifact = self._wandb.Artifact(
                f"report-{report.trace_id}",
                type=ARTIFACT_TYPE,
                metadata={
                    "trace_id": report.trace_id,
                    "model": report.model.hf_id,
                    "risk_score": risk,
                    "flags": flags,
                    "created_at_utc": report.created_at_utc,
                },
            )
            with artifact.new_file("report.json", encoding="utf-8") as handle:
                handle.write(encoded.json_text)
            run.log_artifact(artifact)

        totals.runs += weight
        if risk is not None:
            totals.risks.append(risk)
        totals.flagged += bool(flags)
        totals.rows.append(
            [
                report.trace_id,
                report.model.hf_id,
                risk,
                ", ".join(flags),
                report.summary.prompt_tokens,
                report.summary.generated_tokens,
                report.generated.finish_reason,
                report.created_at_utc,
            ]
        )

    def close(self) -> None:
        """Wait for the queued reports to be logged (at most ``close_timeout_s``), log the table and
        the summary, and finish the run when it is our own; :class:`ExporterError` when reports
        were not logged."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
        if worker is None:
            return  # no report: no run was started
        deadline = time.monotonic() + self.close_timeout_s
        with contextlib.suppress(queue.Full):  # then the join below times out too
            self._queue.put(None, timeout=self.close_timeout_s)
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            raise ExporterError(
                f"W&B logging did not finish within {self.close_timeout_s:g} s "
                f"({self._queue.qsize()} reports still queued); the run is left to wandb's exit handler"
            )
        run, totals = self._run, self.totals
        if run is not None:
            try:
                run.log({TABLE_KEY: self._wandb.Table(columns=TABLE_COLUMNS, data=totals.rows)})
                run.summary.update(
                    {
                        "runs": totals.runs,
                        "reports": totals.reports,
                        "flagged_reports": totals.flagged,
                        "risk_score_mean": sum(totals.risks) / len(totals.risks) if totals.risks else None,
                        "risk_score_max": max(totals.risks) if totals.risks else None,
                    }
                )
            finally:
                if self.owns_run:
                    run.finish()
        if self.failed or self.dropped:
            raise ExporterError(
                f"W&B: {self.failed} report(s) not logged, {self.dropped} dropped"
                + (f" (last error: {self._last_error})" if self._last_error else "")
            )


__all__ = ["ARTIFACT_TYPE", "STEP_METRICS", "TABLE_COLUMNS", "TABLE_KEY", "WandbExporter", "step_rows"]
