"""The library API: :class:`CoreVitalMonitor`.

Concurrency: a monitor can be shared by threads. Models are loaded once per distinct model
setting (name, GGUF file, revision, device, dtype, quantization) under a lock, then reused by
every later call. Generations on the same loaded model are serialised (a model observed by
CoreVital runs one ``generate()`` at a time: hooks and sampling seeds are per call); generations
on different models run concurrently. ``get_report()`` and the other ``get_*`` helpers refer to
the most recent run finished on this monitor; threads should use the reports ``run`` returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from corevital.analysis.policies import StopPolicy
from corevital.analysis.profiles import load_profile
from corevital.capture.generate_kwargs import check_generate_kwargs
from corevital.capture.messages import Messages, Prompt, prompt_text
from corevital.closing import ClosesOnExit
from corevital.config import Settings, load_settings
from corevital.errors import ConfigError, InputError
from corevital.exporters.base import Outputs, open_outputs
from corevital.live import LiveSession, StreamEvent
from corevital.modes import CaptureMode
from corevital.monitor_arguments import (
    as_number,
    batch_prompts,
    default_policies,
    one_prompt,
    returned_sequences,
    signal_names,
    split_generate_kwargs,
    stop_policies,
)
from corevital.pipeline import Pipeline
from corevital.report.schema import Report
from corevital.summary import summarize_report

if TYPE_CHECKING:  # loading imports torch and transformers: only when a model is needed
    from corevital.capture.loading import LoadedModel, ModelSpec

__all__ = ["CoreVitalMonitor", "default_policies"]

_END = object()


class _ConsumerStopped:
    """The stop policy of a stream whose consumer stopped reading: ends the generation."""

    name = "consumer_stopped"

    def __init__(self) -> None:
        self.event = threading.Event()

    def check(self, step: Any) -> str | None:
        return "the stream's consumer stopped reading" if self.event.is_set() else None


class CoreVitalMonitor(ClosesOnExit):
    """Instrumented generation with health signals, for code that embeds CoreVital.

    ``model``: a Hugging Face id, a local directory or ``"default"``; None takes the setting
    ``model`` (``COREVITAL_MODEL``, else the embedded default model), as the CLI does.
    ``capture``: full, summary or on_risk (the setting ``capture``, the CLI's ``--capture``; reports
    record it as ``run_config.capture_mode``). ``risk_threshold``: the risk at which on_risk
    capture keeps per-layer detail. ``intervene_on_risk_above`` / ``intervene_on_signals``: what
    :meth:`should_intervene` checks after a run (health flag names, compound-signal or early-warning
    signal names). ``policies``: live intervention policies that stop a generation while it runs.
    ``sink``: None keeps reports in memory only. Otherwise one destination or a list of them: a sink
    name (``"sqlite"``, ``"local"``, ``"postgres"``, ``"prometheus"``, ``"otel"``, ``"datadog"``,
    ``"wandb"``, ``"http"``, or ``"package.module:Class"``) or an object with ``write(report)`` or
    ``export(report)`` (docs/production.md). The destinations are opened with the monitor's settings
    on the first run that writes and kept until :meth:`close`; an exporter's failure is logged and
    counted, never raised. Any other setting of :class:`corevital.config.Settings` can be passed by
    name.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        capture: CaptureMode = "full",
        risk_threshold: float = 0.7,
        intervene_on_risk_above: float = 0.8,
        intervene_on_signals: Sequence[str] = (),
        policies: Sequence[StopPolicy] = (),
        max_new_tokens: int = 20,
        device: str = "auto",
        seed: int = 42,
        sink: str | object | Sequence[str | object] | None = None,
        out: str = "runs",
        **settings: Any,
    ) -> None:
        if "capture_mode" in settings:
            raise ConfigError("the capture mode is given as capture=... (the setting capture, --capture)")
        destinations: list[Any]
        if sink is None:
            destinations = []
        elif isinstance(sink, list | tuple):
            destinations = list(sink)
        else:
            destinations = [sink]
        names = [d for d in destinations if isinstance(d, str)]
        self._sink_objects = [d for d in destinations if not isinstance(d, str)]
        for obj in self._sink_objects:
            if not (callable(getattr(obj, "write", None)) or callable(getattr(obj, "export", None))):
                raise ConfigError(
                    f"sink {obj!r} is neither a sink name nor an object with write(report) or export(report)"
                )
        self._base: dict[str, Any] = {
            **({} if model is None else {"model": model}),
            "capture": capture,
            "on_risk_threshold": risk_threshold,
            "max_new_tokens": max_new_tokens,
            "device": device,
            "seed": seed,
            "sink": names or ["sqlite"],
            "out": out,
            **settings,
        }
        self._store = bool(destinations)
        self._store_names = bool(names)
        self._outputs: Outputs | None = None
        self._outputs_lock = threading.Lock()
        self.intervene_on_risk_above = as_number("intervene_on_risk_above", intervene_on_risk_above)
        self.intervene_on_signals = signal_names("intervene_on_signals", intervene_on_signals)
        self.policies = stop_policies(policies)
        self._settings = load_settings(self._base)  # fail now on a bad setting
        self._models: dict[ModelSpec, LoadedModel] = {}
        self._models_lock = threading.Lock()
        self._last: Report | None = None
        self._last_lock = threading.Lock()
        self.load_count = 0

    # --- destinations --------------------------------------------------------------------------
    @property
    def outputs(self) -> Outputs | None:
        """The stores and exporters reports go to (opened on first use; None without ``sink``)."""
        if not self._store:
            return None
        with self._outputs_lock:
            if self._outputs is None:
                self._outputs = open_outputs(
                    self._settings,
                    extra=self._sink_objects,
                    stores=self._store_names,
                    named=self._store_names,
                )
            return self._outputs

    def close(self) -> None:
        """Flush and close the stores and exporters (a later run opens them again)."""
        with self._outputs_lock:
            outputs, self._outputs = self._outputs, None
        if outputs is not None:
            outputs.close()

    # --- settings and models -------------------------------------------------------------------
    def settings_for(self, model: str | None = None, **overrides: Any) -> Settings:
        values = dict(self._base)
        if model is not None:
            values["model"] = model
        if overrides.pop("load_in_4bit", False):
            values["quantize"] = "4bit"
        if overrides.pop("load_in_8bit", False):
            values["quantize"] = "8bit"
        values.update({k: v for k, v in overrides.items() if v is not None})
        return load_settings(values)

    def _loaded(self, settings: Settings) -> LoadedModel:
        from corevital.capture.loading import ModelSpec, load_model

        spec = ModelSpec.from_settings(settings)
        with self._models_lock:
            if spec not in self._models:
                self._models[spec] = load_model(spec)
                self.load_count += 1
            return self._models[spec]

    # --- running ---------------------------------------------------------------------------------
    def run(
        self,
        prompt: Prompt | None = None,
        *,
        messages: Messages | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> Report:
        """Generate for one prompt and return its report (``model`` None: the monitor's model).

        ``prompt``: a string, or chat messages (``[{"role": "user", "content": ...}]``, rendered
        with the tokenizer's chat template; also accepted as ``messages=``). ``kwargs``: any setting
        by name for this call (``temperature``, ``max_new_tokens``, ...), ``policies`` (live stop
        policies), ``do_sample``, a transformers ``GenerationConfig`` as ``generation_config``, and
        any other ``generate()`` keyword (``repetition_penalty``, ``stop_strings``, ...), passed
        through and recorded in the report (``run_config.generate_kwargs``). With
        ``num_return_sequences`` > 1 use :meth:`run_batch`, which returns one report per sequence.
        """
        one = one_prompt("run", prompt, messages)
        if returned_sequences(kwargs) > 1:
            raise InputError(
                "run() returns one report: run_batch([prompt], num_return_sequences=n) returns one "
                "report per returned sequence"
            )
        return self.run_batch([one], model=model, **kwargs)[0]

    def run_batch(
        self, prompts: Sequence[Prompt], *, model: str | None = None, **kwargs: Any
    ) -> list[Report]:
        """Generate for several prompts (batched ``generate()`` calls); one report per prompt.

        ``prompts``: strings or chat message lists. ``kwargs``: as for :meth:`run`; with
        ``num_return_sequences`` n, n reports per prompt, in prompt order.
        """
        if isinstance(prompts, str):
            raise InputError("run_batch() takes a list of prompts; run() takes one")
        texts = batch_prompts(prompts)
        policies = kwargs.pop("policies", None)
        chosen = None if policies is None else stop_policies(policies)
        settings, generate_kwargs = self._split(model, kwargs)
        return self._generate(texts, settings, chosen, generate_kwargs=generate_kwargs)

    def _split(self, model: str | None, kwargs: dict[str, Any]) -> tuple[Settings, dict[str, Any]]:
        """Settings for this call and the generate() keywords to pass through (checked now)."""
        overrides, generate_kwargs = split_generate_kwargs(kwargs, self._base)
        return self.settings_for(model, **overrides), check_generate_kwargs(generate_kwargs)

    def _generate(
        self,
        prompts: Sequence[Prompt],
        settings: Settings,
        policies: Sequence[StopPolicy] | None,
        emit: Callable[[StreamEvent], None] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> list[Report]:
        outputs = self.outputs  # a bad sink fails before the model is loaded
        loaded = self._loaded(settings)
        pipeline = Pipeline(settings, outputs=outputs)
        pipeline.use_model(loaded)
        chosen = self.policies if policies is None else tuple(policies)
        live = None
        if chosen or emit is not None:
            texts = [prompt_text(p) for p in prompts]
            per_prompt = max(1, returned_sequences(generate_kwargs or {}))  # rows i·n … i·n + n − 1: prompt i
            live = LiveSession(
                load_profile(loaded.capabilities.model_type, settings.thresholds or None),
                policies=chosen,
                token_text=lambda token: str(loaded.tokenizer.decode([token])),
                emit=emit,
                prompt_text=lambda index: texts[min(index // per_prompt, len(texts) - 1)],
                calibration=pipeline.calibration(),
            )
        # generations of one model run one at a time (capture's generation lock)
        run = pipeline.capture(prompts, callback=live, generate_kwargs=generate_kwargs)
        if live is not None:
            live.annotate(run)
        reports = pipeline.build(run)
        if self._store:
            pipeline.write(reports)
        with self._last_lock:
            self._last = reports[-1]
        return reports

    @contextmanager
    def wrap_generation(
        self, prompt: Prompt, *, model: str | None = None, **overrides: Any
    ) -> Iterator[CoreVitalMonitor]:
        """Run a generation on entering; inside the block the ``get_*`` helpers describe it."""
        self.run(prompt, model=model, **overrides)
        yield self

    # --- responses of an engine served elsewhere ---------------------------------------------------
    def observe_openai(
        self, response: Any, *, prompt: str | None = None, vocab_size: int | None = None
    ) -> list[Report]:
        """Reports of an OpenAI chat/completions response requested with ``logprobs`` (and
        ``top_logprobs``): one per choice, ``capture.source = "logprobs"`` (docs/proxy.md), written to
        the monitor's sinks. ``response``: a dict or an openai client object; ``prompt``: the
        prompt as text (recorded, hashed for the fingerprint); ``vocab_size``: the model's vocabulary
        size, for the entropy's upper bound. A response without logprobs is an :class:`InputError`.
        """
        from corevital.capture.logprobs import LogprobsError
        from corevital.proxy.reports import LogprobReporter, request_of, response_dict

        try:
            data = response_dict(response)
            reporter = LogprobReporter(self._settings, outputs=self.outputs, vocab_size=vocab_size)
            reports = reporter.reports(data, request_of(data, prompt))
        except (LogprobsError, TypeError) as exc:
            raise InputError(f"observe_openai: {exc}") from exc
        if self._store:
            reporter.write(reports)
        with self._last_lock:
            self._last = reports[-1]
        return reports

    # --- post-run checks -------------------------------------------------------------------------
    def get_report(self) -> Report:
        with self._last_lock:
            if self._last is None:
                raise InputError("no run yet: call run() first")
            return self._last

    def get_risk_score(self) -> float:
        risk = self.get_report().extensions.risk
        return float(risk.risk_score) if risk is not None and risk.risk_score is not None else 0.0

    def get_health_flags(self) -> dict[str, Any]:
        flags = self.get_report().health_flags
        return flags.model_dump() if flags is not None else {}

    def should_intervene(self) -> bool:
        """After a run: is the risk above ``intervene_on_risk_above`` or did a watched signal fire?"""
        report = self.get_report()
        if self.get_risk_score() > self.intervene_on_risk_above:
            return True
        return bool(set(self.intervene_on_signals) & _fired_signals(report))

    def get_summary(self) -> dict[str, Any]:
        report = self.get_report()
        ext = report.extensions
        summary = summarize_report(report, "", float(report.summary.elapsed_ms)).as_dict()
        summary.update(
            health_flags=self.get_health_flags(),
            fingerprint=ext.fingerprint.model_dump() if ext.fingerprint is not None else None,
        )
        return summary

    # --- live stream -----------------------------------------------------------------------------
    def iter_stream(
        self,
        prompt: Prompt | None = None,
        *,
        messages: Messages | None = None,
        model: str | None = None,
        **overrides: Any,
    ) -> Generator[StreamEvent, None, None]:
        """Yield one event per generated token as it is produced, then a final event.

        Stopping early (``break``, or closing the iterator) stops the generation and waits for it
        to end: no thread is left running.
        """
        events: queue.Queue[Any] = queue.Queue()
        cancel = _ConsumerStopped()
        worker = self._start_stream(
            one_prompt("iter_stream", prompt, messages), model, overrides, events.put, cancel
        )
        try:
            while True:
                item = events.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.event.set()
            worker.join()

    async def stream(
        self,
        prompt: Prompt | None = None,
        *,
        messages: Messages | None = None,
        model: str | None = None,
        **overrides: Any,
    ) -> AsyncIterator[StreamEvent]:
        """Async version of :meth:`iter_stream`; generation runs in a worker thread, off the loop.

        Stopping early (``break`` in ``async for``, or cancelling the task) stops the generation;
        the stream waits for the worker thread to end without blocking the event loop.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        cancel = _ConsumerStopped()

        def put(item: Any) -> None:
            if cancel.event.is_set() or loop.is_closed():
                return  # nobody is listening any more
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop closed meanwhile
                cancel.event.set()

        worker = self._start_stream(one_prompt("stream", prompt, messages), model, overrides, put, cancel)
        try:
            while True:
                item = await events.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.event.set()
            await asyncio.to_thread(worker.join)

    def _start_stream(
        self,
        prompt: Prompt,
        model: str | None,
        overrides: dict[str, Any],
        put: Callable[[Any], None],
        cancel: _ConsumerStopped,
    ) -> threading.Thread:
        if returned_sequences(overrides) > 1:
            raise InputError("a stream follows one sequence: num_return_sequences > 1 goes to run_batch()")
        policies = overrides.pop("policies", None)
        chosen = (*(self.policies if policies is None else stop_policies(policies)), cancel)
        settings, generate_kwargs = self._split(model, overrides)
        # the caller's context variables follow the generation into its thread (an OpenTelemetry
        # span, for one: the exporters see the span of the request that asked for the stream)
        worker = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._stream_worker, prompt, settings, chosen, put, generate_kwargs),
            name="corevital-stream",
            daemon=True,
        )
        worker.start()
        return worker

    def _stream_worker(
        self,
        prompt: Prompt,
        settings: Settings,
        policies: Sequence[StopPolicy],
        put: Callable[[Any], None],
        generate_kwargs: dict[str, Any],
    ) -> None:
        try:
            report = self._generate([prompt], settings, policies, emit=put, generate_kwargs=generate_kwargs)[
                0
            ]
            summary = summarize_report(report, "", float(report.summary.elapsed_ms)).as_dict()
            put(StreamEvent(kind="final", batch_index=0, summary=summary, report=report))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            put(exc)
        finally:
            put(_END)

    # --- a model the user already has -----------------------------------------------------------
    @contextmanager
    def watch(self, model: Any, tokenizer: Any, **overrides: Any) -> Iterator[Any]:
        """Observe the user's own ``model.generate(...)`` calls inside the block; see :class:`Watch`."""
        from corevital.watch import Watch

        watcher = Watch(model, tokenizer, self.settings_for(**overrides), outputs=self.outputs)
        with watcher.installed():
            yield watcher


def _fired_signals(report: Report) -> set[str]:
    fired = {
        name
        for name, value in (report.health_flags.model_dump() if report.health_flags else {}).items()
        if value is True
    }
    ext = report.extensions
    fired.update(signal.name for signal in ext.compound_signals or [])
    if ext.early_warning is not None:
        fired.update(ext.early_warning.warning_signals)
    return fired
