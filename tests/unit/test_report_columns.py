"""Column-wise building of report models and numbers: the same results as the slow, obvious way."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from corevital.report.columns import construct_rows
from corevital.report.numbers import SIGNIFICANT_DIGITS, as_list
from corevital.report.schema import (
    Anomalies,
    AttentionSummary,
    HiddenSummary,
    LayerSummary,
    LogitsSummary,
    PromptAttentionLayer,
    SparseAttentionHead,
    TimelineStep,
    TokenInfo,
    TopKProb,
)
from corevital.report.schema_base import ReportModel


def _rows(cls: type[ReportModel]) -> list[dict[str, Any]]:
    """Two rows of plausible values for every field of ``cls``."""
    samples: dict[str, list[Any]] = {
        "hidden_summary": [HiddenSummary(mean=0.5), HiddenSummary(sketch=[0.25, None])],
        "attention_summary": [AttentionSummary(), AttentionSummary(entropy_mean=1.5)],
        "cross_attention": [AttentionSummary(entropy_max=2.0), None],
        "anomalies": [Anomalies(has_nan=True), None],
        "token": [TokenInfo(token_id=1, token_text="a"), TokenInfo(token_id=2, token_text="b")],
        "logits_summary": [LogitsSummary(entropy=1.0), LogitsSummary()],
        "topk_probs": [[TopKProb(token_id=3, token_text="c", prob=0.5)], []],
        "layers": [[LayerSummary(layer_index=0)], []],
        "heads": [[SparseAttentionHead(query_indices=[1], key_indices=[0], weights=[0.5])], []],
        "extensions": [{}, {"note": 1}],
    }
    rows: list[dict[str, Any]] = [{}, {}]
    for name, field in cls.model_fields.items():
        values = samples.get(name)
        if values is None:
            kind = str(field.annotation)
            if "list" in kind:
                values = [[0.125, None], None] if "None" in kind else [[1, 2], []]
            elif "bool" in kind:
                values = [True, None] if "None" in kind else [True, False]
            elif "int" in kind:
                values = [3, None] if "None" in kind else [3, 4]
            elif "str" in kind:
                values = ["x", "y"]
            else:
                values = [0.25, None]
        rows[0][name], rows[1][name] = values
    return rows


@pytest.mark.parametrize(
    "cls",
    [
        TokenInfo,
        TopKProb,
        LogitsSummary,
        HiddenSummary,
        AttentionSummary,
        LayerSummary,
        TimelineStep,
        SparseAttentionHead,
        PromptAttentionLayer,
    ],
)
def test_construct_rows_builds_what_model_construct_builds(cls: type[ReportModel]) -> None:
    rows = _rows(cls)
    columns = {name: [row[name] for row in rows] for name in cls.model_fields}
    built = construct_rows(cls, columns)
    for row, model in zip(rows, built, strict=True):
        expected = cls.model_construct(**row)
        assert type(model) is cls
        assert model == expected
        assert list(model.__dict__) == list(expected.__dict__)
        assert model.model_fields_set == expected.model_fields_set
        assert model.__pydantic_extra__ is expected.__pydantic_extra__ is None  # extra="forbid"
        assert model.__pydantic_private__ is expected.__pydantic_private__
        assert model.model_dump_json(exclude_none=True) == expected.model_dump_json(exclude_none=True)
    first, second = built
    assert first.model_fields_set is not second.model_fields_set  # each model has its own
    first.model_fields_set.discard(next(iter(cls.model_fields)))
    assert second.model_fields_set == set(cls.model_fields)
    with pytest.raises(ValueError, match="extra_note"):
        first.extra_note = "undeclared"  # type: ignore[attr-defined]


def test_construct_rows_wants_every_field_in_order() -> None:
    with pytest.raises(ValueError, match="fields of TopKProb"):
        construct_rows(TopKProb, {"token_text": ["a"], "token_id": [1], "prob": [0.5]})
    with pytest.raises(ValueError, match="fields of TopKProb"):
        construct_rows(TopKProb, {"token_id": [1], "token_text": ["a"]})
    with pytest.raises(ValueError):  # columns of different lengths
        construct_rows(TopKProb, {"token_id": [1, 2], "token_text": ["a"], "prob": [0.5]})


def _slow_round(x: float) -> float | None:
    if not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    digits = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(x)))
    scale = 10.0**digits
    return float(np.round(x * scale) / scale)


@pytest.mark.parametrize(
    "values",
    [
        np.array([1.23456789, -0.000123456789, 0.0, 1e30, -7.5e-12], dtype=np.float64),
        np.array([[1.5, np.nan], [np.inf, -np.inf]], dtype=np.float32),
        np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
        np.array([[np.nan, 2.0], [3.0, 4.0]])[None],
        np.zeros((0, 3)),
    ],
)
def test_as_list_rounds_each_value_and_writes_none_for_non_finite(values: np.ndarray) -> None:
    def slow(a: np.ndarray) -> Any:
        return [slow(x) for x in a] if a.ndim > 1 else [_slow_round(float(x)) for x in a]

    result = as_list(values)
    assert result == slow(np.asarray(values, dtype=np.float64))
    flat: list[Any] = list(np.asarray(result, dtype=object).reshape(-1)) if values.size else []
    assert all(x is None or type(x) is float for x in flat)


def test_as_list_of_a_scalar_is_a_one_element_list() -> None:
    assert as_list(np.float32(0.1)) == [0.1]
    assert as_list(float("nan")) == [None]
