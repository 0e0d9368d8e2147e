"""A GGUF model end to end, on a file the test writes itself (tests/support/tiny_gguf.py).

The differential reference is the tiny random Llama the file was written from, loaded as a plain
transformers directory: the model transformers and CoreVital read back from the GGUF file has the
same weights (exactly, for F32; as the ``gguf`` package's own de-quantiser gives them, for Q8_0),
the same logits and the same tokens, and a CoreVital run over it writes the same report as a run
over the source model (within 1e-4), apart from the fields that name the source or time the run.

``CV_TEST_DEVICE=cuda`` runs the capture on a GPU (``--device cuda``), as test_capture_caches does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from corevital.capture.loading import ModelSpec, load_model
from corevital.pipeline import Pipeline
from corevital.report.schema import Report
from tests.integration.conftest import tiny_settings
from tests.support.tiny_gguf import gguf_tensors, llama_cpp_permute, write_tiny_gguf
from tests.support.tiny_models import build_family_model, build_tokenizer, save_family_model

TEST_DEVICE = os.environ.get("CV_TEST_DEVICE", "cpu")
PROMPTS = ["The quick brown fox jumps over the lazy dog", "Hi there"]
TEXTS = [*PROMPTS, "  leading spaces, tabs\tand\nnewlines", "ünïcödé 漢字 🙂", "<s>special</s><pad>"]
NEW_TOKENS = 5

# Report fields that differ between the GGUF run and the source run by design: the model's name and
# source, the prompt hash (over the model name and the prompt), and wall-clock timings.
_NAMING: set[tuple[str, ...]] = {("model", "hf_id"), ("model", "tokenizer_hf_id"), ("model", "source")}
_NAMING.add(("extensions", "fingerprint", "prompt_hash"))
_TIMING = {"elapsed_ms", "generation_ms", "inter_token_ms", "started_at_utc", "tokens_per_second", "ttft_ms"}


@pytest.fixture
def gguf_dir(tmp_path: Path) -> Path:
    write_tiny_gguf(tmp_path / "gguf" / "tiny-llama.gguf")
    return tmp_path / "gguf"


@pytest.fixture
def no_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The user cache directory points into tmp_path; the test checks nothing was written there."""
    home = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    yield home
    assert not home.exists() or not any(home.rglob("*")), "a test wrote into the user cache"


def _logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(torch.tensor([ids])).logits[0]
    return logits


def test_the_written_file_reads_back_as_its_source_model(gguf_dir: Path) -> None:
    """transformers' own GGUF loader: same weights, logits, tokens and special tokens."""
    source, source_tokenizer = build_family_model("llama", seed=0), build_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="tiny-llama.gguf", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="tiny-llama.gguf")
    assert (gguf_dir / "tiny-llama.gguf").stat().st_size < 600_000
    want = source.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in got.items():  # the q/k permutation undone exactly
        assert torch.equal(tensor, want[name]), name
    model.eval()  # type: ignore[no-untyped-call]  # transformers' untyped eval()
    for text in TEXTS:
        ids = source_tokenizer(text).input_ids
        assert tokenizer(text).input_ids == ids, text
        assert tokenizer.decode(ids) == source_tokenizer.decode(ids)
        torch.testing.assert_close(_logits(model, ids), _logits(source, ids), rtol=1e-5, atol=1e-5)
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tokenizer, name) == getattr(source_tokenizer, name), name
    assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)
    assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings


def test_a_q8_0_file_is_dequantised_as_the_gguf_package_dequantises_it(tmp_path: Path) -> None:
    """The 8-bit file: transformers' de-quantiser against the gguf package's (an independent one)."""
    import gguf

    path = write_tiny_gguf(tmp_path / "tiny-llama-q8_0.gguf", quantized=True)
    source = build_family_model("llama", seed=0)
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["output.weight"] == gguf.GGMLQuantizationType.F32
    expected = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    loaded = load_model(ModelSpec(model=str(tmp_path), gguf_file=path.name, device="cpu", cache_dir="off"))
    ours = gguf_tensors(loaded.model)  # back into llama.cpp's names and layout
    assert ours.keys() == expected.keys()
    for name, array in ours.items():
        np.testing.assert_array_equal(array, expected[name].reshape(array.shape), err_msg=name)
    # 8-bit rounding: close to the source model, not equal to it.
    ids = build_tokenizer()(PROMPTS[0]).input_ids
    difference = (_logits(loaded.model, ids) - _logits(source, ids)).abs().max().item()
    assert 0 < difference < 2e-2


def test_the_permutation_is_llama_cpps() -> None:
    """Per head, llama.cpp's rows interleave transformers' two rotary halves: (0, d/2, 1, d/2+1, ...)."""
    rows = np.arange(8, dtype=np.float32)[:, None]  # one head of dimension 8
    permuted = llama_cpp_permute(rows, 1)
    assert permuted[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_load_model_converts_once_and_reads_the_converted_copy(gguf_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "converted"
    spec = ModelSpec(model=str(gguf_dir), gguf_file="tiny-llama.gguf", device="cpu", cache_dir=str(cache))
    first = load_model(spec)
    (entry,) = (cache / "gguf").iterdir()
    assert entry.name.startswith("tiny-llama-")
    again = load_model(spec)  # from the entry (the GGUF file is not parsed again)
    reference = build_family_model("llama", seed=0).state_dict()
    for loaded in (first, again):
        assert loaded.resolved.source == "gguf" and loaded.resolved.gguf_file == "tiny-llama.gguf"
        assert loaded.capabilities.num_layers == 2 and loaded.capabilities.num_key_value_heads == 2
        state = loaded.model.state_dict()
        assert state.keys() == reference.keys()
        for name, tensor in state.items():
            assert torch.equal(tensor, reference[name]), name
    ids = build_tokenizer()(PROMPTS).input_ids
    assert first.tokenizer(PROMPTS).input_ids == again.tokenizer(PROMPTS).input_ids == ids


def _reports(**settings: Any) -> list[Report]:
    pipeline = Pipeline(
        tiny_settings(device=TEST_DEVICE, max_new_tokens=NEW_TOKENS, ignore_eos=True, **settings),
        clock=lambda: "2026-01-01T00:00:00Z",
        new_id=lambda: "trace",
    )
    with pipeline:
        return pipeline.build(pipeline.capture(PROMPTS))


def _compare(got: Any, want: Any, path: tuple[str, ...], differences: list[str]) -> None:
    """Every field equal (numbers within 1e-4 absolute or relative), but naming and timing fields."""
    if path in _NAMING or (path and path[-1] in _TIMING):
        return
    where = ".".join(path)
    if isinstance(want, dict) and isinstance(got, dict):
        if got.keys() != want.keys():
            differences.append(f"{where}: keys {sorted(got.keys() ^ want.keys())}")
        for key in got.keys() & want.keys():
            _compare(got[key], want[key], (*path, key), differences)
    elif isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            differences.append(f"{where}: {len(got)} items, not {len(want)}")
        for index, (x, y) in enumerate(zip(got, want, strict=False)):
            _compare(x, y, (*path, str(index)), differences)
    elif isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        if not np.isclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True):
            differences.append(f"{where}: {got} != {want}")
    elif got != want:
        differences.append(f"{where}: {got!r} != {want!r}")


def test_a_run_over_the_gguf_file_reports_what_a_run_over_its_source_reports(
    gguf_dir: Path, tmp_path: Path, no_user_cache: Path
) -> None:
    source_dir = save_family_model("llama", tmp_path / "source", seed=0)
    want = _reports(model=str(source_dir))
    got = _reports(model=str(gguf_dir), gguf_file="tiny-llama.gguf", cache_dir=str(tmp_path / "converted"))
    cached = _reports(model=str(gguf_dir), gguf_file="tiny-llama.gguf", cache_dir=str(tmp_path / "converted"))
    off = _reports(model=str(gguf_dir), gguf_file="tiny-llama.gguf", cache_dir="off")
    assert len(want) == len(PROMPTS)
    for reports in (got, cached, off):
        assert len(reports) == len(want)
        for report, reference in zip(reports, want, strict=True):
            assert report.model.source == "gguf" and reference.model.source == "local"
            assert report.model.hf_id == str(gguf_dir) and report.model.device == TEST_DEVICE
            assert report.model.dtype == "float32" and not report.model.quantization.enabled
            assert report.generated.num_tokens == NEW_TOKENS and report.timeline
            assert all(step.layers and len(step.layers) == 2 for step in report.timeline)
            assert report.prompt_analysis is not None
            differences: list[str] = []
            _compare(report.model_dump(mode="json"), reference.model_dump(mode="json"), (), differences)
            assert not differences, differences[:20]
    assert [p.name for p in (tmp_path / "converted" / "gguf").iterdir()][0].startswith("tiny-llama-")


def test_a_token_the_model_has_no_embedding_for_is_refused_before_generating(gguf_dir: Path) -> None:
    """transformers gives a GGUF ``gpt2`` vocabulary without ``<|endoftext|>`` that token as one past
    the model's embeddings; a prompt holding it is an input error naming the token, not an
    IndexError in the middle of generation."""
    from corevital.capture.runner import check_prompts
    from corevital.errors import InputError

    loaded = load_model(
        ModelSpec(model=str(gguf_dir), gguf_file="tiny-llama.gguf", device="cpu", cache_dir="off")
    )
    rows = loaded.model.get_input_embeddings().num_embeddings
    assert loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>") == rows  # the extra token
    settings = tiny_settings(max_new_tokens=NEW_TOKENS, chat_template="off")
    check_prompts(loaded, PROMPTS, settings)  # ordinary prompts pass
    with pytest.raises(InputError, match=r"prompt 2 of 2: token '<\|endoftext\|>' \(id \d+\) has no row"):
        check_prompts(loaded, [PROMPTS[0], "Hi <|endoftext|>"], settings)
