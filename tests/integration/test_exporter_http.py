"""The HTTP sink against a real local HTTP server: the request, retries, rejection, the spool.

Failures are injected by the receiver (refused connections, 503, 429 with Retry-After, a response
slower than the timeout, 400) and by killing a sending process with SIGKILL; every report must
arrive, in order, at least once (duplicates carry the same Idempotency-Key).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from corevital.config import Settings
from corevital.errors import ConfigError, ExporterError
from corevital.exporters.base import open_exporter
from corevital.exporters.http import HttpExporter
from corevital.exporters.spool import (
    REJECTED_DIR,
    Backoff,
    Outcome,
    Spool,
    iter_waiting,
    outcome_of_status,
    parse_retry_after,
    read_item,
)
from corevital.report.encoding import report_to_document
from corevital.report.schema import Report
from tests.support.receiver import Answer, Receiver, Request, fixture_reports

REPO = Path(__file__).resolve().parents[2]
FAST = Backoff(base=0.02, cap=0.2)

MakeExporter = Callable[..., HttpExporter]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def make_exporter(tmp_path: Path) -> Iterator[MakeExporter]:
    made: list[HttpExporter] = []

    def make(url: str, **kwargs: object) -> HttpExporter:
        options: dict[str, object] = {"timeout": 2.0, "backoff": FAST, "rescan_s": 0.2, **kwargs}
        exporter = HttpExporter(url, tmp_path / "spool", **options)  # type: ignore[arg-type]
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.close()


def reports(count: int, prefix: str = "r") -> list[Report]:
    return list(fixture_reports(count, prefix))


def keys(requests: list[Request]) -> list[str]:
    return [r.headers["idempotency-key"] for r in requests]


def owner_dirs(spool: Path) -> list[Path]:
    return [
        p for p in spool.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != REJECTED_DIR
    ]


def test_each_report_is_posted_as_gzip_json_with_its_trace_id_as_idempotency_key(
    receiver: Receiver, make_exporter: MakeExporter, tmp_path: Path
) -> None:
    receiver.start()
    exporter = make_exporter(f"{receiver.url}/ingest/reports")
    sent = reports(5)
    for report in sent:
        exporter.export(report)
    exporter.close()

    requests = receiver.snapshot()
    assert keys(requests) == [r.trace_id for r in sent]  # once each, in export order
    for request, report in zip(requests, sent, strict=True):
        assert request.method == "POST" and request.path == "/ingest/reports"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["content-encoding"] == "gzip"
        assert request.raw[:2] == b"\x1f\x8b" and gzip.decompress(request.raw) == request.body
        assert request.headers["x-corevital-trace-id"] == report.trace_id
        assert request.json() == report_to_document(report)
    assert exporter.sender.stats.delivered == 5 and exporter.sender.stats.failed_attempts == 0
    assert owner_dirs(tmp_path / "spool") == []  # delivered reports leave nothing behind


def test_a_refused_connection_is_retried_until_the_server_comes_up(
    receiver: Receiver, make_exporter: MakeExporter
) -> None:
    exporter = make_exporter(receiver.url)  # nothing listens on this port yet
    sent = reports(4)
    for report in sent:
        exporter.export(report)
    deadline = time.monotonic() + 10
    while exporter.sender.stats.failed_attempts < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert exporter.sender.stats.failed_attempts >= 3
    assert receiver.snapshot() == []
    assert not exporter.spool.dirty  # reports that have to wait are fsync-ed
    receiver.start()
    exporter.close()
    assert keys(receiver.snapshot()) == [r.trace_id for r in sent]


def test_503_is_retried_and_the_order_kept(receiver: Receiver, make_exporter: MakeExporter) -> None:
    answered = Counter[str]()

    def flaky(request: Request) -> Answer:
        answered["all"] += 1
        return Answer(503) if answered["all"] <= 3 else Answer(200)

    receiver.responder = flaky
    receiver.start()
    exporter = make_exporter(receiver.url)
    sent = reports(6)
    for report in sent:
        exporter.export(report)
    exporter.close()
    requests = receiver.snapshot()
    assert [r.status for r in requests[:3]] == [503, 503, 503]
    assert keys(requests[:4]) == [sent[0].trace_id] * 4  # the first report until it got through
    assert keys(receiver.delivered()) == [r.trace_id for r in sent]
    assert exporter.sender.stats.failed_attempts == 3


def test_writing_in_the_background_delivers_every_report_in_order(
    receiver: Receiver, make_exporter: MakeExporter
) -> None:
    receiver.start()
    exporter = make_exporter(receiver.url, write_in_background=True)
    sent = reports(20)
    for report in sent:
        exporter.export(report)
    exporter.close()
    assert keys(receiver.delivered()) == [r.trace_id for r in sent]


def test_429_waits_as_long_as_retry_after_says(receiver: Receiver, make_exporter: MakeExporter) -> None:
    answers = iter([Answer(429, {"Retry-After": "1"})])
    receiver.responder = lambda request: next(answers, Answer(200))
    receiver.start()
    exporter = make_exporter(receiver.url)  # its own backoff would wait at most 0.02 s
    exporter.export(reports(1)[0])
    exporter.close()
    first, second = receiver.snapshot()
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95


def test_a_response_slower_than_the_timeout_is_retried_and_deduplicated_by_key(
    receiver: Receiver, make_exporter: MakeExporter
) -> None:
    slow = iter([Answer(200, delay_s=3.0)])
    receiver.responder = lambda request: next(slow, Answer(200))
    receiver.start()
    exporter = make_exporter(receiver.url, timeout=1.0)
    sent = reports(3)
    for report in sent:
        exporter.export(report)
    exporter.close()
    # the slow request is still answered 200 after the client gave up: a duplicate delivery
    assert receiver.wait_for(lambda requests: len(requests) >= 4, timeout=10)
    delivered = keys(receiver.delivered())
    assert len(delivered) == 3 + exporter.sender.stats.failed_attempts  # every timed-out POST arrived too
    assert len(set(delivered)) == 3 and Counter(delivered)[sent[0].trace_id] >= 2
    assert list(dict.fromkeys(delivered)) == [r.trace_id for r in sent]


def test_a_4xx_is_not_retried_but_moved_to_rejected_and_logged(
    receiver: Receiver, make_exporter: MakeExporter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = reports(3)
    bad = sent[1].trace_id
    receiver.responder = lambda r: (
        Answer(400, body=b"schema mismatch") if r.json()["trace_id"] == bad else Answer()
    )
    receiver.start()
    exporter = make_exporter(receiver.url)
    with caplog.at_level(logging.ERROR, logger="corevital.exporters.spool"):
        for report in sent:
            exporter.export(report)
        exporter.close()
    assert keys(receiver.snapshot()) == [r.trace_id for r in sent]  # the 400 one asked once
    assert keys(receiver.delivered()) == [sent[0].trace_id, sent[2].trace_id]
    assert exporter.sender.stats.rejected == 1 and exporter.sender.stats.failed_attempts == 0
    rejected = sorted((tmp_path / "spool" / REJECTED_DIR).iterdir())
    assert [p.suffix for p in rejected] == [".item", ".reason"]
    key, body = read_item(rejected[0])
    assert key == bad and json.loads(body)["trace_id"] == bad
    assert "HTTP 400 Bad Request: schema mismatch" in rejected[1].read_text()
    assert any(bad in m and "HTTP 400" in m and "rejected" in m for m in caplog.messages)


def test_close_leaves_what_is_undelivered_and_the_next_exporter_sends_it_first(
    receiver: Receiver, make_exporter: MakeExporter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_exporter(receiver.url, close_wait_s=0.3)  # the endpoint is down
    earlier = reports(5, "a")
    for report in earlier:
        first.export(report)
    with caplog.at_level(logging.WARNING, logger="corevital.exporters.http"):
        started = time.monotonic()
        first.close()
    assert time.monotonic() - started < 5.0  # close() is bounded
    assert any("5 report(s) not delivered" in m for m in caplog.messages)
    waiting = list(iter_waiting(tmp_path / "spool"))
    assert [read_item(p)[0] for p in waiting] == [r.trace_id for r in earlier]

    receiver.start()
    second = make_exporter(receiver.url)
    later = reports(3, "b")
    for report in later:
        second.export(report)
    second.close()
    assert keys(receiver.delivered()) == [r.trace_id for r in earlier + later]
    assert second.sender.stats.adopted == 5
    assert owner_dirs(tmp_path / "spool") == []


def test_a_live_process_directory_is_never_adopted_and_an_adopted_one_only_once(tmp_path: Path) -> None:
    live = Spool(tmp_path)
    live.put("k1", b"{}")
    other = Spool(tmp_path)
    assert other.adopt() is None  # the owner holds its lock
    live.close()  # exits with a payload left: its directory stays, unlocked
    adopted = other.adopt()
    assert adopted is not None and [read_item(i.path)[0] for i in adopted.items()] == ["k1"]
    third = Spool(tmp_path)
    assert third.adopt() is None  # held by `other` while it delivers
    for item in adopted.items():
        item.path.unlink()
    adopted.release()
    assert not adopted.directory.exists()
    other.close()
    third.close()
    assert owner_dirs(tmp_path) == []


def test_from_settings_validates_and_defaults_the_spool_under_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--http-url"):
        HttpExporter.from_settings(Settings(sink=["http"], out=str(tmp_path)))
    with pytest.raises(ConfigError, match="http:// or https://"):
        HttpExporter.from_settings(Settings(sink=["http"], out=str(tmp_path), http_url="ftp://x/y"))
    exporter = open_exporter(
        "http", Settings(sink=["http"], out=str(tmp_path), http_url="http://127.0.0.1:9/r")
    )
    assert isinstance(exporter, HttpExporter)
    try:
        assert exporter.spool.root == tmp_path / "http-spool" and exporter.timeout == 10.0
        assert exporter.close_wait_s == 20.0
    finally:
        exporter.close_wait_s = 0.0
        exporter.close()


def test_status_classes_retry_after_and_full_jitter() -> None:
    assert [outcome_of_status(s) for s in (200, 204, 503, 500, 429, 408, 400, 401, 404, 413, 301)] == [
        Outcome.DELIVERED,
        Outcome.DELIVERED,
        *[Outcome.RETRY] * 4,
        *[Outcome.REJECTED] * 5,
    ]
    assert parse_retry_after("3") == 3.0 and parse_retry_after("-1") == 0.0
    assert parse_retry_after("99999") == 300.0 and parse_retry_after("soon") is None
    noon = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 02 Dec 2026 12:00:10 GMT", now=noon) == 10.0
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(0))
    delays = [[backoff.delay(n) for _ in range(200)] for n in range(10)]
    assert all(0.0 <= d <= min(30.0, 0.5 * 2**n) for n, row in enumerate(delays) for d in row)
    assert max(delays[9]) > 15.0 and min(delays[9]) < 5.0  # full jitter: the whole range is used


@pytest.mark.slow
def test_a_killed_sender_loses_nothing_the_next_process_drains_its_spool(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.responder = lambda request: Answer(200, delay_s=0.1)
    receiver.start()
    spool = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "tests.support.receiver", f"--url={receiver.url}", f"--spool={spool}"]
    first = subprocess.Popen(
        [*command, "--count=40", "--prefix=p", "--hold"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "exported 40"
        assert receiver.wait_for(lambda requests: len(requests) >= 8, timeout=20)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    delivered_before = len(receiver.delivered())
    left = list(iter_waiting(spool))
    assert len(left) > 0 and delivered_before + len(left) >= 40  # the rest is waiting on disk

    second = subprocess.run(
        [*command, "--count=5", "--prefix=q", "--close-wait=30"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert receiver.wait_for(lambda requests: len({*keys(requests)}) >= 45, timeout=10)
    delivered = keys(receiver.delivered())
    counts = Counter(delivered)
    expected = [f"p-{n:06d}" for n in range(40)] + [f"q-{n:06d}" for n in range(5)]
    assert set(delivered) == set(expected)  # every report arrived
    assert sum(counts.values()) - len(counts) <= 1  # at most the one in flight at the kill, twice
    assert list(dict.fromkeys(delivered)) == expected  # in order: the killed process's first
    assert list(iter_waiting(spool)) == [] and owner_dirs(spool) == []


@pytest.mark.slow
def test_outage_bench_small_every_report_arrives(tmp_path: Path) -> None:
    for mode in ("refuse", "503"):
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "http_sink_outage.py"),
                "--processes=2",
                "--reports=40",
                # 25 ms between exports: each process exports over about 1 s, several outage cycles,
                # so some of its sends meet the endpoint down however its start aligns with them
                "--interval=0.025",
                "--cycle=0.4",
                f"--mode={mode}",
                "--backoff-base=0.05",
                "--backoff-cap=0.5",
                "--close-wait=60",
                "--json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        assert figures["expected"] == figures["received_distinct"] == 80
        assert figures["lost"] == figures["unexpected"] == figures["left_in_spool"] == 0
        assert figures["in_order_per_process"] and figures["bodies_match_keys"]
        assert figures["deliveries"] == 80 + figures["duplicate_deliveries"]
        assert figures["failed_attempts_seen_by_senders"] > 0 and 0.3 < figures["down_share"] < 0.7
        if mode == "503":
            assert 0 < figures["requests_failed"] <= figures["failed_attempts_seen_by_senders"]


# docs/production.md ---------------------------------------------------------------------------------


def docs_section(title: str) -> str:
    text = (REPO / "docs" / "production.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def documented_commands(section: str) -> list[list[str]]:
    """The ``corevital run`` command lines of a section's bash blocks, as argv after ``corevital``."""
    commands = []
    for block in fenced(section, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["corevital", "run"]:
                commands.append(words[1:])
    return commands


def test_the_documented_receiver_stores_each_report_once(make_exporter: MakeExporter) -> None:
    [example] = fenced(docs_section("HTTP sink"), "python")
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/production.md", "exec"), namespace)
    server = ThreadingHTTPServer(("127.0.0.1", 0), namespace["Reports"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        exporter = make_exporter(f"http://127.0.0.1:{server.server_address[1]}/reports")
        sent = reports(3)
        for report in [*sent, sent[1]]:  # the second one twice: stored once
            exporter.export(report)
        exporter.close()
        assert exporter.sender.stats.delivered == 4
    finally:
        server.shutdown()
        server.server_close()
    assert namespace["seen"] == {r.trace_id: report_to_document(r) for r in sent}


def test_the_documented_commands_parse() -> None:
    from corevital.cli import build_parser
    from corevital.cli.args import settings_overrides

    commands = documented_commands(docs_section("HTTP sink"))
    assert commands
    for argv in commands:
        settings = settings_overrides(build_parser("run").parse_args(argv))
        assert "http" in settings["sink"] and settings["http_url"].startswith("https://")


def test_an_unusable_spool_directory_is_an_exporter_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    settings = Settings(
        sink=["http"], out=str(tmp_path), http_url="http://127.0.0.1:9/", http_spool=str(not_a_dir)
    )
    with pytest.raises(ExporterError, match="--http-spool"):
        HttpExporter.from_settings(settings)


def test_a_cli_run_posts_its_report_and_stores_it(
    receiver: Receiver, tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    from corevital.cli import main
    from corevital.sinks.sqlite import SQLiteStore

    receiver.start()
    out = tmp_path / "out"
    argv = ["run", "--model", str(tiny_model_dir("llama")), "--device", "cpu", "--out", str(out)]
    argv += ["--chat-template", "off", "--prompt", "hello", "--max-new-tokens", "3"]
    argv += ["--sink", "sqlite", "--sink", "http", "--http-url", f"{receiver.url}/reports"]
    assert main(argv) == 0
    [request] = receiver.snapshot()  # delivered before the command returned
    with SQLiteStore(out / "corevital.db", read_only=True) as store:
        [row] = store.list()
        stored = store.get(row.trace_id)
    assert stored is not None and request.json() == report_to_document(stored)
    assert request.headers["idempotency-key"] == row.trace_id
    assert owner_dirs(out / "http-spool") == []
