"""Importing modules in a fresh interpreter where torch and transformers cannot be imported, as the
layers that need only numpy (analysis, report, sinks) must allow."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable

__all__ = ["assert_imports_without_torch"]


def assert_imports_without_torch(modules: Iterable[str]) -> None:
    """Import each of ``modules`` in a new Python process in which ``import torch`` and ``import
    transformers`` raise ImportError; fails with that process's stderr when one import fails."""
    program = "\n".join(
        [
            "import importlib, sys",
            'sys.modules["torch"] = None  # any `import torch` now raises ImportError',
            'sys.modules["transformers"] = None',
            f"for name in {list(modules)!r}:",
            "    importlib.import_module(name)",
            'print("ok")',
        ]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
