"""Known faults injected into tiny models are diagnosed: flags fire and the faulty layer is blamed.

Six-layer variants of three architectures, faults in an early (1), a middle (3) and a late (4)
layer (the middle third of six layers is 2-3). Greedy, from step 0. The confusion table of the
real SmolLM2 (30 layers) is produced by ``bench/healthy_runs.py --faults``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corevital.capture.loading import LoadedModel, ModelSpec, load_model
from corevital.pipeline import Pipeline
from corevital.report.schema import Report
from corevital.testing import inject_attention_collapse, inject_nan, inject_scale
from tests.integration.conftest import tiny_settings
from tests.support.tiny_models import save_tiny_model
from tests.support.values import present

ARCHS = ("llama", "gpt2", "qwen2")
LAYERS = {"early": 1, "middle": 3, "late": 4}
PROMPT = "The quick brown fox jumps over the lazy dog and keeps on running"
_LOADED: dict[str, LoadedModel] = {}


@pytest.fixture(scope="module")
def six_layer(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LoadedModel]:
    def get(arch: str) -> LoadedModel:
        if arch not in _LOADED:
            directory = save_tiny_model(arch, tmp_path_factory.mktemp(f"six-{arch}"), num_hidden_layers=6)
            _LOADED[arch] = load_model(ModelSpec(model=str(Path(directory)), device="cpu"))
        return _LOADED[arch]

    return get


def diagnose_run(loaded: LoadedModel) -> Report:
    pipeline = Pipeline(tiny_settings(max_new_tokens=16, ignore_eos=True))
    pipeline.use_model(loaded)
    return pipeline.build(pipeline.capture([PROMPT]))[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_healthy_run_is_quiet(arch: str, six_layer: Callable[[str], LoadedModel]) -> None:
    report = diagnose_run(six_layer(arch))
    flags = present(report.health_flags)
    assert not (flags.nan_detected or flags.mid_layer_anomaly_detected or flags.attention_collapse_detected)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("where", list(LAYERS))
def test_nan_is_detected_and_its_layer_blamed_first(
    arch: str, where: str, six_layer: Callable[[str], LoadedModel]
) -> None:
    loaded, layer = six_layer(arch), LAYERS[where]
    with inject_nan(loaded.model, layer):
        report = diagnose_run(loaded)
    assert present(report.health_flags).nan_detected
    risk = present(report.extensions.risk)
    blamed = risk.blamed_layers
    assert blamed[0].layer == layer
    assert blamed[0].severity == max(present(b.severity) for b in blamed)
    assert risk.risk_score == 1.0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("where", list(LAYERS))
def test_exploding_activations(arch: str, where: str, six_layer: Callable[[str], LoadedModel]) -> None:
    loaded, layer = six_layer(arch), LAYERS[where]
    with inject_scale(loaded.model, layer, 1e4):
        report = diagnose_run(loaded)
    assert present(report.health_flags).mid_layer_anomaly_detected == (where == "middle")
    assert layer in present(report.extensions.risk).blamed_layers_flat


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("where", list(LAYERS))
def test_attention_collapse(arch: str, where: str, six_layer: Callable[[str], LoadedModel]) -> None:
    loaded, layer = six_layer(arch), LAYERS[where]
    with inject_attention_collapse(loaded.model, layer):
        report = diagnose_run(loaded)
    assert present(report.health_flags).attention_collapse_detected
    detail = present(present(report.extensions.risk).attention_collapse_detail)
    assert layer in present(detail.trend_layers)
