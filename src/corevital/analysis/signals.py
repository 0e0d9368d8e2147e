"""The numpy view of one generated sequence that every detector reads.

Built either from a fresh capture (:func:`signals_from_capture`) or from a stored report, ours or
one written by the original CoreVital (:func:`corevital.report.reanalysis.signals_from_report`),
so the same analysis runs on both. Missing values are NaN; per-layer arrays are ``[T, L]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SequenceSignals:
    model_id: str
    architecture: str
    model_type: str  # family used to choose the threshold profile (llama, gpt2, ...)
    num_layers: int
    num_heads: int
    prompt_text: str
    prompt_tokens: int
    token_ids: np.ndarray  # [T] int64
    token_texts: list[str]  # [T]
    # logits, [T]
    entropy: np.ndarray
    surprisal: np.ndarray
    top_k_margin: np.ndarray
    topk_mass: np.ndarray
    perplexity: np.ndarray
    logits_nan: np.ndarray  # bool
    logits_inf: np.ndarray  # bool
    # hidden states, [T, L] (None in summary capture of reports that did not keep layers)
    hidden_l2: np.ndarray | None = None
    hidden_max_abs: np.ndarray | None = None
    hidden_nan: np.ndarray | None = None
    hidden_inf: np.ndarray | None = None
    last_layer_sketch: np.ndarray | None = None  # [T, S] random projection of the last layer
    # self-attention, [T, L]
    attn_entropy_norm: np.ndarray | None = None
    attn_collapse_rate: np.ndarray | None = None
    attn_concentration_max: np.ndarray | None = None
    attn_nan: np.ndarray | None = None
    attn_inf: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        return int(self.entropy.shape[0])


def _f(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _b(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=bool)


def signals_from_capture(seq: Any, *, model_id: str, caps: Any) -> SequenceSignals:
    """From a :class:`corevital.capture.records.SequenceCapture`."""
    lg, chosen, h, a = seq.logits, seq.chosen, seq.hidden, seq.attention
    entropy = _f(lg.entropy)
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
        surprisal=_f(chosen.surprisal),
        top_k_margin=_f(lg.top_k_margin),
        topk_mass=_f(lg.topk_mass),
        perplexity=np.exp2(entropy),
        logits_nan=_b(lg.has_nan),
        logits_inf=_b(lg.has_inf),
        hidden_l2=None if h is None else _f(h.l2_norm),
        hidden_max_abs=None if h is None else _f(h.max_abs),
        hidden_nan=None if h is None else _b(h.has_nan),
        hidden_inf=None if h is None else _b(h.has_inf),
        last_layer_sketch=None if h is None or h.sketch is None else _f(np.asarray(h.sketch)[:, -1, :]),
        attn_entropy_norm=None if a is None else _f(a.entropy_mean_normalized),
        attn_collapse_rate=None if a is None else _f(a.collapsed_head_rate),
        attn_concentration_max=None if a is None else _f(a.concentration_max),
        attn_nan=None if a is None else _b(a.has_nan),
        attn_inf=None if a is None else _b(a.has_inf),
    )
