"""The attention query API on hand-built sparse prompt attention with known answers (no torch)."""

from __future__ import annotations

import pytest

from corevital.report.attention_query import (
    AttentionQuery,
    BasinAnomaly,
    Connection,
    HeadRangeAttention,
)
from corevital.report.schema import PromptAnalysis, PromptAttentionLayer, SparseAttentionHead

TOKENS = ["<s>", "The", "cat", "sat", "down"]


def head(q: list[int], k: list[int], w: list[float | None]) -> SparseAttentionHead:
    return SparseAttentionHead(query_indices=q, key_indices=k, weights=w)


def analysis() -> PromptAnalysis:
    return PromptAnalysis(
        layers=[
            PromptAttentionLayer(
                heads=[
                    head([1, 2, 3, 3], [0, 1, 0, 2], [0.9, 0.6, 0.5, 0.4]),
                    head([2, 4], [2, 2], [0.7, 0.3]),
                ],
                basin_scores=[0.5, 0.2],
            ),
            PromptAttentionLayer(
                heads=[head([4, 4, 3], [1, 2, 1], [0.55, 0.25, 0.8]), head([], [], [])],
                basin_scores=[0.1, None],
            ),
        ],
        layer_transformations=[0.3],
        prompt_surprisals=[1.0, 2.0, 3.0, 4.0],
    )


@pytest.fixture
def query() -> AttentionQuery:
    return AttentionQuery(analysis(), TOKENS)


def triples(connections: list[Connection]) -> list[tuple[int, int, int, int, float]]:
    return [(c.layer, c.head, c.query_index, c.key_index, c.weight) for c in connections]


def test_to_token(query: AttentionQuery) -> None:
    assert triples(query.to_token(2)) == [
        (0, 1, 2, 2, 0.7),
        (0, 0, 3, 2, 0.4),
        (0, 1, 4, 2, 0.3),
        (1, 0, 4, 2, 0.25),
    ]
    assert triples(query.to_token(2, layer=0, head=1)) == [(0, 1, 2, 2, 0.7), (0, 1, 4, 2, 0.3)]
    assert triples(query.to_token(2, min_weight=0.35)) == [(0, 1, 2, 2, 0.7), (0, 0, 3, 2, 0.4)]
    assert query.to_token(4) == []
    first = query.to_token(0)[0]
    assert first == Connection(0, 0, 1, 0, 0.9, query_text="The", key_text="<s>")


def test_from_token(query: AttentionQuery) -> None:
    assert triples(query.from_token(3)) == [(1, 0, 3, 1, 0.8), (0, 0, 3, 0, 0.5), (0, 0, 3, 2, 0.4)]
    assert triples(query.from_token(3, layer=0)) == [(0, 0, 3, 0, 0.5), (0, 0, 3, 2, 0.4)]
    assert [(c.query_text, c.key_text) for c in query.from_token(4, layer=1)] == [
        ("down", "The"),
        ("down", "cat"),
    ]


def test_top_connections(query: AttentionQuery) -> None:
    assert triples(query.top_connections(3)) == [(0, 0, 1, 0, 0.9), (1, 0, 3, 1, 0.8), (0, 1, 2, 2, 0.7)]
    assert [c.weight for c in query.top_connections(layer=1)] == [0.8, 0.55, 0.25]
    assert [c.weight for c in query.top_connections(head=1)] == [0.7, 0.3]
    assert query.top_connections(layer=1, head=1) == []
    assert len(query.top_connections(100)) == len(query) == 9
    assert query.top_connections(0) == []


def test_heads_attending_to_range(query: AttentionQuery) -> None:
    assert query.heads_attending_to_range(2, 5) == [HeadRangeAttention(0, 1, 1.0, 1.0, 1.0, 2)]
    found = query.heads_attending_to_range(2, 5, min_mass=0.1)
    assert [(h.layer, h.head) for h in found] == [(0, 1), (0, 0), (1, 0)]
    assert [h.mass for h in found] == pytest.approx([1.0, 0.4 / 2.4, 0.25 / 1.6])
    assert [h.connections for h in found] == [2, 1, 1]
    context = query.heads_attending_to_range(0, 2)  # a "retrieved context" of the first two tokens
    assert [(h.layer, h.head) for h in context] == [(1, 0), (0, 0)]
    assert context[0].mass == pytest.approx(1.35 / 1.6) and context[1].mass == pytest.approx(2.0 / 2.4)
    assert query.heads_attending_to_range(0, 2, layer=0) == [context[1]]
    assert query.heads_attending_to_range(3, 3, min_mass=0.0) == []  # empty range: nothing lands there
    with pytest.raises(ValueError):
        query.heads_attending_to_range(3, 1)


def test_basin_anomalies(query: AttentionQuery) -> None:
    assert query.basin_anomalies() == [BasinAnomaly(1, 0, 0.1), BasinAnomaly(0, 1, 0.2)]
    assert [(a.layer, a.head) for a in query.basin_anomalies(0.6)] == [(1, 0), (0, 1), (0, 0)]
    assert query.basin_anomalies(0.05) == []


def test_without_texts_and_beyond_them() -> None:
    bare = AttentionQuery(analysis())
    assert all(c.query_text is None and c.key_text is None for c in bare.top_connections(100))
    short = AttentionQuery(analysis(), TOKENS[:2])
    c = short.top_connections(1)[0]
    assert (c.query_text, c.key_text) == ("The", "<s>")
    assert short.from_token(4)[0].query_text is None


def test_null_weights_and_missing_basin_scores_are_skipped() -> None:
    data = PromptAnalysis(
        layers=[PromptAttentionLayer(heads=[head([0, 1], [0, 0], [None, 0.5])], basin_scores=None)]
    )
    q = AttentionQuery(data)
    assert triples(q.top_connections()) == [(0, 0, 1, 0, 0.5)]
    assert q.basin_anomalies(1.0) == []


def test_round_trips_through_json(query: AttentionQuery) -> None:
    again = AttentionQuery(PromptAnalysis.model_validate_json(analysis().model_dump_json()), TOKENS)
    assert again.top_connections(100) == query.top_connections(100)
    assert again.basin_anomalies() == query.basin_anomalies()


def test_empty_analysis() -> None:
    q = AttentionQuery(PromptAnalysis())
    assert q.num_layers == 0 and len(q) == 0
    assert q.top_connections() == [] and q.to_token(0) == [] and q.basin_anomalies() == []
    assert q.heads_attending_to_range(0, 10, min_mass=0.0) == []


def test_bad_arguments(query: AttentionQuery) -> None:
    with pytest.raises(ValueError):
        query.to_token(-1)
    with pytest.raises(ValueError):
        query.from_token(0, layer=2)
    with pytest.raises(ValueError):
        query.top_connections(layer=0, head=2)
    with pytest.raises(ValueError):
        query.top_connections(-1)
    broken = PromptAnalysis(layers=[PromptAttentionLayer(heads=[head([0, 1], [0], [0.5, 0.5])])])
    with pytest.raises(ValueError, match="layer 0 head 0"):
        AttentionQuery(broken)
