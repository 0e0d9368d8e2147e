"""The tiny tests' tokenizer: a 320-entry byte-level BPE built in memory, identical on every machine.

Token ids are fixed: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, then the 256 byte-level
symbols and a few hand-written English merges. :mod:`tests.support.tiny_models` re-exports every
public name.
"""

from __future__ import annotations

from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<s>", "</s>", "<unk>"
PAD_TOKEN_ID, BOS_TOKEN_ID, EOS_TOKEN_ID, UNK_TOKEN_ID = 0, 1, 2, 3
_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

# Byte-level BPE merges, applied in this order ("Ġ" is the byte-level symbol for a space). Hand-written
# rather than trained so the vocabulary is identical on every machine and tokenizers version.
_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġ", "a"),
    ("i", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("r", "e"),
    ("a", "n"),
    ("Ġ", "w"),
    ("Ġ", "o"),
    ("e", "n"),
    ("a", "t"),
    ("o", "r"),
    ("Ġ", "c"),
    ("e", "s"),
    ("i", "s"),
    ("Ġ", "b"),
    ("Ġ", "f"),
    ("i", "t"),
    ("e", "d"),
    ("Ġ", "p"),
    ("a", "r"),
    ("Ġ", "i"),
    ("in", "g"),
    ("Ġ", "m"),
    ("o", "u"),
    ("Ġ", "d"),
    ("l", "l"),
    ("Ġ", "h"),
    ("Ġ", "in"),
    ("Ġ", "l"),
    ("a", "l"),
    ("Ġo", "f"),
    ("Ġt", "o"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("Ġ", "is"),
    ("Ġ", "e"),
    ("Ġ", "n"),
    ("l", "e"),
    ("Ġ", "y"),
    ("Ġ", "g"),
    ("Ġ", "T"),
    ("Ġw", "h"),
    ("Ġ", "re"),
    ("s", "t"),
    ("i", "c"),
    ("i", "on"),
    ("Ġs", "t"),
    ("o", "w"),
    ("Ġ", "A"),
    ("Ġ", "it"),
    ("Ġ", "I"),
    ("ĠT", "he"),
    ("e", "x"),
    ("Ġs", "k"),
    ("Ġsk", "y"),
    ("u", "e"),
)

VOCAB_SIZE: int = len(_SPECIAL_TOKENS) + 256 + len(_MERGES)  # 320
MAX_POSITIONS: int = 512

# A minimal Zephyr/Phi-3 style template. Role markers are plain text (no extra vocabulary entries), so
# the vocabulary is the same with and without a template.
CHAT_TEMPLATE: str = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table (the ByteLevel alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS)}
    byte_symbols = _bytes_to_unicode()
    for b in range(256):
        vocab[byte_symbols[b]] = len(vocab)
    for left, right in _MERGES:
        if left not in vocab or right not in vocab:
            raise ValueError(f"merge ({left!r}, {right!r}) uses a symbol that is not in the vocabulary yet")
        merged = left + right
        if merged in vocab:
            raise ValueError(f"merge ({left!r}, {right!r}) produces a duplicate symbol {merged!r}")
        vocab[merged] = len(vocab)
    assert len(vocab) == VOCAB_SIZE
    return vocab, list(_MERGES)


def _build_backend() -> Tokenizer:
    vocab, merges = _vocab_and_merges()
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK_TOKEN, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # The special tokens already have ids 0..3 in the vocabulary; registering them as added tokens
    # makes "<s>"/"</s>" in text (e.g. from the chat template) map to those single ids.
    backend.add_special_tokens(
        [AddedToken(tok, special=True, normalized=False, single_word=False) for tok in _SPECIAL_TOKENS]
    )
    # Llama-style: prepend <s> to every sequence (pairs: "<s> A </s> B").
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B:1",
                special_tokens=[(BOS_TOKEN, BOS_TOKEN_ID), (EOS_TOKEN, EOS_TOKEN_ID)],
            ),
        ]
    )
    return backend


def build_tokenizer(
    *, padding_side: Literal["left", "right"] = "left", chat_template: bool = False
) -> PreTrainedTokenizerFast:
    """A 320-entry byte-level BPE tokenizer, built offline and identical on every call.

    Byte-level, so any text (ASCII or not) round-trips:
    ``tok.decode(tok(text).input_ids, skip_special_tokens=True) == text``. Encoding prepends ``<s>``.
    ``padding_side`` defaults to ``"left"`` (what batched decoder-only generation needs).
    ``chat_template=True`` attaches :data:`CHAT_TEMPLATE` for chat-template code paths.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=_build_backend(),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side=padding_side,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
