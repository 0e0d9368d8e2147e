"""Outputs (stores, exporters, custom sinks), the sampler, and naming sinks in the settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from corevital.config import load_settings
from corevital.errors import ConfigError, NotAvailableError
from corevital.exporters.base import BUILTIN_EXPORTERS, Outputs, open_custom, open_outputs
from corevital.exporters.base import _import_object as import_object
from corevital.exporters.sampling import Sampler, report_weight
from corevital.monitor import CoreVitalMonitor
from corevital.report.schema import Report, RiskExtension
from corevital.sinks.base import MemorySink
from corevital.sinks.encoded import EncodedReport
from corevital.sinks.rows import SortOrder, TraceQuery
from corevital.sinks.sqlite import SQLiteStore
from tests.support.golden import golden_report
from tests.support.sinks import FailingExporter, NotASink, RecordingSink, count_json_encodings


@pytest.fixture(scope="module")
def base() -> Report:
    return golden_report()


def numbered(base: Report, number: int, risk: float = 0.1) -> Report:
    return base.model_copy(
        update={
            "trace_id": f"{number:08x}-0000-4000-8000-000000000000",
            "extensions": base.extensions.model_copy(update={"risk": RiskExtension(risk_score=risk)}),
        },
        deep=True,
    )


def test_every_nth_run_is_kept_and_stands_for_n(base: Report) -> None:
    sampler = Sampler(every=3)
    decisions = [sampler.decide(numbered(base, i)) for i in range(9)]
    assert [d.kept for d in decisions if d is not None] == [True, False, False] * 3
    kept = decisions[3]
    assert kept is not None and (kept.policy, kept.weight, kept.runs_seen, kept.runs_kept) == (
        "every 3",
        3.0,
        4,
        2,
    )
    assert abs(kept.kept_fraction - 1 / 3) < 1e-12


def test_a_seeded_rate_is_reproducible_and_keeps_about_that_fraction(base: Report) -> None:
    report = numbered(base, 1)

    def kept(seed: int) -> list[bool]:
        sampler = Sampler(rate=0.25, seed=seed)
        return [d.kept for d in (sampler.decide(report) for _ in range(4000)) if d is not None]

    first, again, other = kept(7), kept(7), kept(8)
    assert first == again and first != other
    assert 0.22 < sum(first) / len(first) < 0.28  # binomial sd is 0.007
    decision = Sampler(rate=0.25, seed=7).decide(report)
    assert decision is not None and decision.weight == 4.0 and decision.policy == "rate 0.25 (seed 7)"


def test_a_risk_threshold_keeps_risky_runs_which_stand_for_themselves(base: Report) -> None:
    sampler = Sampler(min_risk=0.5)
    risks = [0.1, 0.6, 0.49, 0.5, 0.9]
    decisions = [sampler.decide(numbered(base, i, risk)) for i, risk in enumerate(risks)]
    assert [d.kept for d in decisions if d is not None] == [False, True, False, True, True]
    last = decisions[-1]
    assert last is not None and last.weight == 1.0 and last.kept_fraction == 3 / 5


def test_no_policy_keeps_everything_without_recording_anything(base: Report) -> None:
    assert Sampler().decide(numbered(base, 1)) is None
    assert report_weight(numbered(base, 1)) == 1.0


def test_outputs_store_first_and_count_exporter_failures_without_raising(base: Report) -> None:
    store, recorder, failing = MemorySink(), RecordingSink(), FailingExporter()
    RecordingSink.written.clear()
    outputs = Outputs([store], [failing, recorder], names=["failing", "recording"])
    locations = outputs.write(numbered(base, 1))
    outputs.write(numbered(base, 2))
    assert locations == ["memory#00000001-0000-4000-8000-000000000000"]
    assert store.count() == 2 and len(RecordingSink.written) == 2
    assert outputs.failures == {"failing": 2} and outputs.exported == {"recording": 2}
    outputs.close()  # the failing exporter's close is logged and counted, not raised
    assert outputs.failures == {"failing": 3}


class SeesTheEncoding:
    """An exporter with ``export_encoded``: what it was handed, and whether the JSON was made already."""

    def __init__(self) -> None:
        self.seen: list[tuple[EncodedReport, bool]] = []

    def export(self, report: Report) -> None:
        raise AssertionError("Outputs calls export_encoded when there is one")

    def export_encoded(self, encoded: EncodedReport) -> None:
        self.seen.append((encoded, encoded.encoded))

    def close(self) -> None:
        pass


def test_a_report_is_encoded_once_for_every_destination(
    tmp_path: Path, base: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite store, the HTTP sink (endpoint down: the report waits in its spool), an exporter
    taking the shared encoding and a user's sink taking the report: the JSON is made once, by the
    store; the spool holds exactly the bytes the store keeps; the user's sink gets the report."""
    import corevital.report.encoding as encoding
    from corevital.exporters.http import HttpExporter
    from corevital.exporters.spool import iter_waiting, read_item
    from corevital.sinks.sqlite import SQLiteStore
    from tests.support.otlp import free_port

    real = encoding.report_to_json
    calls = count_json_encodings(monkeypatch)
    RecordingSink.written.clear()
    spool = tmp_path / "spool"
    http = HttpExporter(f"http://127.0.0.1:{free_port()}/reports", spool, close_wait_s=0.0)
    sees, recorder, store = SeesTheEncoding(), RecordingSink(), SQLiteStore(tmp_path / "c.db")
    reports = [numbered(base, 1), numbered(base, 2)]
    with Outputs([store], [http, sees, recorder], names=["http", "sees", "recording"]) as outputs:
        for report in reports:
            outputs.write(report)
        assert calls == [report.trace_id for report in reports]  # once per report, by the store
        assert [encoded.report for encoded, _ in sees.seen] == reports
        assert all(made_already for _, made_already in sees.seen)
        assert RecordingSink.written == reports
        assert outputs.failures == {}
        stored = {report.trace_id: store.get_json(report.trace_id) for report in reports}
    spooled = dict(read_item(path) for path in iter_waiting(spool))
    assert {key: body.decode("utf-8") for key, body in spooled.items()} == stored
    assert all(text == real(report) for report, text in zip(reports, stored.values(), strict=True))


class OwnWriteStore(MemorySink):
    """A subclass of a built-in store with its own ``write``: that is what gets called."""

    def __init__(self) -> None:
        super().__init__()
        self.own: list[str] = []

    def write(self, report: Report) -> str:
        self.own.append(report.trace_id)
        return super().write(report)


def test_a_subclass_that_overrides_write_is_called_through_write(base: Report) -> None:
    store = OwnWriteStore()
    with Outputs([store], []) as outputs:
        outputs.write(base)
    assert store.own == [base.trace_id] and store.contains(base.trace_id)


def test_sampled_out_reports_go_nowhere_and_kept_ones_carry_their_weight(base: Report) -> None:
    store = MemorySink()
    outputs = Outputs([store], sampler=Sampler(every=2))
    results = [outputs.write(numbered(base, i)) for i in range(1, 5)]
    assert [bool(r) for r in results] == [True, False, True, False]
    stored = store.get("00000003")
    assert stored is not None and stored.extensions.sampling is not None
    assert stored.extensions.sampling.weight == 2.0 and report_weight(stored) == 2.0


def test_a_batch_goes_to_a_sqlite_store_in_one_write_and_to_exporters_one_by_one(
    tmp_path: Path, base: Report
) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    exporter = MemorySink()
    with Outputs([store], [exporter], sampler=Sampler(every=2)) as outputs:
        results = outputs.write_batch([numbered(base, i) for i in range(1, 6)])
        assert [len(r) for r in results] == [1, 0, 1, 0, 1]  # the sampler's choice, report by report
        assert results[2] == [f"{store.path}#{numbered(base, 3).trace_id}"]
        rows = store.list(TraceQuery(sort=SortOrder.TIME))
        assert sorted((row.seq, row.trace_id[:8]) for row in rows) == [
            (1, "00000001"),
            (2, "00000003"),
            (3, "00000005"),
        ]
        assert sorted(row.trace_id[:8] for row in exporter.list()) == ["00000001", "00000003", "00000005"]


def test_a_custom_sink_is_named_module_colon_class(tmp_path: Path, base: Report) -> None:
    settings = load_settings({"sink": ["tests.support.sinks:RecordingSink"], "out": str(tmp_path)})
    RecordingSink.written.clear()
    with open_outputs(settings) as outputs:
        assert outputs.stores == [] and outputs.names == ["tests.support.sinks:RecordingSink"]
        outputs.write(numbered(base, 5))
    assert [r.trace_id[:8] for r in RecordingSink.written] == ["00000005"]


def test_bad_custom_sinks_are_one_line_config_errors(tmp_path: Path) -> None:
    settings = load_settings({"out": str(tmp_path)})
    with pytest.raises(ConfigError, match="neither write"):
        open_custom("tests.support.sinks:NotASink", settings)
    with pytest.raises(ConfigError, match="has no Nope"):
        open_custom("tests.support.sinks:Nope", settings)
    with pytest.raises(ConfigError, match="cannot import"):
        open_custom("tests.support.no_such_module:Sink", settings)
    with pytest.raises(ConfigError, match="unknown sink"):
        load_settings({"sink": ["not a sink"]})
    assert NotASink is not None


def test_a_missing_extra_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_missing_dep.py").write_text("import corevital_no_such_dependency\nclass X: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(NotAvailableError, match=r"pip install 'corevital\[fancy\]'"):
        import_object("needs_missing_dep:X", extra="fancy")
    sys.modules.pop("needs_missing_dep", None)


def test_every_builtin_exporter_names_an_existing_class() -> None:
    for name, (spec, _) in BUILTIN_EXPORTERS.items():
        cls = import_object(spec, extra=name)
        assert callable(getattr(cls, "from_settings", None)), name
        assert callable(getattr(cls, "export", None)) and callable(getattr(cls, "close", None)), name


def test_sinks_come_from_the_environment_as_a_comma_separated_list() -> None:
    settings = load_settings({}, environ={"COREVITAL_SINK": "sqlite, http"})
    assert settings.sink == ["sqlite", "http"] and settings.stores == ["sqlite"]
    assert load_settings({"sink": ["local", "local", "sqlite"]}).sink == ["local", "sqlite"]


def test_the_custom_sink_example_in_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text(encoding="utf-8")
    section = text.split("## Several sinks at once, and your own", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/production.md", "exec"), namespace)
    monitor = namespace["monitor"]
    assert isinstance(monitor, CoreVitalMonitor) and monitor.load_count == 0
    outputs = monitor.outputs
    assert outputs is not None and [type(e).__name__ for e in outputs.exporters] == ["PrintRisk"]
    assert len(outputs.stores) == 1
    monitor.close()
