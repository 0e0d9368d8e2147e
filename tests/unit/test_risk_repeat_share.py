"""The phrase-level loop evidence of the risk score: repeat_share, final and running."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from corevital.analysis.online import RunningFeatures
from corevital.analysis.risk import repeat_share, risk_features
from tests.support.signals import make_signals


def test_repeat_share_counts_token_ngrams_that_came_before() -> None:
    assert math.isnan(repeat_share([1, 2, 3]))
    assert repeat_share([1, 2, 3, 4, 5, 6]) == 0.0
    # 1 2 3 4 1 2 3 4: five 4-grams, (1, 2, 3, 4) twice
    assert repeat_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 - 4 / 5)
    looping = [7, 8, 9] * 20
    assert repeat_share(looping) == pytest.approx(1 - 3 / 57)


def test_the_running_repeat_share_equals_the_reports_on_a_looping_output() -> None:
    ids = np.asarray([5, 6, 7, 8, 9] + [11, 12, 13] * 10, dtype=np.int64)
    sig = replace(make_signals(steps=ids.size, seed=3), token_ids=ids)
    running = RunningFeatures()
    for t in range(ids.size):
        running.update(
            float(sig.entropy[t]), float(sig.surprisal[t]), float(sig.top_k_margin[t]), int(ids[t])
        )
        want = risk_features(replace(sig, token_ids=ids[: t + 1]), 0.0).repeat_share
        got = running.features(0.0).repeat_share
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)
    assert running.features(0.0).repeat_share > 0.6
