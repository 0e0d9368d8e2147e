"""The corevital wheel, built from a copy of this checkout's source tree as pip builds it for a user.

pip runs without build isolation and without dependencies, so nothing is downloaded; the copy keeps
``__pycache__`` and ``*.egg-info`` out, so the wheel holds what setuptools' package data selects.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "build_wheel"]

REPO = Path(__file__).resolve().parents[2]


def build_wheel(directory: Path) -> Path:
    """Build the wheel of ``pyproject.toml``, ``README.md`` and ``src/`` under ``directory``; its path."""
    tree = directory / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = directory / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(out)], check=True, cwd=directory, timeout=300)
    (wheel,) = out.glob("corevital-*.whl")
    return wheel
