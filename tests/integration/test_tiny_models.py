"""The offline tiny-model helpers in tests/support/tiny_models.py build, generate, save and load."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tests.support import tiny_models as tm

PROMPTS = ["Hello there", "Why is the sky blue? Explain it in two short sentences."]
ROUND_TRIP_TEXTS = [
    "Why is the sky blue? Explain in two sentences.",
    "The quick brown fox jumps over the lazy dog 0123456789 times!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\n\nlines",
    "Punctuation: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "don't I'm we'll THEY'RE",
    "x",
    "",
]
MAX_NEW_TOKENS = 16


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return tm.build_tokenizer()


@contextmanager
def transformers_warnings() -> Iterator[list[logging.LogRecord]]:
    """Collect WARNING+ records logged by transformers (which does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _layer_counts(arch: str, config: PretrainedConfig) -> tuple[int, int | None]:
    """(decoder layers, encoder layers or None) read from the architecture's own config fields."""
    if arch == "gpt2":
        return config.n_layer, None
    if arch == "t5":
        return config.num_decoder_layers, config.num_layers
    if arch == "bart":
        return config.decoder_layers, config.encoder_layers
    return config.num_hidden_layers, None


def _self_attention_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)  # 5.24: `cache`; `past_key_values` is a deprecated alias
    if cache is None:
        cache = output.past_key_values
    return getattr(cache, "self_attention_cache", cache)


def _state_dicts_equal(a: PreTrainedModel, b: PreTrainedModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def test_tokenizer_vocabulary_and_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    assert len(tokenizer) == tokenizer.vocab_size == tm.VOCAB_SIZE == 320
    assert tokenizer.model_max_length >= 512
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
    )
    assert (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ) == (
        tm.PAD_TOKEN_ID,
        tm.BOS_TOKEN_ID,
        tm.EOS_TOKEN_ID,
        tm.UNK_TOKEN_ID,
    )
    assert tokenizer.padding_side == "left"
    assert tm.build_tokenizer(padding_side="right").padding_side == "right"
    assert tokenizer.chat_template is None
    # Deterministic: a second build is identical.
    assert tm.build_tokenizer().get_vocab() == tokenizer.get_vocab()


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trip(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    ids = tokenizer(text).input_ids
    assert ids[0] == tm.BOS_TOKEN_ID
    assert tm.UNK_TOKEN_ID not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_merges_make_words_shorter_than_characters(tokenizer: PreTrainedTokenizerBase) -> None:
    assert len(tokenizer(" the sky is blue", add_special_tokens=False).input_ids) < len(" the sky is blue")


def test_tokenizer_left_pads_a_batch(tokenizer: PreTrainedTokenizerBase) -> None:
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    short, long_ = batch.input_ids
    mask = batch.attention_mask
    n_pad = int((mask[0] == 0).sum())
    assert n_pad > 0 and int((mask[1] == 0).sum()) == 0
    assert short[:n_pad].tolist() == [tm.PAD_TOKEN_ID] * n_pad
    assert short[n_pad] == tm.BOS_TOKEN_ID and long_[0] == tm.BOS_TOKEN_ID


def test_tokenizer_chat_template() -> None:
    tok = tm.build_tokenizer(chat_template=True)
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<s><|user|>\nWhy is the sky blue?</s>\n<|assistant|>\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == tm.BOS_TOKEN_ID and ids.count(tm.BOS_TOKEN_ID) == 1
    assert tm.EOS_TOKEN_ID in ids
    assert len(tok) == tm.VOCAB_SIZE  # the template adds no vocabulary


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


GROUPED_QUERY = ("llama", "mistral", "qwen2", "mixtral")  # fewer key-value heads than query heads


@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_forward_pass_shows_the_expected_shape(arch: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """What a forward pass returns has the structure tm.EXPECTED promises the other tests."""
    shape = tm.EXPECTED[arch]
    model = tm.build_model(arch)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    prompt_len = batch.input_ids.shape[1]
    kwargs: dict[str, Any] = {"output_attentions": True, "output_hidden_states": True, "use_cache": True}
    encoder_decoder = shape.num_encoder_layers is not None
    assert model.config.is_encoder_decoder is encoder_decoder is tm.IS_ENCODER_DECODER[arch]
    if encoder_decoder:
        kwargs["decoder_input_ids"] = torch.full((2, 3), model.config.decoder_start_token_id)
    if shape.is_moe:
        kwargs["output_router_logits"] = True
    with torch.no_grad():
        out: Any = model(**batch, **kwargs)

    steps = 3 if encoder_decoder else prompt_len
    assert out.logits.shape == (2, steps, tm.VOCAB_SIZE)
    self_attention = out.decoder_attentions if encoder_decoder else out.attentions
    hidden = out.decoder_hidden_states if encoder_decoder else out.hidden_states
    assert len(self_attention) == shape.num_layers
    assert all(a.shape == (2, shape.num_heads, steps, steps) for a in self_attention)
    assert len(hidden) == shape.num_layers + 1  # embeddings + one per layer
    assert all(h.shape == (2, steps, shape.hidden_size) for h in hidden)
    if encoder_decoder:
        assert len(out.encoder_attentions) == shape.num_encoder_layers
        assert all(a.shape == (2, shape.num_heads, prompt_len, prompt_len) for a in out.encoder_attentions)
        assert len(out.cross_attentions) == shape.num_layers
        assert all(a.shape == (2, shape.num_heads, steps, prompt_len) for a in out.cross_attentions)

    keys = _self_attention_cache(out).layers[0].keys
    assert keys.shape == (2, shape.num_kv_heads, steps, shape.head_dim)
    assert (shape.num_kv_heads < shape.num_heads) is (arch in GROUPED_QUERY)

    router = getattr(out, "router_logits", None)
    if shape.is_moe:
        assert router is not None and len(router) == shape.num_layers
        assert router[0].shape == (2 * steps, shape.num_experts)
        assert {layer.mlp.top_k for layer in model.model.layers} == {shape.num_experts_per_tok}
    else:
        assert router is None


@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_a_512_token_prompt_fits(arch: str) -> None:
    """Prompts as long as the tests use (up to 512 tokens) run: the position limits are not tiny."""
    model = tm.build_model(arch)
    prompt = torch.full((1, 512), tm.BOS_TOKEN_ID + 40)
    kwargs: dict[str, Any] = {}
    if tm.IS_ENCODER_DECODER[arch]:
        kwargs["decoder_input_ids"] = torch.full((1, 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        logits = model(input_ids=prompt, **kwargs).logits
    assert logits.shape[-1] == tm.VOCAB_SIZE and bool(torch.isfinite(logits).all())


def test_build_config_overrides() -> None:
    # GPT-2 aliases go through attribute_map, so the generic name works too.
    assert tm.build_config("gpt2", num_hidden_layers=3).n_layer == 3
    assert tm.build_config("llama", num_key_value_heads=4).num_key_value_heads == 4
    assert tm.build_config("mistral", attn_implementation="sdpa")._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        tm.build_config("bloom")


# ---------------------------------------------------------------------------------------------
# Models: structure, generation, determinism, save/load
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_model_structure(arch: str) -> None:
    model = tm.build_model(arch)
    shape = tm.EXPECTED[arch]
    assert type(model).__name__ == tm.MODEL_CLASS_NAMES[arch]
    assert not model.training
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    gen = model.generation_config
    assert (gen.pad_token_id, gen.bos_token_id, gen.eos_token_id) == (
        tm.PAD_TOKEN_ID,
        tm.BOS_TOKEN_ID,
        tm.EOS_TOKEN_ID,
    )
    if tm.IS_ENCODER_DECODER[arch]:
        assert gen.decoder_start_token_id == model.config.decoder_start_token_id
        assert gen.forced_bos_token_id is None and gen.forced_eos_token_id is None
    embeddings: Any = model.get_input_embeddings()
    lm_head: Any = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    assert (lm_head.weight.data_ptr() == embeddings.weight.data_ptr()) is shape.tie_word_embeddings
    assert embeddings.weight.shape == (tm.VOCAB_SIZE, shape.hidden_size)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_greedy_generate_batch(
    arch: str, attn_implementation: str, tokenizer: PreTrainedTokenizerBase
) -> None:
    shape = tm.EXPECTED[arch]
    model = tm.build_model(arch, attn_implementation=attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    prompt_len = batch.input_ids.shape[1]
    with transformers_warnings() as warned, torch.no_grad():
        out: Any = model.generate(
            **batch,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
    assert [r.getMessage() for r in warned] == []

    sequences = out.sequences
    assert sequences.shape[0] == 2
    if shape.num_encoder_layers is not None:
        # T5 starts decoding from <pad>, BART from </s>, as their pretrained checkpoints do.
        start = {"t5": tm.PAD_TOKEN_ID, "bart": tm.EOS_TOKEN_ID}[arch]
        assert (sequences[:, 0] == start).all()
        steps = sequences.shape[1] - 1
        hidden = out.decoder_hidden_states
        assert len(out.encoder_hidden_states) == shape.num_encoder_layers + 1
        assert out.encoder_hidden_states[-1].shape == (2, prompt_len, shape.hidden_size)
    else:
        assert torch.equal(sequences[:, :prompt_len], batch.input_ids)
        steps = sequences.shape[1] - prompt_len
        hidden = out.hidden_states
    assert 1 <= steps <= MAX_NEW_TOKENS
    assert len(hidden) == steps
    assert all(len(step) == shape.num_layers + 1 for step in hidden)  # embeddings + one per layer
    assert hidden[-1][-1].shape[0] == 2 and hidden[-1][-1].shape[-1] == shape.hidden_size

    cache = _self_attention_cache(out)
    assert len(cache.layers) == shape.num_layers
    keys = cache.layers[0].keys
    assert keys.shape[0] == 2
    assert keys.shape[1] == shape.num_kv_heads
    assert keys.shape[-1] == shape.head_dim
    # Text decodes without error; random weights make it gibberish, which is fine.
    assert isinstance(tokenizer.batch_decode(sequences, skip_special_tokens=True)[0], str)


@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_generation_runs_past_the_first_step(arch: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """Default seed: greedy decoding does not stop on EOS at once, so per-step telemetry has steps."""
    model = tm.build_model(arch)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        sequences = model.generate(**batch, max_new_tokens=8, do_sample=False)
    offset = 1 if tm.IS_ENCODER_DECODER[arch] else batch.input_ids.shape[1]
    generated = sequences[:, offset:]
    assert generated.shape[1] == 8
    assert tm.EOS_TOKEN_ID not in generated.flatten().tolist()
    assert tm.PAD_TOKEN_ID not in generated.flatten().tolist()


@pytest.mark.parametrize("arch", tm.DECODER_ONLY_ARCHITECTURES)
def test_left_padding_matches_unpadded(arch: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """The padded row of a left-padded batch scores like the same prompt on its own."""
    model = tm.build_model(arch)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    single = tokenizer(PROMPTS[:1], return_tensors="pt")
    kwargs: dict[str, Any] = {
        "max_new_tokens": 3,
        "do_sample": False,
        "output_scores": True,
        "return_dict_in_generate": True,
    }
    with torch.no_grad():
        batched: Any = model.generate(**batch, **kwargs)
        alone: Any = model.generate(**single, **kwargs)
    torch.testing.assert_close(batched.scores[0][0], alone.scores[0][0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_build_is_deterministic(arch: str) -> None:
    rng_before = torch.get_rng_state()
    first = tm.build_model(arch, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG stream is untouched
    second = tm.build_model(arch, seed=0)
    other = tm.build_model(arch, seed=1)
    assert _state_dicts_equal(first, second)
    assert not _state_dicts_equal(first, other)


@pytest.mark.parametrize("arch", tm.ARCHITECTURES)
def test_save_and_load_round_trip(arch: str, tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    directory = tm.save_tiny_model(arch, tmp_path / arch)
    assert directory == tmp_path / arch
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in directory.iterdir()
    }

    config = AutoConfig.from_pretrained(directory)
    assert config.model_type == arch
    assert config.architectures == [tm.MODEL_CLASS_NAMES[arch]]

    auto_cls = AutoModelForSeq2SeqLM if tm.IS_ENCODER_DECODER[arch] else AutoModelForCausalLM
    loaded = auto_cls.from_pretrained(directory, attn_implementation="eager")
    loaded.eval()
    reference = tm.build_model(arch)
    assert type(loaded) is type(reference)
    assert _state_dicts_equal(loaded, reference)
    assert _layer_counts(arch, loaded.config) == _layer_counts(arch, reference.config)
    assert loaded.generation_config.pad_token_id == tm.PAD_TOKEN_ID
    assert loaded.generation_config.eos_token_id == tm.EOS_TOKEN_ID
    assert (
        loaded.generation_config.decoder_start_token_id == reference.generation_config.decoder_start_token_id
    )

    loaded_tok = AutoTokenizer.from_pretrained(directory)
    assert len(loaded_tok) == tm.VOCAB_SIZE
    assert loaded_tok.padding_side == "left"
    assert loaded_tok.pad_token_id == tm.PAD_TOKEN_ID and loaded_tok.eos_token_id == tm.EOS_TOKEN_ID
    for text in ROUND_TRIP_TEXTS:
        assert loaded_tok(text).input_ids == tokenizer(text).input_ids

    batch = loaded_tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = loaded.generate(**batch, max_new_tokens=4, do_sample=False)
        want = reference.generate(**batch, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, want)


def test_saved_chat_template_survives_reload(tmp_path: Path) -> None:
    directory = tm.save_tiny_model("llama", tmp_path / "chat", chat_template=True)
    assert AutoTokenizer.from_pretrained(directory).chat_template == tm.CHAT_TEMPLATE
