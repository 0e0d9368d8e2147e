"""From a capture to the analysis' inputs: a sequence's series as numpy arrays, and one capture of
several batches run one after another.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from corevital.analysis.signals import SequenceSignals

if TYPE_CHECKING:
    from corevital.capture.capabilities import ModelCapabilities
    from corevital.capture.records import RunCapture, SequenceCapture


def merged_capture(captures: list[RunCapture]) -> RunCapture:
    """One :class:`RunCapture` of several batches run one after another."""
    first = captures[0]
    if len(captures) == 1:
        return first
    return replace(
        first,
        sequences=[seq for run in captures for seq in run.sequences],
        elapsed_ms=sum(run.elapsed_ms for run in captures),
        tokenize_ms=sum(run.tokenize_ms for run in captures),
        step_ms=[ms for run in captures for ms in run.step_ms],
    )


def signals_from_capture(seq: SequenceCapture, *, model_id: str, caps: ModelCapabilities) -> SequenceSignals:
    """The analysis' view of a freshly captured sequence (the capture's series as numpy arrays)."""
    lg, chosen, h, a = seq.logits, seq.chosen, seq.hidden, seq.attention
    entropy = _floats(lg.entropy)
    return SequenceSignals(
        model_id=model_id,
        architecture=caps.architecture,
        model_type=caps.model_type,
        num_layers=caps.num_layers,
        num_heads=caps.num_attention_heads,
        prompt_text=seq.prompt.text,
        prompt_tokens=len(seq.prompt.token_ids),
        token_ids=np.asarray(seq.generated_token_ids, dtype=np.int64),
        token_texts=[seq.token_texts.get(t, "") for t in seq.generated_token_ids],
        entropy=entropy,
        surprisal=_floats(chosen.surprisal),
        top_k_margin=_floats(lg.top_k_margin),
        topk_mass=_floats(lg.topk_mass),
        perplexity=np.exp2(entropy),
        logits_nan=_bools(lg.has_nan),
        logits_inf=_bools(lg.has_inf),
        hidden_l2=None if h is None else _floats(h.l2_norm),
        hidden_max_abs=None if h is None else _floats(h.max_abs),
        hidden_nan=None if h is None else _bools(h.has_nan),
        hidden_inf=None if h is None else _bools(h.has_inf),
        last_layer_sketch=None if h is None or h.sketch is None else _floats(np.asarray(h.sketch)[:, -1, :]),
        hidden_update_ratio=_update_ratio(h),
        hidden_mlp_update_ratio=_update_ratio(h, "mlp_update_ratio"),
        attn_entropy_norm=None if a is None else _floats(a.entropy_mean_normalized),
        attn_collapse_rate=None if a is None else _floats(a.collapsed_head_rate),
        attn_concentration_max=None if a is None else _floats(a.concentration_max),
        attn_nan=None if a is None else _bools(a.has_nan),
        attn_inf=None if a is None else _bools(a.has_inf),
    )


def _update_ratio(hidden: Any, name: str = "update_ratio") -> np.ndarray | None:
    ratio = None if hidden is None else getattr(hidden, name, None)
    return None if ratio is None else _floats(ratio)


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _bools(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=bool)
