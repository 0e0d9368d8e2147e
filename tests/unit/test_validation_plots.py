"""Reliability diagrams and ROC curves are written as real, non-blank PNG files (validation/plots.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from corevital.errors import NotAvailableError
from corevital.validation.plots import PlotSeries, write_reliability_diagram, write_roc_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def image() -> ModuleType:
    module: ModuleType = pytest.importorskip("matplotlib.image")
    return module


def make_series(count: int, n: int = 400, seed: int = 0) -> list[PlotSeries]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    out = []
    for k in range(count):
        raw = rng.normal(size=n) + (1.5 - 0.5 * k) * labels
        out.append(PlotSeries(f"score {k}", 1.0 / (1.0 + np.exp(-(1.5 * raw - 1.0))), labels))
    return out


def assert_real_png(path: Path, image: ModuleType, shape: tuple[int, int]) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    pixels = image.imread(path)
    assert pixels.shape[:2] == shape and pixels.shape[2] in (3, 4)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank canvas
    assert np.unique(rgb.reshape(-1, 3), axis=0).shape[0] > 20  # lines in several colours, text, grid


@pytest.mark.parametrize("count", [2, 3])
def test_reliability_diagram_is_a_real_png(tmp_path: Path, image: ModuleType, count: int) -> None:
    target = tmp_path / "nested" / "reliability.png"
    written = write_reliability_diagram(target, make_series(count), n_bins=10, title="Calibration")
    assert written == target
    assert_real_png(target, image, (768, 768))  # 6.4 in × 120 dpi


@pytest.mark.parametrize("count", [2, 3])
def test_roc_curves_are_a_real_png(tmp_path: Path, image: ModuleType, count: int) -> None:
    target = tmp_path / "roc.png"
    assert write_roc_curves(str(target), make_series(count)) == target
    assert_real_png(target, image, (720, 720))  # 6.0 in × 120 dpi


def test_more_series_draw_more_ink(tmp_path: Path, image: ModuleType) -> None:
    one, three = tmp_path / "one.png", tmp_path / "three.png"
    write_roc_curves(one, make_series(3)[:1])
    write_roc_curves(three, make_series(3))
    coloured = [
        int((np.ptp(image.imread(p)[..., :3], axis=-1) > 0.2).sum())  # saturated, not grey, pixels
        for p in (one, three)
    ]
    assert coloured[1] > 1.5 * coloured[0]


def test_plots_leave_pyplot_alone(tmp_path: Path, image: ModuleType) -> None:
    before = sys.modules.get("matplotlib.pyplot")
    write_reliability_diagram(tmp_path / "r.png", make_series(2))
    write_roc_curves(tmp_path / "c.png", make_series(2))
    assert sys.modules.get("matplotlib.pyplot") is before
    if before is not None:
        assert before.get_fignums() == []


def test_invalid_series_are_value_errors(tmp_path: Path, image: ModuleType) -> None:
    good = make_series(1)[0]
    with pytest.raises(ValueError, match="at least one"):
        write_roc_curves(tmp_path / "x.png", [])
    with pytest.raises(ValueError, match="distinct"):
        write_roc_curves(tmp_path / "x.png", [good, good])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_reliability_diagram(tmp_path / "x.png", [PlotSeries("raw", good.scores * 3 - 1, good.labels)])
    with pytest.raises(ValueError, match="both"):
        write_roc_curves(
            tmp_path / "x.png", [PlotSeries("one class", good.scores, np.ones_like(good.labels))]
        )
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_is_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(NotAvailableError, match=r'pip install "corevital\[validate\]"'):
        write_roc_curves(tmp_path / "roc.png", make_series(2))
    with pytest.raises(NotAvailableError):
        write_reliability_diagram(tmp_path / "rel.png", make_series(2))
