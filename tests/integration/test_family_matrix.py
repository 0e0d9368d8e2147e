"""Every current decoder family under the dynamic and the static cache (tiny random models, CPU).

For each family of :data:`~tests.support.tiny_models.FAMILIES` and each cache: the tokens under
CoreVital equal plain ``generate()``, the fast attention path equals the eager one within 1e-4, and
the report has per-layer statistics and prompt telemetry. docs/models.md is generated from the same
list (:mod:`tests.support.models_table`).

``CV_TEST_DEVICE=cuda`` runs the same checks on a GPU, where ``generate()`` compiles the static
cache's decoding step: there a family whose static cache has sliding-window layers has no attention
on its compiled steps (the uncompiled prefill step has it), and the report says so
(``ATTENTION_NOT_AVAILABLE``) while keeping logits, hidden states and prompt telemetry
(docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.integration.test_capture_caches import (
    PROMPTS,
    _attention,
    _check_complete,
    _check_without_attention,
    _close,
    _compiled_steps_lack_attention,
    _generate_kwargs,
    _inputs,
    _logits,
    _sliding_static_cache,
    _watched,
    on_test_device,
)
from tests.support.models_table import ATTENTION_NOT_OBSERVED, COMPILED_NO_ATTENTION, render
from tests.support.tiny_models import FAMILIES, build_family_model, build_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family(family: str, cache: str) -> None:
    model = on_test_device(build_family_model(family, seed=0))
    tokenizer = build_tokenizer()
    plain = model.generate(**_inputs(tokenizer), **_generate_kwargs(cache))
    fast, fast_reports = _watched(model, tokenizer, cache, attention_path="fast")
    eager, eager_reports = _watched(model, tokenizer, cache, attention_path="eager")
    assert torch.equal(fast, plain) and torch.equal(eager, plain)
    assert len(fast_reports) == len(PROMPTS)
    layers = model.config.num_hidden_layers
    if family in ATTENTION_NOT_OBSERVED or _compiled_steps_lack_attention(model, cache):
        for report in fast_reports:
            _check_without_attention(report, layers, prefill_attention=family not in ATTENTION_NOT_OBSERVED)
        return
    for f, e in zip(fast_reports, eager_reports, strict=True):
        _check_complete(f, layers)
        _close(_attention(f), _attention(e), f"{family}: attention fast vs eager ({cache} cache)")
        _close(_logits(f), _logits(e), f"{family}: logits fast vs eager ({cache} cache)")


def test_the_families_without_compiled_attention_are_those_with_sliding_static_caches() -> None:
    found = tuple(f for f in FAMILIES if _sliding_static_cache(build_family_model(f, seed=0)))
    assert found == COMPILED_NO_ATTENTION


def test_models_page_is_current() -> None:
    page = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    assert page == render(), (
        "docs/models.md is stale: .venv/bin/python -m tests.support.models_table > docs/models.md"
    )
