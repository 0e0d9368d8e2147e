"""``corevital run --sink prometheus`` on a tiny model: the textfile a CLI run leaves for node_exporter,
with sampling weights, and the refusal of a run that names no place for its metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_args, run_cli


def run(capsys: pytest.CaptureFixture[str], model: Path, out: Path, *extra: str) -> tuple[int, str]:
    code, _, err = run_cli(capsys, *run_args(model, out), "--max-new-tokens", "3", *extra)
    return code, err


def totals(path: Path) -> dict[str, float]:
    """Each sample name's sum over its label sets."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            if "le" not in sample.labels:
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def test_a_sampled_cli_run_leaves_weighted_counts_in_the_textfile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    textfile = tmp_path / "textfile" / "corevital.prom"
    textfile.parent.mkdir()
    prompts = [arg for number in range(4) for arg in ("--prompt", f"prompt number {number}")]
    sinks = ["--sink", "sqlite", "--sink", "prometheus", "--prometheus-textfile", str(textfile)]
    code, err = run(capsys, tiny_model_dir("llama"), tmp_path, *prompts, *sinks, "--sample-every", "2")
    assert code == 0, err

    with SQLiteStore(tmp_path / "corevital.db", read_only=True) as store:
        stored = store.list()
    assert len(stored) == 2  # every second run kept
    counts = totals(textfile)
    assert counts["corevital_runs_kept_total"] == 2
    assert counts["corevital_runs_total"] == 4  # each kept run stands for two
    assert counts["corevital_generated_tokens_total"] == 2 * sum(row.generated_tokens for row in stored)
    families = {family.name for family in text_string_to_metric_families(textfile.read_text())}
    assert {"corevital_runs", "corevital_risk_score", "corevital_entropy_bits"} <= families

    code, err = run(capsys, tiny_model_dir("llama"), tmp_path, "--prompt", "again", *sinks)
    assert code == 0, err
    assert totals(textfile)["corevital_runs_total"] == 5  # the next run adds to the file


def test_a_cli_run_with_the_prometheus_sink_and_no_outlet_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Callable[[str], Path]
) -> None:
    code, err = run(capsys, tiny_model_dir("llama"), tmp_path, "--prompt", "x", "--sink", "prometheus")
    assert code == 2
    assert "--prometheus-textfile" in err and "--prometheus-pushgateway" in err
    assert not (tmp_path / "corevital.db").exists()
