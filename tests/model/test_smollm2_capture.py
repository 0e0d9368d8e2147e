"""Capture on the real SmolLM2-135M-Instruct (GGUF), the embedded default model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corevital.capture.loading import LoadedModel
from corevital.capture.runner import capture_prompts
from corevital.pipeline import Pipeline
from tests.model.conftest import smol_settings
from tests.support.values import present

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_default_model_capabilities(smollm2: LoadedModel) -> None:
    caps = smollm2.capabilities
    assert smollm2.resolved.is_default and smollm2.resolved.source == "gguf"
    assert (caps.architecture, caps.num_layers, caps.num_attention_heads) == ("LlamaForCausalLM", 30, 9)
    assert caps.num_key_value_heads == 3 and caps.hidden_size == 576
    assert caps.attention_available and caps.hidden_states_available
    assert smollm2.dtype_name == "float32"


def test_default_model_takes_the_memory_saving_paths(smollm2: LoadedModel) -> None:
    """Its prompt pass is streamed layer by layer and its prompt surprisals come from the output head."""
    from corevital.capture.model_checks import logits_head, stream_sites

    sites = stream_sites(smollm2.model)
    assert sites is not None and len(sites.blocks) == 30 and sites.tie_last
    assert logits_head(smollm2.model) is not None


def test_sampled_run_reports_the_raw_distribution(smollm2: LoadedModel) -> None:
    """Entropy describes the model's raw distribution, not the top-k-truncated one it sampled from."""
    settings = smol_settings(temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=48, seed=3)
    pipeline = Pipeline(settings)
    pipeline.use_model(smollm2)
    run = pipeline.capture(["Write a short poem about an unusual animal."])
    report = pipeline.build(run)[0]
    entropies = np.array([s.logits_summary.entropy for s in report.timeline], dtype=float)
    assert np.nanmax(entropies) > math.log2(50), "some step should exceed log2(top_k) bits"
    sampled = np.array([s.logits_summary.sampling_entropy for s in report.timeline], dtype=float)
    assert np.nanmax(sampled) <= math.log2(50) + 1e-3, "the sampled distribution has at most 50 tokens"
    generation = report.run_config.generation
    assert (generation.do_sample, generation.temperature, generation.top_k, generation.top_p) == (
        True,
        0.8,
        50,
        0.95,
    )
    assert report.model.num_layers == 30 and len(report.timeline[0].layers) == 30


def test_batch_of_eight_matches_single_runs(smollm2: LoadedModel) -> None:
    prompts = [
        "Hi.",
        "What is the capital of France?",
        "List three primary colors.",
        "Explain photosynthesis to a ten year old in simple words, please.",
        "2+2=",
        "Write the first line of a story about a lighthouse keeper who finds a message in a bottle.",
        "Translate 'good morning' to Spanish.",
        "Name a planet.",
    ]
    settings = smol_settings(temperature=0.0, max_new_tokens=10, batch_size=8)
    batched = capture_prompts(smollm2, prompts, settings).sequences
    assert len(batched) == 8 and {s.batch_size for s in batched} == {8}
    for prompt, seq in zip(prompts, batched, strict=True):
        single = capture_prompts(smollm2, [prompt], settings).sequences[0]
        assert seq.generated_token_ids == single.generated_token_ids, prompt
        for name in ("entropy", "top_k_margin", "topk_mass"):
            np.testing.assert_allclose(
                getattr(seq.logits, name), getattr(single.logits, name), rtol=1e-3, atol=1e-5
            )
        np.testing.assert_allclose(seq.chosen.surprisal, single.chosen.surprisal, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(present(seq.hidden).l2_norm, present(single.hidden).l2_norm, rtol=1e-3)
        np.testing.assert_allclose(
            present(seq.attention).entropy_mean, present(single.attention).entropy_mean, rtol=1e-3, atol=1e-5
        )


def test_prompt_surprisals_match_teacher_forcing_on_smollm2(smollm2: LoadedModel) -> None:
    import torch

    settings = smol_settings(temperature=0.0, max_new_tokens=2)
    seq = capture_prompts(
        smollm2, ["The capital of France is Paris. The capital of Italy is"], settings
    ).sequences[0]
    ids = seq.prompt.token_ids
    with torch.no_grad():
        logits = smollm2.model(torch.tensor([ids])).logits[0].double()
    expected = (
        -torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])] / math.log(2)
    ).numpy()
    assert seq.prompt_telemetry is not None
    np.testing.assert_allclose(present(seq.prompt_telemetry.surprisals), expected, atol=1e-4, rtol=1e-4)
    assert present(seq.prompt_telemetry.basin_scores).shape == (30, 9)


def test_gguf_parsed_once_loads_what_transformers_loads(smollm2: LoadedModel) -> None:
    """CoreVital's load (one GGUF parse shared by config, tokenizer and weights) changes nothing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf_file = smollm2.resolved.location, smollm2.resolved.gguf_file
    plain = AutoModelForCausalLM.from_pretrained(location, gguf_file=gguf_file, dtype=torch.float32)
    ours = dict(smollm2.model.named_parameters())
    theirs = dict(plain.named_parameters())
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    text = "The sky is blue because of Rayleigh scattering. 日本語 too."
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
    assert smollm2.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
