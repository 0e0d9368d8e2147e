"""Capture inside transformers' compiled decoding step (static cache, ``torch.compile``).

On an accelerator, ``generate(cache_implementation="static")`` compiles the model's ``__call__``, so
CoreVital's hooks and attention function are traced into the decoding step's graph. Here the same
happens on the CPU (``CompileConfig._compile_all_devices``) with ``fullgraph=True``, which turns any
graph break into an error, and a backend that counts the graphs it is given: one graph for the
decoding step, the same for all 50 steps and for a second generation (no recompiles), and reports
equal to the uncompiled run's within float tolerance, in full and summary capture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from transformers.generation.configuration_utils import CompileConfig

from corevital.capture.hf_compat import output_capture_hooks
from corevital.monitor import CoreVitalMonitor
from corevital.report.schema import Report
from tests.integration.test_capture_caches import _sliding_static_cache
from tests.support.compiled import count_calls
from tests.support.models_table import attention_observed
from tests.support.report_fields import ATTENTION_FIELDS, LOGIT_FIELDS
from tests.support.tiny_models import FAMILIES, build_family_model, build_model, build_tokenizer

Capture = Literal["full", "summary"]
Path = Literal["fast", "eager"]
PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]
NEW_TOKENS = 50
HIDDEN_FIELDS = ("l2_norm_mean", "max_abs", "mean", "std")


class GraphCounter:
    """A torch.compile backend that runs the traced graph as it is and counts the graphs it got.

    The backend handed to torch.compile is a function (CompileConfig deep-copies its fields, which
    copies an object but not a function), which counts into this object.
    """

    def __init__(self) -> None:
        self.graphs = 0

    def backend(self) -> Callable[[torch.fx.GraphModule, list[Any]], Callable[..., Any]]:
        def compile_graph(gm: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
            self.graphs += 1
            return gm.forward

        return compile_graph


def _compile_config(counter: GraphCounter) -> CompileConfig:
    # mode None: inductor's default (no CUDA graphs, which the CPU has not)
    config = CompileConfig(backend=counter.backend(), fullgraph=True, mode=None)  # type: ignore[arg-type]
    config._compile_all_devices = True  # type: ignore[assignment]  # transformers: accelerators only, unless asked
    return config


def _generate(model: Any, tokenizer: Any, compile_config: CompileConfig | None) -> torch.Tensor:
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs: dict[str, Any] = {"cache_implementation": "static", "disable_compile": compile_config is None}
    if compile_config is not None:
        kwargs["compile_config"] = compile_config
    out: torch.Tensor = model.generate(
        **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, **kwargs
    )
    return out


def _watched(
    model: Any, tokenizer: Any, compile_config: CompileConfig | None, capture: Capture, path: Path = "fast"
) -> tuple[torch.Tensor, list[Report]]:
    monitor = CoreVitalMonitor(device="cpu", capture=capture, attention_path=path)
    with monitor.watch(model, tokenizer) as watcher:
        out = _generate(model, tokenizer, compile_config)
    return out, watcher.reports


def _table(report: Report, part: str, names: tuple[str, ...]) -> np.ndarray:
    if part == "logits":
        rows = [[getattr(s.logits_summary, n) for n in names] for s in report.timeline]
    else:
        rows = [
            [[getattr(getattr(layer, part), n) for n in names] for layer in s.layers] for s in report.timeline
        ]
    return np.array(rows, dtype=float)


def _close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.shape == b.shape, what
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, equal_nan=True, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("capture", ["full", "summary"])
def test_compiled_static_cache_one_graph_and_equal_reports(capture: Capture) -> None:
    model = build_model("llama", seed=0)
    model.config._attn_implementation = "sdpa"  # what a compiled deployment runs
    tokenizer = build_tokenizer()
    plain_counter, counter = GraphCounter(), GraphCounter()
    plain = _generate(model, tokenizer, _compile_config(plain_counter))
    assert plain_counter.graphs == 1

    config = _compile_config(counter)
    counters.clear()
    first, reports = _watched(model, tokenizer, config, capture)
    # One graph, as plain: the observer wraps the model's forward (a forward hook would be compiled
    # as a frame and a graph of its own, called from the module's __call__).
    assert counter.graphs == 1
    second, again = _watched(model, tokenizer, config, capture)
    assert counter.graphs == 1, "a second generation under capture must reuse the graph (no recompile)"
    assert not counters["graph_break"], "graph breaks in the decoding step"
    assert not counters["recompiles"], "recompiles across the decoding steps"
    # the layers' states come out of the graph through CoreVital's wrappers, without transformers' hooks
    assert output_capture_hooks(model) == 0
    eager_out, eager = _watched(model, tokenizer, None, capture)
    assert torch.equal(first, plain) and torch.equal(second, plain) and torch.equal(eager_out, plain)

    layers = model.config.num_hidden_layers
    for compiled, repeat, reference in zip(reports, again, eager, strict=True):
        assert len(compiled.timeline) == NEW_TOKENS
        _close(_table(compiled, "logits", LOGIT_FIELDS), _table(reference, "logits", LOGIT_FIELDS), "logits")
        _close(_table(compiled, "logits", LOGIT_FIELDS), _table(repeat, "logits", LOGIT_FIELDS), "repeat")
        if capture == "full":
            hidden = _table(compiled, "hidden_summary", HIDDEN_FIELDS)
            assert hidden.shape == (NEW_TOKENS, layers, len(HIDDEN_FIELDS))
            _close(hidden, _table(reference, "hidden_summary", HIDDEN_FIELDS), "hidden states")
            attention = _table(compiled, "attention_summary", ATTENTION_FIELDS)
            assert not np.isnan(attention[:, :, 0]).any(), "attention missing on compiled steps"
            _close(attention, _table(reference, "attention_summary", ATTENTION_FIELDS), "attention")
        assert [w.code for w in compiled.warnings] == [w.code for w in reference.warnings]


@pytest.mark.slow
def test_compiled_reductions_beside_the_compiled_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the decoding steps are compiled the window's attention reductions are compiled too (on
    a GPU by default; here the rule is made to say so): the decoding step stays one graph without
    breaks for two generations, and the reports equal the uncompiled run's within float tolerance."""
    import corevital.capture.observer as observer_module
    import corevital.metrics.attention as attention_module

    fused = attention_module.fused_attention_row_parts
    calls = count_calls(monkeypatch, fused)
    monkeypatch.setattr(observer_module, "decoding_steps_compiled", lambda model, cache: True)
    model = build_model("llama", seed=0)
    model.config._attn_implementation = "sdpa"
    tokenizer = build_tokenizer()
    counter = GraphCounter()
    config = _compile_config(counter)
    counters.clear()
    first, reports = _watched(model, tokenizer, config, "full")
    second, _ = _watched(model, tokenizer, config, "full")
    assert counter.graphs == 1 and not counters["graph_break"]
    assert calls and fused.failure is None
    monkeypatch.undo()  # the reference: uncompiled, its reductions as written
    calls.clear()
    eager_out, eager = _watched(model, tokenizer, None, "full")
    assert not calls
    assert torch.equal(first, eager_out) and torch.equal(second, eager_out)
    for compiled, reference in zip(reports, eager, strict=True):
        attention = _table(compiled, "attention_summary", ATTENTION_FIELDS)
        assert not np.isnan(attention[:, :, 0]).any()
        _close(attention, _table(reference, "attention_summary", ATTENTION_FIELDS), "attention")


@pytest.mark.slow
def test_compiled_eager_attention_path_observes_attention() -> None:
    """With the model's eager attention under compile, the compiled steps' rows are scored as well."""
    model = build_model("llama", seed=0)
    tokenizer = build_tokenizer()
    counter = GraphCounter()
    out, reports = _watched(model, tokenizer, _compile_config(counter), "full", "eager")
    eager_out, reference = _watched(model, tokenizer, None, "full", "eager")
    assert counter.graphs == 1 and torch.equal(out, eager_out)
    for compiled, ref in zip(reports, reference, strict=True):
        attention = _table(compiled, "attention_summary", ATTENTION_FIELDS)
        assert not np.isnan(attention[:, :, 0]).any()
        _close(attention, _table(ref, "attention_summary", ATTENTION_FIELDS), "attention, eager path")
        assert not compiled.warnings


@pytest.mark.slow
def test_compiled_sliding_window_keeps_the_prefill_attention() -> None:
    """Compiled steps over a sliding-window static cache have no attention rows; the prefill has.

    The report keeps the prefill step's attention (equal to the uncompiled run's), None on the
    compiled steps, every step's logits and hidden states, and the warning saying why.
    """
    model = build_family_model("mistral", seed=0)
    model.config._attn_implementation = "sdpa"
    tokenizer = build_tokenizer()
    counter = GraphCounter()
    counters.clear()
    out, reports = _watched(model, tokenizer, _compile_config(counter), "full")
    reference_out, reference = _watched(model, tokenizer, None, "full")
    # the window filling up recompiles the sliding layers' update (transformers' own guard, plain too)
    assert counter.graphs >= 2 and not counters["graph_break"]
    assert torch.equal(out, reference_out)
    layers = model.config.num_hidden_layers
    for compiled, ref in zip(reports, reference, strict=True):
        assert [w.code for w in compiled.warnings] == ["ATTENTION_NOT_AVAILABLE"]
        attention = _table(compiled, "attention_summary", ATTENTION_FIELDS)
        assert attention.shape == (NEW_TOKENS, layers, len(ATTENTION_FIELDS))
        assert not np.isnan(attention[0]).any(), "the prefill step's attention is kept"
        assert np.isnan(attention[1:]).all(), "compiled steps have no attention"
        reference_attention = _table(ref, "attention_summary", ATTENTION_FIELDS)
        _close(attention[0], reference_attention[0], "prefill attention")
        hidden = _table(compiled, "hidden_summary", HIDDEN_FIELDS)
        assert not np.isnan(hidden[:, :, 0]).any()
        _close(hidden, _table(ref, "hidden_summary", HIDDEN_FIELDS), "hidden states")
        _close(_table(compiled, "logits", LOGIT_FIELDS), _table(ref, "logits", LOGIT_FIELDS), "logits")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_compiles_whole_under_capture(family: str) -> None:
    """Every decoder family's compiled static-cache step, with CoreVital inside, in one graph.

    ``fullgraph=True`` makes any graph break an error: a layer whose attention formula SDPA cannot
    compute (Gemma 2's soft cap, gpt-oss's sinks) must take the eager formula inside the graph, not
    raise and send the whole step back to eager execution. Tokens equal the compiled plain run's;
    every step has every layer's hidden state; the compiled steps have attention where the static
    cache is of full-attention layers, and the warning where it is not.
    """
    model = build_family_model(family, seed=0)
    tokenizer = build_tokenizer()
    new_tokens = 6
    config = _compile_config(GraphCounter())
    kwargs: dict[str, Any] = {"cache_implementation": "static", "compile_config": config}
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)

    def generate() -> torch.Tensor:
        out: torch.Tensor = model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **kwargs
        )
        return out

    plain = generate()
    counters.clear()
    with CoreVitalMonitor(device="cpu", capture="full").watch(model, tokenizer) as watcher:
        out = generate()
    assert not counters["graph_break"]
    assert torch.equal(out, plain)
    observed = attention_observed(family)  # Falcon before transformers 5.25: attention computed inline
    without = _sliding_static_cache(model) or not observed  # compiled steps without attention
    layers = model.config.num_hidden_layers
    for report in watcher.reports:
        assert len(report.timeline) == new_tokens
        assert [w.code for w in report.warnings] == (["ATTENTION_NOT_AVAILABLE"] if without else [])
        hidden = _table(report, "hidden_summary", HIDDEN_FIELDS)
        assert hidden.shape == (new_tokens, layers, len(HIDDEN_FIELDS))
        assert not np.isnan(hidden).any(), "every step's hidden states, the compiled ones included"
        attention = _table(report, "attention_summary", ATTENTION_FIELDS)
        assert np.isnan(attention[0, :, 0]).any() != observed, "the prefill's attention"
        assert np.isnan(attention[1:, :, 0]).all() == without
    torch._dynamo.reset()  # each family's graphs are its own


def test_a_parallel_layers_compiled_steps_reduce_with_its_prefill_in_summary_capture() -> None:
    """GPT-NeoX (attention and MLP in parallel: no pre-MLP residual) in summary capture: its eager
    prefill and its compiled steps keep the same parts, so a window reduces them in one batch; every
    step keeps its logits in one shape ([B, 1, V]) for that, and the report has every step."""
    model = build_family_model("gpt_neox", seed=0)
    tokenizer = build_tokenizer()
    config = _compile_config(GraphCounter())
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs: dict[str, Any] = {"cache_implementation": "static", "compile_config": config}
    with CoreVitalMonitor(device="cpu", capture="summary").watch(model, tokenizer) as watcher:
        model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, **kwargs)
    for report in watcher.reports:
        assert len(report.timeline) == 4
        entropy = np.array([step.logits_summary.entropy for step in report.timeline], dtype=float)
        assert not np.isnan(entropy).any()
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_steps_return_the_hidden_states_the_caller_asks_for() -> None:
    """generate(output_hidden_states=True, return_dict_in_generate=True) on the compiled static cache
    under watch returns every step's states, those of the compiled generation unobserved, with the
    report whole; the observer's own states come through its wrappers all the same."""
    model = build_model("llama", seed=0)
    model.config._attn_implementation = "sdpa"
    tokenizer = build_tokenizer()
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs: dict[str, Any] = {
        "max_new_tokens": 6,
        "min_new_tokens": 6,
        "do_sample": False,
        "cache_implementation": "static",
        "output_hidden_states": True,
        "return_dict_in_generate": True,
    }
    reference = model.generate(**inputs, **kwargs, compile_config=_compile_config(GraphCounter()))
    counter = GraphCounter()
    monitor = CoreVitalMonitor(device="cpu", capture="summary")
    with monitor.watch(model, tokenizer) as watcher:
        out = model.generate(**inputs, **kwargs, compile_config=_compile_config(counter))
    assert counter.graphs == 1
    assert torch.equal(out.sequences, reference.sequences)
    assert len(out.hidden_states) == len(reference.hidden_states) == 6
    for got, want in zip(out.hidden_states[1:], reference.hidden_states[1:], strict=True):
        assert got is not None and len(got) == len(want) == model.config.num_hidden_layers + 1
        for state, expected in zip(got, want, strict=True):
            torch.testing.assert_close(state, expected)
    for report in watcher.reports:
        assert len(report.timeline) == 6
        assert "HIDDEN_STATES_NOT_AVAILABLE" not in [w.code for w in report.warnings]
