"""``analysis/`` needs numpy only: no torch, no transformers, and nothing from ``report/`` (data flows
capture → metrics → analysis → report)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.imports import assert_imports_without_torch

ANALYSIS = Path(__file__).resolve().parents[2] / "src" / "corevital" / "analysis"
MODULES = sorted(p.stem for p in ANALYSIS.glob("*.py") if p.stem != "__init__")


def test_analysis_imports_without_torch() -> None:
    assert_imports_without_torch(f"corevital.analysis.{name}" for name in MODULES)


def test_no_analysis_module_imports_report_capture_or_metrics() -> None:
    for path in ANALYSIS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("corevital.report", "corevital.capture", "corevital.metrics")), (
                    path.name,
                    name,
                )
                assert name.split(".")[0] not in {"torch", "transformers"}, (path.name, name)


def test_analysis_modules_stay_small() -> None:
    for path in ANALYSIS.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 400, path.name
