"""The dashboard's static files travel in the wheel, and the page references only files that exist.

The wheel is built from a copy of the source tree (pip, no build isolation: no download), so the
check covers setuptools' package-data globs for the nested ``server/static`` directories.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from corevital.server.dashboard import static_files

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "src" / "corevital" / "server" / "static"


def _static_paths() -> set[str]:
    return {
        path.relative_to(STATIC).as_posix()
        for path in STATIC.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_wheel_holds_every_static_file(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(out)], check=True, cwd=tmp_path, timeout=300)
    (wheel,) = out.glob("corevital-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if name.startswith("corevital/server/static/")}
    expected = {f"corevital/server/static/{path}" for path in _static_paths()}
    assert expected <= names, sorted(expected - names)
    assert "corevital/server/static/vendor/uplot/uPlot.iife.min.js" in names
    assert "corevital/server/static/vendor/uplot/LICENSE" in names


def test_served_files_and_references() -> None:
    files = static_files()
    assert set(files) == {path for path in _static_paths() if not path.endswith(".pyc")}
    index = files["index.html"][0].decode()
    assert "<script>" not in index and "style=" not in index  # no inline script or style
    referenced = re.findall(r'(?:src|href)="/static/([^"]+)"', index)
    assert referenced and all(path in files for path in referenced), referenced
    for name, (body, _) in files.items():
        if name.endswith(".js") and not name.startswith("vendor/"):
            text = body.decode()
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
            assert "http://" not in text and "https://" not in text, name
            for target in re.findall(r'from "\./([^"]+)"', text):
                folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
                assert f"{folder}{target}" in files, (name, target)
