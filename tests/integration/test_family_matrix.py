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
from typing import Any

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
from tests.support.models_table import COMPILED_NO_ATTENTION, attention_observed, render
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
    observed = attention_observed(family)
    if not observed or _compiled_steps_lack_attention(model, cache):
        for report in fast_reports:
            _check_without_attention(report, layers, prefill_attention=observed)
        return
    for f, e in zip(fast_reports, eager_reports, strict=True):
        _check_complete(f, layers)
        _close(_attention(f), _attention(e), f"{family}: attention fast vs eager ({cache} cache)")
        _close(_logits(f), _logits(e), f"{family}: logits fast vs eager ({cache} cache)")


# Falcon's other layouts (the matrix builds the new decoder architecture): multi-query keys (like
# falcon-7b) and ALiBi positions (like falcon-rw), whose bias reaches the attention function inside
# the mask. ALiBi runs on the dynamic cache only: transformers' own generate() fails for it over a
# static cache (its ALiBi reads the 2-D padding mask, and generate() passes a 4-D one).
FALCON_LAYOUTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "multi_query": ({"new_decoder_architecture": False, "multi_query": True}, ("dynamic", "static")),
    "alibi": ({"new_decoder_architecture": False, "alibi": True, "num_kv_heads": 4}, ("dynamic",)),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "cache"), [(name, cache) for name, (_, caches) in FALCON_LAYOUTS.items() for cache in caches]
)
def test_falcon_layouts(layout: str, cache: str) -> None:
    overrides, _ = FALCON_LAYOUTS[layout]
    model = on_test_device(build_family_model("falcon", seed=0, **overrides))
    tokenizer = build_tokenizer()
    plain = model.generate(**_inputs(tokenizer), **_generate_kwargs(cache))
    fast, fast_reports = _watched(model, tokenizer, cache, attention_path="fast")
    eager, eager_reports = _watched(model, tokenizer, cache, attention_path="eager")
    assert torch.equal(fast, plain) and torch.equal(eager, plain)
    layers = model.config.num_hidden_layers
    if not attention_observed("falcon"):
        for report in fast_reports:
            _check_without_attention(report, layers)
        return
    for f, e in zip(fast_reports, eager_reports, strict=True):
        _check_complete(f, layers)
        _close(_attention(f), _attention(e), f"falcon {layout}: attention fast vs eager ({cache} cache)")


def test_the_families_without_compiled_attention_are_those_with_sliding_static_caches() -> None:
    found = tuple(f for f in FAMILIES if _sliding_static_cache(build_family_model(f, seed=0)))
    assert found == COMPILED_NO_ATTENTION


def test_models_page_is_current() -> None:
    page = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    assert page == render(), (
        "docs/models.md is stale: .venv/bin/python -m tests.support.models_table > docs/models.md"
    )
