"""Project-wide contracts: layering, torch-free packages, generated docs, the public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import corevital

SRC = Path(__file__).resolve().parents[2] / "src" / "corevital"
DOCS = Path(__file__).resolve().parents[2] / "docs"

# Lower layers never import higher ones. metrics is the reduction library that capture calls.
LAYER = {
    "errors": 0,
    "config": 0,
    "progress": 0,
    "metrics": 1,
    "capture": 2,
    "testing": 2,
    "analysis": 3,
    "report": 4,
    "sinks": 5,
    "exporters": 6,
    "views": 7,  # what a person sees of stored runs: terminal tables, comparisons, exports, HTML
    "server": 8,
    "validation": 9,  # calibrate / validate workflows: wiring over the pipeline, like cli and monitor
}
TORCH_FREE = ("analysis", "report", "sinks", "exporters", "views", "server", "validation")


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "corevital" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


def test_packages_import_only_from_lower_layers() -> None:
    violations = []
    for package, level in LAYER.items():
        files = (
            [SRC / f"{package}.py"]
            if (SRC / f"{package}.py").exists()
            else sorted((SRC / package).rglob("*.py"))
        )
        for path in files:
            for module in _imports(path):
                target = _package_of(module)
                if target in LAYER and LAYER[target] > level:
                    violations.append(f"{path.relative_to(SRC)} imports {module}")
    assert violations == []


def test_torch_free_packages_do_not_import_torch_in_source() -> None:
    offenders = []
    for package in TORCH_FREE:
        for path in sorted((SRC / package).rglob("*.py")):
            for module in _imports(path):
                if module.split(".")[0] in ("torch", "transformers"):
                    offenders.append(f"{path.relative_to(SRC)} imports {module}")
    assert offenders == []


def test_reading_and_storing_work_without_torch_installed() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import corevital, corevital.cli, corevital.pipeline, corevital.summary\n"
        "import corevital.analysis.diagnose, corevital.analysis.signals, corevital.analysis.policies\n"
        "import corevital.report.builder, corevital.report.reanalysis, corevital.report.diagnosis\n"
        "import corevital.sinks.sqlite, corevital.monitor, corevital.live\n"
        "import corevital.capture.records, corevital.capture.capabilities\n"
        "import corevital.validation.workflow, corevital.validation.table, corevital.cli.validation\n"
        "import corevital.analysis.calibration.fit, corevital.analysis.calibration.divergence\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_configuration_docs_match_the_settings() -> None:
    from corevital.config_docs import render

    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: python -m corevital.config_docs > docs/configuration.md"
    )


def test_every_setting_has_a_description_and_a_packaged_default() -> None:
    from corevital.config import Settings, read_default_yaml

    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []
    assert set(read_default_yaml()) <= set(Settings.model_fields)


def test_public_api_is_exactly_what_all_lists() -> None:
    public = {name for name in dir(corevital) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(corevital, name)).__name__ == "module"}
    assert set(corevital.__all__) == (public - modules) | {"__version__"}
    for name in corevital.__all__:
        assert getattr(corevital, name) is not None


def test_importing_the_package_imports_no_submodule() -> None:
    code = (
        "import sys, corevital\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('corevital.'))\n"
        "print(loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
