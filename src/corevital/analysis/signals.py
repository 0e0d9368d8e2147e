"""The numpy view of one generated sequence that every detector reads.

Built from a capture (:func:`corevital.pipeline.signals_from_capture`). Missing values are NaN;
per-layer arrays are ``[T, L]``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # [T, L] ||h_l - h_(l-1)|| / ||h_(l-1)|| (metrics/hidden.py); None when not captured (stored reports)
    hidden_update_ratio: np.ndarray | None = None
    # [T, L] ||h_l - m_l|| / ||m_l||, m_l the residual before layer l's MLP: the MLP's own update
    # (metrics/hidden.py); None when not observed (stored reports, compiled steps, no pre-MLP norm)
    hidden_mlp_update_ratio: np.ndarray | None = None
    # self-attention, [T, L]
    attn_entropy_norm: np.ndarray | None = None
    attn_collapse_rate: np.ndarray | None = None
    attn_concentration_max: np.ndarray | None = None
    attn_nan: np.ndarray | None = None
    attn_inf: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        return int(self.entropy.shape[0])

    def nonfinite_layers(self) -> np.ndarray | None:
        """``[T, L]`` NaN or Inf per layer, hidden state or attention; None without per-layer flags.

        Flag arrays of different shapes are combined over the steps and layers they share.
        """
        out: np.ndarray | None = None
        for arr in (self.hidden_nan, self.hidden_inf, self.attn_nan, self.attn_inf):
            if arr is None or np.ndim(arr) != 2:
                continue
            flags = np.asarray(arr, dtype=bool)
            if out is None:
                out = flags.copy()
            else:
                rows, cols = min(out.shape[0], flags.shape[0]), min(out.shape[1], flags.shape[1])
                out[:rows, :cols] |= flags[:rows, :cols]
        return out
