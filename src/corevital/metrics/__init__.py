"""Metrics: pure tensor-to-tensor reductions of one step, on the model's device.

Logits, hidden-state and attention statistics as defined in ``docs/metrics.md`` §1-3, batched
over rows (sequences or query positions), layers and heads, with no Python loop over layers or
heads and no per-value host transfer. :mod:`corevital.metrics.transfer` moves a whole step to the
host in one copy.
"""

from corevital.metrics.attention import summarize_attention
from corevital.metrics.hidden import make_sketch_matrix, summarize_hidden
from corevital.metrics.logits import (
    sampling_distribution_stats,
    summarize_chosen,
    summarize_logits,
    token_surprisal,
)
from corevital.metrics.transfer import to_host, to_host_many
from corevital.metrics.types import AttentionStats, ChosenTokenStats, HiddenStats, LogitStats

__all__ = [
    "AttentionStats",
    "ChosenTokenStats",
    "HiddenStats",
    "LogitStats",
    "make_sketch_matrix",
    "sampling_distribution_stats",
    "summarize_attention",
    "summarize_chosen",
    "summarize_hidden",
    "summarize_logits",
    "to_host",
    "to_host_many",
    "token_surprisal",
]
