"""The live layer-update evidence equals the report's on every prefix of a run: running medians
against ``np.median``, the one-row robust z against ``robust_z_rows``, the severity against
:func:`assess_layer_updates` of the same steps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from corevital.analysis.online import LayerRows, RunningLayerUpdates, RunningMedians
from corevital.analysis.stats import robust_z_rows
from corevital.analysis.updates import _robust_z, assess_layer_updates
from tests.support.signals import make_signals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_row_robust_z_is_robust_z_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        values = rng.normal(size=int(rng.integers(1, 40)))
        values[rng.random(values.size) < 0.2] = np.nan
        np.testing.assert_allclose(_robust_z(values, 0.1), robust_z_rows(values[None, :], 0.1)[0], atol=1e-12)


def test_running_medians_are_numpys_medians_of_the_finite_values() -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(40, 7))
    rows[rng.random(rows.shape) < 0.15] = np.nan
    rows[:, 6] = np.nan  # a layer with no finite value
    medians = RunningMedians()
    for t in range(rows.shape[0]):
        medians.push(rows[t])
        got = medians.medians()
        assert got is not None
        for layer in range(rows.shape[1]):
            column = rows[: t + 1, layer]
            column = column[np.isfinite(column)]
            expected = np.median(column) if column.size else np.nan
            np.testing.assert_equal(got[layer], expected)


def test_the_live_severity_is_the_reports_on_every_prefix() -> None:
    rng = np.random.default_rng(4)
    steps, layers = 24, 12
    ratio = rng.uniform(0.1, 0.4, (steps, layers))
    ratio[:, 0] = ratio[:, -1] = np.nan
    mlp = rng.uniform(0.05, 0.3, (steps, layers))
    mlp[:, -1] = np.nan
    mlp[10:, 5] = 0.0  # the MLP of layer 5 falls silent at step 10: the median gets there at step 20
    entropy = rng.uniform(0.3, 0.8, (steps, layers))
    entropy[:, 8] = 1.0  # layer 8 attends uniformly throughout
    base = make_signals(steps=steps, layers=layers)
    live = RunningLayerUpdates()
    severities = set()
    for t in range(steps):
        live.update(LayerRows(ratio[t], mlp[t], entropy[t]))
        sig = replace(
            base,
            hidden_update_ratio=ratio[: t + 1],
            hidden_mlp_update_ratio=mlp[: t + 1],
            attn_entropy_norm=entropy[: t + 1],
        )
        report = assess_layer_updates(sig)
        assert live.severity() == report.severity
        severities.add(report.severity)
        if t >= 20:
            assert 5 in report.layers and 8 in report.layers
    assert 0.9 in severities
