"""`corevital runs/show/compare` on the six original CoreVital traces after `corevital migrate` (export:
test_cli_export.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corevital.cli.stored import parse_since
from corevital.report.encoding import load_report, report_from_json, report_to_json
from corevital.sinks.base import TraceQuery
from corevital.sinks.sqlite import SQLiteStore
from corevital.sinks.sqlite_schema import APPLICATION_ID, MIGRATIONS
from tests.support.cli import one_error_line, run_cli
from tests.support.golden import GOLDEN, ORIGINAL_NEWEST_FIRST, ORIGINAL_TRACES

FIXTURES = ORIGINAL_TRACES
MODELS = {
    "google/flan-t5-large",
    "meta-llama/Llama-3.2-3B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.2",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2-0.5B-Instruct",
}
NEWEST_FIRST = ORIGINAL_NEWEST_FIRST


@pytest.fixture(scope="module")
def db(originals_db: str) -> str:
    return originals_db


def runs_json(capsys: pytest.CaptureFixture[str], db: str, *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "runs", "--db", db, "--json", *argv)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def short_ids(document: dict[str, Any]) -> list[str]:
    return [run["trace_id"][:8] for run in document["runs"]]


def test_runs_lists_the_migrated_traces_newest_first(capsys: pytest.CaptureFixture[str], db: str) -> None:
    listed = runs_json(capsys, db)
    assert listed["total"] == 6 and listed["next_cursor"] is None
    assert short_ids(listed) == NEWEST_FIRST
    assert {run["model_id"] for run in listed["runs"]} == MODELS
    t5 = next(run for run in listed["runs"] if run["model_id"] == "google/flan-t5-large")
    assert t5["risk_score"] == 1.0 and t5["migrated_from"] == "0.4.0" and t5["generated_tokens"] == 21
    assert t5["prompt_preview"].startswith("Summarize: The Mediterranean diet")
    assert t5["device"] == "cuda" and t5["quantization"] == "4-bit" and t5["mean_entropy"] > 0


def test_runs_table_has_one_line_per_run(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "runs", "--db", db)
    assert code == 0 and "\x1b" not in out  # not a terminal: no colour
    lines = out.splitlines()
    assert lines[0].startswith("6 of 6 runs")
    body = [line for line in lines[2:] if line.strip()]
    assert [line.split()[0] for line in body] == NEWEST_FIRST
    assert (
        "google/flan-t5-large" in body[1]
        and "1.00" in body[1]
        and "attention_collapse, mid_layer_anomaly" in body[1]
    )
    assert "Summarize: The Mediterranean diet has been linked" in body[1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "meta-llama/Llama-3.1-8B-Instruct"], ["f7de7f4d", "f28f1386"]),
        (["--min-risk", "0.8"], ["8d0bad87", "01aeafe3"]),
        (["--max-risk", "0.2"], ["1af7ccd1"]),
        (["--flag", "mid_layer_anomaly"], ["8d0bad87", "01aeafe3"]),
        (["--flag", "attention_collapse_detected", "--flag", "mid-layer-anomaly"], ["8d0bad87"]),
        (["--since", "2026-03-01T04:58:00"], ["1af7ccd1", "8d0bad87", "7c1c62d1"]),
        (["--until", "2026-03-01"], ["f28f1386"]),
        (["--sort", "risk"], ["8d0bad87", "01aeafe3", "7c1c62d1", "f7de7f4d", "f28f1386", "1af7ccd1"]),
        (["--sort", "time", "--asc", "--limit", "2"], ["f28f1386", "f7de7f4d"]),
    ],
)
def test_runs_filters_and_order(
    capsys: pytest.CaptureFixture[str], db: str, argv: list[str], expected: list[str]
) -> None:
    assert short_ids(runs_json(capsys, db, *argv)) == expected


def test_runs_pages_with_the_cursor_reach_every_run_once(capsys: pytest.CaptureFixture[str], db: str) -> None:
    seen: list[str] = []
    cursor: list[str] = []
    pages = 0
    while True:
        page = runs_json(capsys, db, "--limit", "4", "--sort", "risk", *cursor)
        seen += short_ids(page)
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", page["next_cursor"]]
    assert pages == 2 and sorted(seen) == sorted(NEWEST_FIRST) and len(seen) == 6
    code, out, err = run_cli(capsys, "runs", "--db", db, "--limit", "4")
    assert code == 0 and err.startswith("More: add --cursor ") and len(out.splitlines()) == 6


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--flag", "bogus"], 2, "unknown health flag 'bogus'; known flags: nan, inf"),
        (["--since", "yesterday"], 2, "cannot read the time 'yesterday'"),
        (["--limit", "501"], 2, "--limit must be between 1 and 500"),
        (["--cursor", "garbage!"], 6, "malformed page cursor"),
        # a forged cursor carrying a number beyond 64 bits
        (["--cursor", "WyJ0aW1lIixmYWxzZSw5OTk5OTk5OTk5OTk5OTk5OTk5OSwieCJd"], 6, "malformed page cursor"),
    ],
)
def test_runs_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], db: str, argv: list[str], code: int, message: str
) -> None:
    got, _, err = run_cli(capsys, "runs", "--db", db, *argv)
    assert got == code and message in one_error_line(err)


def test_a_missing_database_is_one_line_and_is_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "corevital.db"
    for command in (["runs"], ["show", "abc"], ["compare"], ["export", "--format", "jsonl", "--out", "x"]):
        code, _, err = run_cli(capsys, *command, "--db", str(missing))
        assert code == 6 and f"no CoreVital database at {missing}" in one_error_line(err)
    assert not missing.parent.exists()


def test_show_gives_the_run_in_substance(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, err = run_cli(capsys, "show", "8d0b", "--db", db)
    assert code == 0, err
    assert "Run 8d0bad87-608d-4e87-b74f-0bb74cfa0c77" in out
    assert "google/flan-t5-large" in out and "migrated" in out
    for section in (
        "Narrative",
        "Risk",
        "Health flags",
        "Compound signals",
        "Early warning",
        "Blamed layers",
    ):
        assert section in out
    assert "attention_bottleneck" in out and "Collapse rate: 28.5% of observed heads" in out
    assert "mid_layer_anomaly" in out and "Attention collapse in 86% of steps" in out
    assert "compound:attention_bottleneck" in out
    entropy_line = next(line for line in out.splitlines() if line.startswith("entropy"))
    assert sum(char in "▁▂▃▄▅▆▇█" for char in entropy_line) == 21
    assert "\x1b" not in out


def test_show_json_is_the_whole_stored_report(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "show", "01aeafe3", "--db", db, "--json")
    assert code == 0
    with SQLiteStore(db, read_only=True) as store:
        expected = store.get("01aeafe3")
    assert expected is not None and report_from_json(out) == expected
    assert json.loads(out)["extensions"]["migrated_from"] == "0.4.0"


def test_an_ambiguous_or_unknown_prefix_is_an_error(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, _, err = run_cli(capsys, "show", "f", "--db", db)
    assert code == 6 and "trace id prefix 'f' matches 2 reports" in one_error_line(err)
    code, _, err = run_cli(capsys, "show", "0000", "--db", db)
    assert code == 6 and "no stored run with trace id '0000'" in one_error_line(err)
    code, _, err = run_cli(capsys, "compare", "f", "8d0b", "--db", db)
    assert code == 6 and "matches 2 reports" in one_error_line(err)


def test_compare_two_runs_side_by_side(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "compare", "8d0b", "1af7", "--db", db, "--json")
    assert code == 0
    compared = json.loads(out)
    t5, qwen = compared["runs"]
    assert (t5["model_id"], qwen["model_id"]) == ("google/flan-t5-large", "Qwen/Qwen2-0.5B-Instruct")
    assert t5["risk_score"] == 1.0 and t5["flags"] == [
        "attention_collapse_detected",
        "mid_layer_anomaly_detected",
    ]
    assert t5["blamed_layers"][:3] == [0, 1, 6] and qwen["flags"] == []
    assert t5["entropy"]["steps"] == 21 and t5["entropy"]["mean"] > 0
    assert compared["shared_prompt"] is False and compared["divergence"] is None
    code, out, _ = run_cli(capsys, "compare", "8d0b", "1af7", "--db", db)
    assert code == 0 and "entropy mean" in out and "do not share a prompt hash" in out


def test_compare_runs_of_one_prompt_finds_where_their_tokens_diverge(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    first = load_report(FIXTURES / "sample_report.json").generated.token_ids
    assert first == load_report(FIXTURES / "trace_f7de7f4d.json").generated.token_ids
    code, out, _ = run_cli(capsys, "compare", "f28f", "f7de", "--db", db, "--json")
    assert code == 0
    compared = json.loads(out)
    assert compared["shared_prompt"] is True
    assert compared["divergence"] == {"step": None, "common_prefix": len(first), "identical": True}
    code, out, _ = run_cli(capsys, "compare", "f28f", "f7de", "--db", db)
    assert f"identical token streams ({len(first)} tokens)" in out

    base = load_report(FIXTURES / "sample_report.json")
    path = tmp_path / "c.db"
    with SQLiteStore(path) as store:
        for number, tail in enumerate(([1, 2, 3], [1, 2, 3], [9, 9])):
            ids = [*first[:5], *tail]
            generated = base.generated.model_copy(update={"token_ids": ids, "num_tokens": len(ids)})
            store.write(base.model_copy(update={"trace_id": f"{number}" * 8, "generated": generated}))
    code, out, _ = run_cli(capsys, "compare", "0", "1", "2", "--db", str(path), "--json")
    assert json.loads(out)["divergence"] == {"step": 5, "common_prefix": 5, "identical": False}
    code, out, _ = run_cli(capsys, "compare", "0", "1", "2", "--db", str(path))
    assert "the token streams first diverge at generated step 5" in out


def test_compare_by_model_summarises_the_store(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run_cli(capsys, "compare", "--db", db, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["by"] == "model" and summary["total_runs"] == 6
    groups = {group["key"]: group for group in summary["groups"]}
    assert set(groups) == MODELS
    llama = groups["meta-llama/Llama-3.1-8B-Instruct"]
    assert summary["groups"][0]["key"] == "meta-llama/Llama-3.1-8B-Instruct"  # most runs first
    assert llama["runs"] == 2 and llama["risk_mean"] == pytest.approx((0.30625 + 0.48186548262908213) / 2)
    assert llama["flag_rates"]["attention_collapse_detected"] == 0.5
    code, out, _ = run_cli(capsys, "compare", "--db", db)
    assert code == 0 and "6 runs by model" in out and "Qwen/Qwen2-0.5B-Instruct" in out
    code, out, _ = run_cli(capsys, "compare", "--db", db, "--by", "prompt", "--json")
    assert code == 0 and [group["runs"] for group in json.loads(out)["groups"]] == [2, 1, 1, 1, 1]
    code, out, _ = run_cli(capsys, "compare", "--db", db, "--min-risk", "0.9", "--json")
    assert [group["key"] for group in json.loads(out)["groups"]] == ["google/flan-t5-large"]


def test_compare_argument_errors(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, _, err = run_cli(capsys, "compare", "8d0b", "--db", db)
    assert code == 2 and "at least two trace ids" in one_error_line(err)
    code, _, err = run_cli(capsys, "compare", "8d0b", "1af7", "--by", "model", "--db", db)
    assert code == 2 and "not both" in one_error_line(err)


def _version_1_store(path: Path) -> str:
    report = report_from_json(GOLDEN.read_bytes())
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO reports (trace_id, created_at_utc, created_at_ms, model_id, prompt_hash, prompt_tokens, "
        "generated_tokens, schema_version, report_zlib) VALUES (?, ?, 0, ?, 'h', 3, 2, '0.5.0', ?)",
        (
            report.trace_id,
            report.created_at_utc,
            report.model.hf_id,
            zlib.compress(report_to_json(report).encode()),
        ),
    )
    conn.close()
    return report.trace_id


def test_runs_upgrades_a_database_of_an_older_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "old.db"
    trace_id = _version_1_store(path)
    listed = runs_json(capsys, str(path))
    assert (
        short_ids(listed) == [trace_id[:8]]
        and listed["runs"][0]["prompt_preview"] == "Explain why the sky is blue"
    )
    with SQLiteStore(path, read_only=True) as store:  # upgraded: a reader can open it now
        assert store.count(TraceQuery()) == 1


def test_model_and_prompt_text_never_reach_the_terminal_raw(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = report_from_json(GOLDEN.read_bytes())
    hostile = report.model_copy(
        update={
            "model": report.model.model_copy(update={"hf_id": "evil/\x1b]0;pwned\x07model"}),
            "prompt": report.prompt.model_copy(update={"text": "hi \x1b[31mred\x1b[0m\nnext \u202egnp.exe"}),
        }
    )
    path = tmp_path / "c.db"
    with SQLiteStore(path) as store:
        store.write(hostile)
    for command in (["runs"], ["show", hostile.trace_id[:8]], ["compare"]):
        code, out, _ = run_cli(capsys, *command, "--db", str(path))
        assert code == 0
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\x1b" in out
    code, out, _ = run_cli(capsys, "runs", "--db", str(path))
    assert "hi \\x1b[31mred\\x1b[0m\\nnext \\u202egnp.exe" in out


def test_since_reads_durations_and_dates() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 2, 22, 12, 0, tzinfo=UTC)
    assert parse_since("2026-02-01", now) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_since("2026-02-01T10:00:00+02:00", now) == datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def test_runs_follow_prints_new_runs_until_interrupted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = report_from_json(GOLDEN.read_bytes())
    path = tmp_path / "c.db"
    with SQLiteStore(path) as store:
        store.write(base.model_copy(update={"trace_id": "a" * 8}))
    ticks: list[float] = []
    first = [1]

    def tick(seconds: float) -> None:  # the poll interval: store a run, then Ctrl-C
        ticks.append(seconds)
        if len(ticks) == 3:
            raise KeyboardInterrupt
        with SQLiteStore(path) as store:
            store.write(base.model_copy(update={"trace_id": f"{first[0] + len(ticks) - 1}" * 8}))

    monkeypatch.setattr("time.sleep", tick)
    code, out, _ = run_cli(capsys, "runs", "--db", str(path), "--follow", "--json")
    assert code == 0 and [json.loads(line)["trace_id"] for line in out.splitlines()] == ["1" * 8, "2" * 8]
    ticks.clear()
    first[0] = 3
    code, out, _ = run_cli(capsys, "runs", "--db", str(path), "-f")
    assert code == 0  # the newest page oldest first (equal times: by id), then the new runs
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["a" * 8, "2" * 8, "1" * 8, "3" * 8, "4" * 8]


@pytest.mark.slow  # starts a real process
@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["show", "8d0b"], ["compare"]])
def test_reading_runs_imports_no_report_model_nor_numpy(db: str, command: list[str]) -> None:
    """Listing and showing runs must start fast: no pydantic report schema, no numpy, no torch."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "corevital", *command, "--db", db],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    heavy = {
        name for name in imported if name.split(".")[0] in {"pydantic", "numpy", "torch", "transformers"}
    }
    assert heavy == set() and "corevital.report.schema" not in imported
    assert "corevital.sinks.sqlite" in imported


def test_the_packages_lazy_names_resolve() -> None:
    import corevital.report
    import corevital.sinks

    for package in (corevital.sinks, corevital.report):
        for name in package.__all__:
            assert getattr(package, name) is not None, name


def test_compare_by_prompt_names_each_prompt(capsys: pytest.CaptureFixture[str], db: str) -> None:
    summary = json.loads(run_cli(capsys, "compare", "--db", db, "--by", "prompt", "--json")[1])
    first = summary["groups"][0]
    assert summary["prompts"][first["key"]]["model_id"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert summary["prompts"][first["key"]]["prompt_preview"].startswith("You are a historian.")
    code, out, _ = run_cli(capsys, "compare", "--db", db, "--by", "prompt")
    assert code == 0 and "You are a historian. In exactly three short paragraphs" in out.splitlines()[2]
