"""Layer blame: the first layer where a fault appears is blamed most (metrics.md §6)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from corevital.analysis.diagnose import diagnose
from corevital.analysis.profiles import load_profile
from tests.support.signals import copy_of, make_signals, summary_only

PROFILE = load_profile("llama")


def test_nan_blames_the_first_layer_at_the_first_step() -> None:
    sig = make_signals(steps=20, layers=12)
    nan = copy_of(sig.hidden_nan)
    nan[6, 7:] = True  # appears in layer 7 at step 6, carried to later layers
    nan[7:, :] = True  # the corrupted token fed back: every layer from step 7
    d = diagnose(replace(sig, hidden_nan=nan), PROFILE)
    top = d.blamed_layers[0]
    assert top.layer == 7 and top.severity == 1.0 and "nan_inf_origin" in top.reasons
    assert top.first_step == 6
    assert all(b.severity < 1.0 for b in d.blamed_layers[1:])
    assert d.risk.blamed_layers_flat[0] == 7


def test_attention_nan_counts_in_depth_order() -> None:
    sig = make_signals(steps=10, layers=8)
    attn = copy_of(sig.attn_nan)
    hidden = copy_of(sig.hidden_nan)
    attn[3, 4] = True
    hidden[3, 5:] = True
    d = diagnose(replace(sig, attn_nan=attn, hidden_nan=hidden), PROFILE)
    assert d.blamed_layers[0].layer == 4


def test_a_norm_jump_blames_its_layer_not_the_carriers() -> None:
    for layer in (1, 5, 15, 27):
        sig = make_signals(steps=24, layers=30)
        l2 = copy_of(sig.hidden_l2)
        l2[:, layer:-1] *= 1e4
        d = diagnose(replace(sig, hidden_l2=l2), PROFILE)
        assert d.risk.blamed_layers_flat == (layer,), layer
        assert d.blamed_layers[0].reasons == ("l2_norm_jump",)


def test_collapsed_layers_are_blamed_below_numeric_faults() -> None:
    sig = make_signals(steps=30, layers=10)
    rates = np.zeros((30, 10))
    rates[:, 3] = 1.0
    nan = copy_of(sig.hidden_nan)
    nan[12, 6:] = True
    d = diagnose(replace(sig, attn_collapse_rate=rates, hidden_nan=nan), PROFILE)
    assert [b.layer for b in d.blamed_layers] == [6, 3]
    assert d.blamed_layers[1].reasons == ("attention_collapse",)
    assert d.blamed_layers[0].severity > d.blamed_layers[1].severity


def test_healthy_and_summary_runs_blame_nothing() -> None:
    assert diagnose(make_signals(steps=40, layers=30), PROFILE).blamed_layers == ()
    assert diagnose(summary_only(make_signals(steps=40)), PROFILE).blamed_layers == ()
