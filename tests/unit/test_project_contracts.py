"""Project-wide contracts: layering, torch-free packages, generated docs, the public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import corevital

SRC = Path(__file__).resolve().parents[2] / "src" / "corevital"
DOCS = Path(__file__).resolve().parents[2] / "docs"

# Lower layers never import higher ones; a module may import its own level. metrics is the reduction
# library that capture calls. Above server sit the wiring modules, which put the steps together.
LAYER = {
    "errors": 0,
    "config": 0,
    "config_files": 0,  # reading settings files: bounded YAML, the original CoreVital's layout
    "_exports": 0,  # the lazy public names of the packages (PEP 562)
    "modes": 0,  # the named choices (capture mode, entropy mode, model source) shared by all layers
    "progress": 0,
    "perf": 0,  # timing of a run's operations: plain counters, no steps
    "closing": 0,  # `with obj:` closes obj (the mixin of every class that holds resources)
    "metrics": 1,
    "capture": 2,
    "testing": 2,
    "analysis": 3,
    "report": 4,
    "sinks": 5,
    "exporters": 6,
    "views": 7,  # what a person sees of stored runs: terminal tables, comparisons, exports, HTML
    "server": 8,
    "summary": 9,  # wiring: a report's one-screen summary
    "live": 9,  # wiring: the per-step callback's events
    "pipeline": 9,  # wiring: capture -> analysis -> report -> sinks/exporters
    "pipeline_process": 9,  # the pipeline's process side: timing, GC settling, signals held while writing
    "pipeline_signals": 9,  # the pipeline's capture -> analysis step: a sequence's series as numpy arrays
    "proxy": 9,  # wiring: OpenAI-compatible responses -> reports; the reverse proxy (corevital proxy)
    "validation": 10,  # calibrate / validate workflows over the pipeline
    "watch": 10,  # observing a model the user already loaded, through the pipeline
    "monitor": 11,  # the library API
    "monitor_arguments": 11,  # the library API's call arguments, checked before a model is loaded
    "cli": 12,  # the command line
    "config_docs": 13,  # docs/configuration.md, rendered from the settings and the CLI's flags
    "__main__": 13,
}
TORCH_FREE = ("analysis", "report", "sinks", "exporters", "views", "server", "validation", "proxy")


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "corevital" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
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


def test_every_module_is_placed_in_a_layer() -> None:
    found = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert found - {"__init__"} == set(LAYER)  # __init__ is the lazy public API over all of them


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
        "import corevital.report.builder, corevital.report.diagnosis\n"
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


def test_importing_the_package_imports_only_its_lazy_export_helper() -> None:
    code = (
        "import sys, corevital\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('corevital.'))\n"
        "print(loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['corevital._exports']"


# --- import cycles ----------------------------------------------------------------------------------
# Every import statement counts, wherever it stands: at module level, under ``if TYPE_CHECKING``, or
# inside a function. A deferred import is still a dependency (a cycle through one breaks as soon as
# the order of first calls changes), and a TYPE_CHECKING import says that one module knows the
# other's types, which a cycle-free design does not need either.


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package tree it imports, for the package at ``root``."""
    paths = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_the_cycle_finder_finds_cycles(tmp_path: Path) -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "one.py").write_text("from pkg.sub import two\n")
    (package / "sub" / "two.py").write_text("def f():\n    from ..one import f\n")  # deferred and relative
    (package / "three.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import four\n"
    )
    (package / "four.py").write_text("import pkg.three\n")
    assert import_cycles(import_graph(package)) == [["pkg.four", "pkg.three"], ["pkg.one", "pkg.sub.two"]]


def test_no_import_cycles() -> None:
    assert import_cycles(import_graph(SRC)) == []


# --- transformers internals ---------------------------------------------------------------------------
# capture/hf_compat.py is the one module that reaches into transformers; the rest of capture uses
# transformers' public top-level names and what hf_compat exports.
HF_COMPAT = SRC / "capture" / "hf_compat.py"
TRANSFORMERS_INTERNALS = {
    "_attn_implementation",
    "_attn_implementation_internal",
    "_commit_hash",
    "_get_logits_processor",
    "_global_mapping",
    "_name_or_path",
    "_supports_default_dynamic_cache",
    "ALL_ATTENTION_FUNCTIONS",
    "ALL_MASK_ATTENTION_FUNCTIONS",
    "DynamicLayer",
    "eager_attention_forward",
    # transformers' output-capturing hooks: the mark it sets, and torch's hook tables they sit in
    # (the global one: a hook there may change any module's output)
    "_output_capturing_hooks_installed",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_global_forward_hooks",
}


def _internals_used(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformers."):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module == "transformers":
            found.extend(f"transformers.{a.name}" for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("transformers."))
        elif isinstance(node, ast.Attribute) and (
            node.attr in TRANSFORMERS_INTERNALS
            or (node.attr == "modules" and ast.unparse(node) == "sys.modules")
        ):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Name) and node.id in TRANSFORMERS_INTERNALS:
            found.append(node.id)
        elif isinstance(node, ast.Constant) and node.value in TRANSFORMERS_INTERNALS:
            found.append(repr(node.value))
    return [f"{path.relative_to(SRC)}: {what}" for what in found]


def test_only_hf_compat_touches_transformers_internals() -> None:
    found = [
        hit
        for path in sorted((SRC / "capture").rglob("*.py"))
        if path != HF_COMPAT
        for hit in _internals_used(path)
    ]
    assert found == []
    assert _internals_used(HF_COMPAT)  # the check sees them where they are


def test_every_private_name_hf_compat_uses_is_in_the_contract() -> None:
    """A new internal used by hf_compat joins the list above, so no other module may use it."""
    own = {
        node.name for node in ast.parse(HF_COMPAT.read_text(encoding="utf-8")).body if hasattr(node, "name")
    }
    own |= {
        target.id
        for node in ast.parse(HF_COMPAT.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    used = set()
    for node in ast.walk(ast.parse(HF_COMPAT.read_text(encoding="utf-8"))):
        name = (
            node.attr
            if isinstance(node, ast.Attribute)
            else node.value
            if isinstance(node, ast.Constant)
            else None
        )
        if (
            isinstance(name, str)
            and name.startswith("_")
            and not name.startswith("__")
            and name.isidentifier()
        ):
            used.add(name)
    assert used - own <= TRANSFORMERS_INTERNALS


def test_default_store_path_is_the_default_output_directory() -> None:
    from pathlib import PurePosixPath

    from corevital.config import load_settings
    from corevital.sinks.sqlite_schema import DB_FILE_NAME, DEFAULT_DB_PATH

    assert PurePosixPath(DEFAULT_DB_PATH) == PurePosixPath(load_settings(environ={}).out) / DB_FILE_NAME


def _class_names(package: str) -> set[str]:
    names: set[str] = set()
    for path in sorted((SRC / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.update(node.name for node in tree.body if isinstance(node, ast.ClassDef))
    return names


def test_analysis_results_and_report_models_have_distinct_names() -> None:
    # The report's models keep the original schema's names; the analysis' results are named apart
    # so that a name says which of the two a value is.
    assert _class_names("analysis") & _class_names("report") == set()
