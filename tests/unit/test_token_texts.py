"""The texts of the tokens a report names: decoded once per tokenizer and id."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from corevital.capture.sequences import token_texts


class CountingTokenizer:
    def __init__(self) -> None:
        self.decoded: list[int] = []

    def decode(self, ids: list[int]) -> str:
        self.decoded.extend(ids)
        return f"<{ids[0]}>"


def _capture(generated: list[int], topk: list[list[int]]) -> Any:
    return SimpleNamespace(generated_token_ids=generated, logits=SimpleNamespace(topk_ids=np.array(topk)))


def test_each_id_is_decoded_once_per_tokenizer() -> None:
    tokenizer = CountingTokenizer()
    first = token_texts(tokenizer, _capture([5, 6], [[5, 9], [6, 9]]))
    assert first == {5: "<5>", 6: "<6>", 9: "<9>"}
    assert sorted(tokenizer.decoded) == [5, 6, 9]
    second = token_texts(tokenizer, _capture([6, 7], [[6, 5], [7, 8]]))
    assert second == {5: "<5>", 6: "<6>", 7: "<7>", 8: "<8>"}
    assert sorted(tokenizer.decoded) == [5, 6, 7, 8, 9]  # only the new ids
    other = CountingTokenizer()  # another tokenizer decodes for itself
    assert token_texts(other, _capture([5], [[5]])) == {5: "<5>"} and other.decoded == [5]


def test_a_tokenizer_without_weak_references_still_gets_its_texts() -> None:
    class Slotted:
        __slots__ = ("calls",)

        def __init__(self) -> None:
            self.calls = 0

        def decode(self, ids: list[int]) -> str:
            self.calls += 1
            return str(ids[0])

    tokenizer = Slotted()
    assert token_texts(tokenizer, _capture([1], [[1, 2]])) == {1: "1", 2: "2"}
    assert token_texts(tokenizer, _capture([1], [[1, 2]])) == {1: "1", 2: "2"}
    assert tokenizer.calls == 4
