"""Cutting a batch's prompt telemetry (host arrays) into one sequence's :class:`PromptTelemetry`."""

from __future__ import annotations

from typing import Any

import numpy as np

from corevital.capture.records import PromptLayerAttention, PromptTelemetry


def prompt_telemetry_for(
    device_stats: Any, layers: list[Any], b: int, prompt_tokens: int, span_shares: list[Any] | None = None
) -> PromptTelemetry:
    """Sequence ``b``'s prompt telemetry from the batch's host arrays (left padding removed)."""
    surprisals = None
    if device_stats.surprisals is not None:
        row = np.asarray(device_stats.surprisals[b])
        surprisals = row[len(row) - (prompt_tokens - 1) :] if prompt_tokens > 1 else row[:0]
    layers_of_b: list[PromptLayerAttention] = []
    basin = None
    if layers:
        for stats in layers:  # this sequence's [H, n] arrays (views)
            layers_of_b.append(
                PromptLayerAttention(
                    np.asarray(stats.query_index)[b],
                    np.asarray(stats.key_index)[b],
                    np.asarray(stats.weight)[b],
                    np.asarray(stats.count)[b],
                )
            )
        basin = np.stack([np.asarray(stats.basin_scores[b]) for stats in layers])
    return PromptTelemetry(
        surprisals=surprisals,
        layer_transformations=np.asarray(device_stats.layer_transformations)[:, b],
        layers=layers_of_b,
        basin_scores=basin,
        context_share=np.stack([np.asarray(share[b]) for share in span_shares]) if span_shares else None,
    )
