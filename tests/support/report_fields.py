"""The report fields that the capture tests compare between two ways of capturing one generation
(compiled and eager steps, one cache layout and another, the attention fast path and the eager
reference)."""

from __future__ import annotations

# per step: the logits summary
LOGIT_FIELDS: tuple[str, ...] = ("entropy", "surprisal", "top_k_margin", "topk_mass")
# per step and layer: the attention summary
ATTENTION_FIELDS: tuple[str, ...] = (
    "entropy_mean",
    "entropy_min",
    "entropy_max",
    "entropy_mean_normalized",
    "concentration_max",
    "concentration_min",
    "sink_mass_mean",
    "prev_token_mass_mean",
)

__all__ = ["ATTENTION_FIELDS", "LOGIT_FIELDS"]
