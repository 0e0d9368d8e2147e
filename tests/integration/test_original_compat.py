"""What users of the original CoreVital bring along: ``import CoreVital``, its nested config file and
its quick start (``corevital run --model gpt2 ...``) with the model available locally."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import corevital
from corevital.cli import main
from corevital.report.schema import Report
from corevital.sinks.sqlite import SQLiteStore
from tests.support.tiny_models import save_tiny_model


def _only_report(db: Path) -> Report:
    store = SQLiteStore(db, read_only=True)
    try:
        (row,) = store.list()
        report = store.get(row.trace_id)
    finally:
        store.close()
    assert report is not None
    return report


def test_import_CoreVital_is_corevital_with_a_deprecation_warning() -> None:  # noqa: N802
    sys.modules.pop("CoreVital", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module("CoreVital")
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "corevital" in str(caught[0].message)
    assert alias.__version__ == corevital.__version__
    assert sorted(alias.__all__) == sorted(corevital.__all__) == dir(alias)
    for name in ("CoreVitalMonitor", "load_report", "Report", "CoreVitalError"):
        assert getattr(alias, name) is getattr(corevital, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = alias.nothing_here


@pytest.mark.slow  # builds a wheel (pip, no build isolation)
def test_the_wheel_holds_the_CoreVital_alias(corevital_wheel: Path) -> None:  # noqa: N802
    with zipfile.ZipFile(corevital_wheel) as archive:
        names = set(archive.namelist())
    assert "CoreVital.py" in names and "corevital/__init__.py" in names


def test_run_with_an_original_layout_config(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    tiny_model_dir: Callable[[str], Path],
) -> None:
    config = tmp_path / "default.yaml"
    config.write_text(
        f"""
model: {{hf_id: "{tiny_model_dir("gpt2")}", load_in_4bit: false}}
device: {{requested: cpu}}
generation: {{max_new_tokens: 6, do_sample: false, seed: 3}}
summaries: {{hidden: {{enabled: true, stats: [mean, std]}}, logits: {{topk: 3}}}}
sink: {{type: sqlite, output_dir: "{tmp_path / "runs"}"}}
""",
        encoding="utf-8",
    )
    code = main(["run", "--config", str(config), "--prompt", "hello there", "--chat-template", "off"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warned = [r.getMessage() for r in caplog.records if r.name == "corevital.config"]
    assert len(warned) == 1 and warned[0].endswith("no longer exist and are ignored: summaries.hidden.stats")
    report = _only_report(tmp_path / "runs" / "corevital.db")
    assert report.run_config.max_new_tokens == 6 and report.run_config.seed == 3
    assert report.run_config.generation.do_sample is False
    assert len(report.timeline[0].logits_summary.topk_probs) == 3


@pytest.mark.slow  # a real `corevital` process
def test_the_original_quick_start_with_gpt2_in_the_hub_cache(tmp_path: Path) -> None:
    """``corevital run --model gpt2 ...`` works offline when the Hugging Face cache holds gpt2
    (here a tiny model of the GPT-2 architecture stored under that name)."""
    hub = tmp_path / "hub"
    commit = "0" * 39 + "1"
    snapshot = hub / "models--gpt2" / "snapshots" / commit
    save_tiny_model("gpt2", snapshot, seed=0)
    (hub / "models--gpt2" / "refs").mkdir(parents=True)
    (hub / "models--gpt2" / "refs" / "main").write_text(commit, encoding="utf-8")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    quick_start = ["--model", "gpt2", "--prompt", "Explain why the sky is blue", "--max_new_tokens", "50"]
    proc = subprocess.run(
        [sys.executable, "-m", "corevital", "run", *quick_start, "--device", "auto", "--perf", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    (summary,) = json.loads(proc.stdout)
    assert summary["model"] == "gpt2"
    report = _only_report(tmp_path / "runs" / "corevital.db")
    assert report.model.hf_id == "gpt2" and report.model.source == "hub"
    assert report.model.revision == commit
    assert report.model.architecture == "GPT2LMHeadModel"
    assert report.extensions.performance is not None
