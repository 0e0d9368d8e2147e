"""The run pipeline: capture -> analysis -> report -> sinks, wired once for the CLI and the library.

Torch is imported only when a model is loaded, so ``import corevital`` stays light. What a command
does around a run (timing, GC, signals) is in :mod:`corevital.pipeline_process`; the analysis' view
of a capture in :mod:`corevital.pipeline_signals` (both re-exported here).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corevital.analysis.calibration.profile import (
    CalibrationProfile,
    GenerationIdentity,
    ModelIdentity,
    load_calibration_profile,
    resolve_profile_path,
)
from corevital.analysis.diagnose import Diagnosis, diagnose
from corevital.analysis.profiles import ModelProfile, load_profile
from corevital.analysis.signals import SequenceSignals
from corevital.capture.records import generation_record
from corevital.closing import ClosesOnExit
from corevital.config import Settings
from corevital.errors import InputError
from corevital.exporters.base import Outputs, open_outputs
from corevital.perf import Operation, PerfRecorder, StrictMeasurements, cyclic_gc_paused
from corevital.pipeline_process import settle_loaded_model as settle_loaded_model
from corevital.pipeline_process import signals_deferred as signals_deferred
from corevital.pipeline_process import timed as timed
from corevital.pipeline_signals import merged_capture as merged_capture
from corevital.pipeline_signals import signals_from_capture as signals_from_capture
from corevital.report.builder import BuildContext, build_report
from corevital.report.diagnosis import extensions, health_flags
from corevital.report.rag import read_rag_context
from corevital.report.schema import PerformanceInfo, RagContext, Report, SinkConfig
from corevital.report.timestamps import utc_now
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.local import LocalFileSink
from corevital.sinks.open import store_location

if TYPE_CHECKING:
    from corevital.capture.loading import LoadedModel
    from corevital.capture.messages import Prompt
    from corevital.capture.options import Tuning
    from corevital.capture.records import ProgressCallback, RunCapture, SequenceCapture, StepCallback

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    reports: list[Report]
    locations: list[str]
    capture: RunCapture
    used_default_model: bool
    sink_description: str
    json_paths: list[str] = field(default_factory=list)


def sink_target(settings: Settings) -> str:
    """Where the run's first store writes (the report's ``run_config.sink.target``; "" with none)."""
    stores = settings.stores
    return store_location(stores[0], settings) if stores else ""


def sink_type(settings: Settings) -> str:
    """The report's ``run_config.sink.type``: the sinks joined by "+" (``sqlite+prometheus``)."""
    return "+".join(settings.sink)


def keep_layer_detail(settings: Settings, diagnosis: Diagnosis) -> bool:
    """full: always; summary: never; on_risk: when the run is risky or a hard flag fired."""
    if settings.capture == "full":
        return True
    if settings.capture == "summary":
        return False
    flags = diagnosis.health_flags
    hard = flags.nan_detected or flags.inf_detected or flags.repetition_loop_detected
    return hard or diagnosis.risk.risk_score >= settings.on_risk_threshold


class Pipeline(ClosesOnExit):
    """Loads the model once and turns prompts into stored reports."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], str] = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        outputs: Outputs | None = None,
    ) -> None:
        self.settings = settings
        self._outputs = outputs
        self.last_outputs: Outputs | None = None  # kept after close(): its failure counts
        self._clock = clock
        self._new_id = new_id
        self._loaded: LoadedModel | None = None
        self._rag: RagContext | None = None
        self._calibration: CalibrationProfile | None = None
        self._profiles: dict[str, ModelProfile] = {}
        self._inputs_checked = False
        self.stored = 0  # reports written by run(), counted as each batch lands

    @property
    def outputs(self) -> Outputs:
        """The run's stores and exporters, opened on first use (:meth:`check_inputs` opens them)."""
        if self._outputs is None:
            self._outputs = open_outputs(self.settings) if self.writes() else Outputs()
            self.last_outputs = self._outputs
        return self._outputs

    def writes(self) -> bool:
        """Whether this process writes reports: not the ranks other than 0 of a tensor-parallel run."""
        if self.settings.tp_plan == "none" and self._loaded is None:
            return True
        from corevital.capture.tensor_parallel import launched_rank, writes_reports

        if self._loaded is None:
            return launched_rank() == 0  # before the load: torchrun's rank
        return writes_reports(self._loaded.model)

    def close(self) -> None:
        """Close the stores and exporters (exporters flush what is pending)."""
        if self._outputs is not None:
            outputs, self._outputs = self._outputs, None
            outputs.close()

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            from corevital.capture.loading import ModelSpec, load_model

            self._loaded = load_model(ModelSpec.from_settings(self.settings))
        return self._loaded

    def use_model(self, loaded: LoadedModel) -> None:
        self._loaded = loaded

    def derived(self, **changes: Any) -> Pipeline:
        """A pipeline with some settings changed that shares this one's model and loaded files."""
        other = Pipeline(self.settings.model_copy(update=changes), clock=self._clock, new_id=self._new_id)
        other._loaded, other._rag = self._loaded, self._rag
        if "calibration" not in changes:
            other._calibration = self._calibration
        return other

    def rag_context(self) -> RagContext | None:
        """The ``--rag-context`` file's metadata (read once; a bad file is a one-line InputError)."""
        if self.settings.rag_context is None:
            return None
        if self._rag is None:
            self._rag = read_rag_context(self.settings.rag_context)
        return self._rag

    def profile(self, model_type: str) -> ModelProfile:
        """The threshold profile for a model family with this pipeline's overrides (read once)."""
        if model_type not in self._profiles:
            self._profiles[model_type] = load_profile(model_type, self.settings.thresholds or None)
        return self._profiles[model_type]

    def calibration(self) -> CalibrationProfile | None:
        """The ``--calibration`` profile (read once; a bad file is a one-line ConfigError)."""
        if self.settings.calibration is None:
            return None
        if self._calibration is None:
            self._calibration = load_calibration_profile(resolve_profile_path(self.settings.calibration))
        return self._calibration

    def check_calibration_model(self) -> None:
        """Refuse a calibration profile made for another model than the loaded one."""
        profile = self.calibration()
        if profile is None:
            return
        profile.check_model(ModelIdentity.of(self.loaded))

    def calibration_mismatch(self) -> list[str]:
        """One line when this run's decoding differs from the calibration runs' (empty when it does not)."""
        profile = self.calibration()
        if profile is None:
            return []
        changed = profile.generation.differences(generation_identity(self.settings))
        if not changed:
            return []
        return [
            f"this run ({', '.join(changed)}) differs from the calibration runs "
            f"({profile.generation.describe()}); the profile and its risk model describe runs like those"
        ]

    def capture(
        self,
        prompts: Sequence[Prompt],
        callback: StepCallback | None = None,
        *,
        first_index: int = 0,
        generate_kwargs: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        tuning: Tuning | None = None,
    ) -> RunCapture:
        """Generate for prompt strings or chat messages; ``generate_kwargs``: further generate() keywords;
        ``tuning``: memory budgets (default: from the model's size and the device's free memory)."""
        from corevital.capture.runner import capture_prompts

        rag = self.rag_context()
        span = None
        if rag is not None and rag.context_span is not None:
            span = (rag.context_span[0], rag.context_span[1])
        return capture_prompts(
            self.loaded,
            prompts,
            self.settings,
            callback=callback,
            context_span=span,
            first_index=first_index,
            generate_kwargs=generate_kwargs,
            progress=progress,
            tuning=tuning,
        )

    def build(self, run: RunCapture) -> list[Report]:
        self.check_calibration_model()
        with cyclic_gc_paused():
            return [self.build_one(run, seq) for seq in run.sequences]

    def diagnose_one(self, run: RunCapture, seq: SequenceCapture) -> tuple[SequenceSignals, Diagnosis]:
        """The analysis of one captured sequence (no report built)."""
        settings = self.settings
        caps = run.model.capabilities
        signals = signals_from_capture(seq, model_id=run.model.hf_id, caps=caps)
        diagnosis = diagnose(
            signals,
            self.profile(caps.model_type),
            basin_scores=seq.prompt_telemetry.basin_scores if seq.prompt_telemetry is not None else None,
            context_share=self._context_share(seq),
            check_consistency=settings.validate_metrics or settings.log_level == "DEBUG",
            calibration=self.calibration(),
        )
        return signals, diagnosis

    def _context_share(self, seq: SequenceCapture) -> float | None:
        telemetry = seq.prompt_telemetry
        if self.rag_context() is None or telemetry is None or telemetry.context_share is None:
            return None
        finite = telemetry.context_share[np.isfinite(telemetry.context_share)]
        return float(finite.mean()) if finite.size else None

    def build_one(self, run: RunCapture, seq: SequenceCapture) -> Report:
        settings = self.settings
        _, diagnosis = self.diagnose_one(run, seq)
        rag = self.rag_context()
        attention_observed = seq.attention is not None
        ext = extensions(diagnosis, attention_observed=attention_observed, seq=seq)
        if rag is not None:
            ext.rag = rag.model_copy(update={"context_attention_share": diagnosis.context_share})
        if ext.calibration is not None:
            ext.calibration.warnings = self.calibration_mismatch() or None
        ctx = BuildContext(
            trace_id=self._new_id(),
            created_at_utc=self._clock(),
            sink=SinkConfig(type=sink_type(settings), target=sink_target(settings)),
            device_requested=settings.device,
            topk=settings.topk,
            mass_k=settings.topk_mass_k,
            sketch_dim=settings.sketch_dim,
            include_layers=keep_layer_detail(settings, diagnosis),
            health_flags=health_flags(diagnosis, attention_observed=attention_observed),
            extensions=ext,
        )
        return build_report(run, seq, ctx)

    def write(self, reports: list[Report]) -> tuple[list[str], list[str]]:
        """Sample, store and export ``reports``; the stores' locations and the JSON files written.

        A report the sampler drops has no location (""); exporters' failures are logged and
        counted in ``outputs.failures``, never raised.
        """
        settings = self.settings
        if not self.writes():  # rank 0 of the model's tensor-parallel processes writes them
            return [""] * len(reports), []
        outputs = self.outputs
        encoded = [EncodedReport(report) for report in reports]  # one encoding: stores and JSON files
        # One batch, one transaction per store: a run killed while writing keeps whole batches.
        locations = [where[0] if where else "" for where in outputs.write_batch(encoded)]
        kept = [
            e for e in encoded if e.report.extensions.sampling is None or e.report.extensions.sampling.kept
        ]
        json_paths: list[str] = []
        if settings.write_json and "sqlite" in settings.stores and kept:
            json_sink = LocalFileSink(settings.out, pretty=settings.json_pretty)
            try:
                json_paths = [json_sink.write_encoded(one) for one in kept]
            finally:
                json_sink.close()
        return locations, json_paths

    def run(
        self,
        prompts: list[str],
        callback: StepCallback | None = None,
        perf: PerfRecorder | None = None,
        on_batch: Callable[[list[Report], list[str]], None] | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunOutcome:
        """Generate, build and write, one batch (``batch_size`` prompts) at a time.

        Every prompt is tokenized and checked against the context window before the first
        generation. Each batch's reports are written as soon as they are built (``on_batch`` is
        called with them and their locations), so an interruption keeps every finished batch;
        :attr:`stored` counts the reports written so far.
        """
        from corevital.capture.runner import check_prompts

        self.check_inputs()
        with timed(perf if self._loaded is None else None, "model_load"):
            loaded = self.loaded
        self.check_calibration_model()
        check_prompts(loaded, prompts, self.settings)
        if perf is not None and perf.mode == "strict":
            self._strict_baseline(prompts, perf)
        captures: list[RunCapture] = []
        reports: list[Report] = []
        locations: list[str] = []
        json_paths: list[str] = []
        size = self.settings.batch_size
        for start in range(0, len(prompts), size):
            with timed(perf, "model_inference") as inference:
                run = self.capture(
                    prompts[start : start + size], callback=callback, first_index=start, progress=progress
                )
            with timed(perf, "report_build"):
                built = self.build(run)
            if perf is not None and inference is not None:
                inference.children.append(Operation("tokenize", run.tokenize_ms))
                perf.step_ms = [*perf.step_ms, *run.step_ms]
                performance = PerformanceInfo.model_validate(perf.extension())
                for report in built:
                    report.extensions.performance = performance
            with timed(perf, "sink_write"), signals_deferred():
                written, paths = self.write(built)
                self.stored += sum(1 for where in written if where)
            captures.append(run)
            reports.extend(built)
            locations.extend(written)
            json_paths.extend(paths)
            if on_batch is not None:
                on_batch(built, written)
        return RunOutcome(
            reports=reports,
            locations=locations,
            capture=merged_capture(captures),
            used_default_model=loaded.resolved.is_default,
            sink_description=sink_target(self.settings),
            json_paths=json_paths,
        )

    def already_stored(self, prompts: list[str]) -> list[bool]:
        """For ``--resume``: whether each prompt has a report in the first store made with this
        run's model and decoding settings (seed, sampling, token budget, capture mode)."""
        from corevital.analysis.hashing import prompt_hash
        from corevital.sinks.open import open_location
        from corevital.sinks.rows import TraceQuery

        stores = self.settings.stores
        if not stores or stores[0] == "local":
            raise InputError("--resume needs a store to look in: --sink sqlite or --sink postgres")
        location = self.settings.db if stores[0] == "postgres" else sink_target(self.settings)
        if location is None or (stores[0] == "sqlite" and not Path(location).exists()):
            return [False] * len(prompts)
        model_id = self.loaded.resolved.hf_id
        wanted = generation_record(self.settings, self.loaded.model.generation_config)
        found: list[bool] = []
        store = open_location(location, read_only=True)
        try:
            for text in prompts:
                rows = store.list(TraceQuery(prompt_hash=prompt_hash(model_id, text), limit=None))
                found.append(any(_same_run(store.get(row.trace_id), wanted, self.settings) for row in rows))
        finally:
            store.close()
        return found

    def _strict_baseline(self, prompts: list[str], perf: PerfRecorder) -> None:
        """Warm up, then time the same generation uninstrumented (the model's default attention).

        The warm-up runs a few tokens both ways, uninstrumented and observed (discarded), so that
        neither timed run pays first-use costs: the device's first kernels, and the observer's
        checks made once per model (``capture.output_head``, ``capture.layer_stream``).
        """
        from corevital.capture.runner import baseline_generate_ms, capture_prompts

        short = min(4, self.settings.max_new_tokens)
        with timed(perf, "warmup") as warmup:
            baseline_generate_ms(self.loaded, prompts[:1], self.settings, max_new_tokens=short)
            few = self.settings.model_copy(update={"max_new_tokens": short})
            capture_prompts(self.loaded, prompts[:1], few)
        with timed(perf, "baseline"):
            baseline_ms = baseline_generate_ms(self.loaded, prompts, self.settings)
        load = next((op.ms for op in perf.root.children if op.name == "model_load"), None)
        perf.strict = StrictMeasurements(
            warmup_ms=warmup.ms if warmup is not None else 0.0,
            baseline_ms=baseline_ms,
            original_model_load_ms=load,
        )

    def check_inputs(self) -> None:
        """Fail before a model is loaded on what would fail later (checked once per pipeline).

        The threshold overrides' keys, the stores and exporters (opened now: a missing extra, a bad
        endpoint, an unwritable store), the ``--rag-context`` file, the
        ``--calibration`` profile.
        """
        if self._inputs_checked:
            return
        if self.settings.thresholds:  # the keys are the same in every family's profile
            load_profile("default", self.settings.thresholds)
        self.outputs  # noqa: B018 - opening the stores and exporters is the check
        self.rag_context()
        self.calibration()
        self._inputs_checked = True


def _same_run(report: Report | None, wanted: Any, settings: Settings) -> bool:
    """Whether a stored report was made with the decoding and capture settings of this run."""
    if report is None:
        return False
    gen = report.run_config.generation
    return (
        report.run_config.seed == settings.seed
        and report.run_config.max_new_tokens == settings.max_new_tokens
        and (report.run_config.capture_mode or "full") == settings.capture
        and gen.do_sample == wanted.do_sample
        and (gen.temperature if gen.do_sample else None) == wanted.temperature  # greedy: written as 0
        and gen.top_k == wanted.top_k
        and gen.top_p == wanted.top_p
    )


def generation_identity(settings: Settings) -> GenerationIdentity:
    """The decoding settings a calibration profile records and compares."""
    gen = generation_record(settings)
    return GenerationIdentity(
        do_sample=gen.do_sample,
        temperature=gen.temperature,
        top_k=gen.top_k,
        top_p=gen.top_p,
        max_new_tokens=gen.max_new_tokens,
    )


def describe_loaded(loaded: Any) -> str:
    caps = loaded.capabilities
    return (
        f"{loaded.resolved.hf_id} ({caps.architecture}, {caps.num_layers} layers, "
        f"{caps.num_attention_heads} heads, {loaded.device}, {loaded.dtype_name})"
    )


__all__ = ["Pipeline", "RunOutcome", "describe_loaded", "sink_target", "sink_type"]
