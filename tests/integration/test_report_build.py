"""The report's timeline and layers hold the captured numbers, value by value, at the right step and layer.

The builder converts whole columns at once; this checks it against one value at a time (``num``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from corevital.capture.loading import LoadedModel
from corevital.capture.records import RunCapture, SequenceCapture
from corevital.pipeline import Pipeline
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.numbers import num
from corevital.report.schema import Report
from tests.integration.conftest import tiny_settings

PROMPTS = ["The quick brown fox jumps", "Hello world, this is a longer prompt"]


def _count(value: float) -> int | None:
    return None if not np.isfinite(value) else int(np.rint(value))


@pytest.mark.parametrize(("arch", "temperature"), [("llama", 0.0), ("bart", 0.8)])
def test_every_step_and_layer_holds_its_captured_values(
    arch: str, temperature: float, tiny_loaded: Callable[[str], LoadedModel]
) -> None:
    pipeline = Pipeline(
        tiny_settings(max_new_tokens=5, temperature=temperature, batch_size=2, ignore_eos=True)
    )
    pipeline.use_model(tiny_loaded(arch))
    run = pipeline.capture(PROMPTS)
    for seq, report in zip(run.sequences, pipeline.build(run), strict=True):
        assert report_to_json(report_from_json(report_to_json(report))) == report_to_json(report)
        prompt_tokens = len(seq.prompt.token_ids)
        lg, h, a = seq.logits, seq.hidden, seq.attention
        assert h is not None and a is not None  # full capture keeps every layer
        assert len(report.timeline) == seq.num_steps
        for t, step in enumerate(report.timeline):
            assert step.step_index == prompt_tokens + t
            assert step.token.token_id == seq.generated_token_ids[t]
            logits = step.logits_summary
            assert logits.entropy == num(lg.entropy[t])
            assert logits.surprisal == num(seq.chosen.surprisal[t])
            assert [p.token_id for p in logits.topk_probs] == [int(i) for i in lg.topk_ids[t]]
            assert [p.prob for p in logits.topk_probs] == [num(p) for p in lg.topk_probs[t]]
            if temperature > 0:
                assert logits.sampling_prob == num(seq.chosen.sampling_prob[t])
            assert [layer.layer_index for layer in step.layers] == list(range(h.l2_norm.shape[1]))
            for i, layer in enumerate(step.layers):
                assert layer.hidden_summary.l2_norm_mean == num(h.l2_norm[t, i])
                assert layer.hidden_summary.sketch == [num(x) for x in h.sketch[t, i]]
                attention = layer.attention_summary
                assert attention.entropy_mean == num(a.entropy_mean[t, i])
                assert attention.max_weight_per_head == [num(x) for x in a.max_weight_per_head[t, i]]
                assert attention.collapsed_head_count == _count(a.collapsed_head_count[t, i])
                if seq.cross_attention is not None:
                    assert layer.cross_attention is not None
                    assert layer.cross_attention.entropy_max == num(seq.cross_attention.entropy_max[t, i])
        if seq.encoder_hidden is not None:
            encoder = report.encoder_layers
            assert encoder is not None
            assert [e.hidden_summary.std for e in encoder] == [num(x) for x in seq.encoder_hidden.std]


@pytest.mark.parametrize("enabled_before", [True, False])
def test_cyclic_gc_waits_while_reports_are_built(
    enabled_before: bool, tiny_loaded: Callable[[str], LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is off during the build (its passes find nothing there) and as it was after."""
    import gc

    pipeline = Pipeline(tiny_settings(max_new_tokens=3))
    pipeline.use_model(tiny_loaded("llama"))
    run = pipeline.capture(["one prompt", "and another"])
    seen: list[bool] = []
    real = Pipeline.build_one

    def build_one(self: Pipeline, run: RunCapture, seq: SequenceCapture) -> Report:
        seen.append(gc.isenabled())
        return real(self, run, seq)

    monkeypatch.setattr(Pipeline, "build_one", build_one)
    was = gc.isenabled()
    try:
        (gc.enable if enabled_before else gc.disable)()
        reports = pipeline.build(run)
        assert gc.isenabled() is enabled_before
    finally:
        (gc.enable if was else gc.disable)()
    assert len(reports) == 2 and seen == [False, False]
