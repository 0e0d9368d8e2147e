"""The report's sparse prompt attention: each head's entries cut from its layer's arrays."""

from __future__ import annotations

import numpy as np

from corevital.capture.records import PromptLayerAttention, PromptTelemetry
from corevital.report.builder import _sparse_heads
from corevital.report.numbers import as_list


def test_each_head_gets_the_first_count_entries_of_its_row() -> None:
    rng = np.random.default_rng(3)
    layers = []
    for heads, width in ((4, 5), (4, 5), (4, 7)):
        count = rng.integers(0, width + 1, heads)
        count[0] = 0  # a head with no entry above the threshold
        layers.append(
            PromptLayerAttention(
                rng.integers(0, 60, (heads, width)).astype(np.int32),
                rng.integers(0, 60, (heads, width)).astype(np.int32),
                rng.random((heads, width)).astype(np.float32),
                count,
            )
        )
    telemetry = PromptTelemetry(None, np.zeros(3), layers, None)
    got = _sparse_heads(telemetry.layers)
    # the reference: one head at a time, from the per-head objects
    want = telemetry.heads
    assert [len(layer) for layer in got] == [len(layer) for layer in want] == [4, 4, 4]
    for got_layer, want_layer in zip(got, want, strict=True):
        for head, ref in zip(got_layer, want_layer, strict=True):
            assert head.query_indices == ref.query_indices.tolist()
            assert head.key_indices == ref.key_indices.tolist()
            assert head.weights == as_list(ref.weights)
    assert got[0][0].weights == [] and got[0][0].query_indices == []
    assert _sparse_heads([]) == []
