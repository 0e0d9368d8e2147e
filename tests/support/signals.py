"""Hand-built :class:`SequenceSignals` for analysis tests (numpy only, no torch).

``make_signals`` gives a calm, healthy-looking sequence of ``steps`` tokens over ``layers`` layers;
keyword arguments replace any field. ``depth_profile`` is a smooth, realistic growth of hidden-state
norms across depth (with the final norm's drop at the last layer).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from corevital.analysis.signals import SequenceSignals


def depth_profile(steps: int, layers: int, *, seed: int = 0) -> np.ndarray:
    """``[T, L]`` norms growing ~8% per layer with small noise; the last layer drops (final norm)."""
    rng = np.random.default_rng(seed)
    log_jumps = 0.08 + 0.04 * rng.standard_normal((steps, layers))
    log_l2 = np.log(40.0) + np.cumsum(log_jumps, axis=1)
    if layers > 1:
        log_l2[:, -1] = np.log(50.0)
    norms: np.ndarray = np.exp(log_l2)
    return norms


def make_signals(
    steps: int = 40, layers: int = 12, heads: int = 4, *, seed: int = 0, **fields: Any
) -> SequenceSignals:
    rng = np.random.default_rng(seed)
    entropy = np.clip(2.0 + 0.8 * rng.standard_normal(steps), 0.05, None)
    margin = np.clip(0.55 + 0.15 * rng.standard_normal(steps), 0.0, 0.95)
    surprisal = np.abs(1.5 + 1.0 * rng.standard_normal(steps))
    mass = np.clip(0.85 + 0.05 * rng.standard_normal(steps), margin + 0.01, 1.0)
    token_ids = rng.integers(10, 5000, size=steps)
    base = SequenceSignals(
        model_id="test/model",
        architecture="LlamaForCausalLM",
        model_type="llama",
        num_layers=layers,
        num_heads=heads,
        prompt_text="Why is the sky blue?",
        prompt_tokens=7,
        token_ids=token_ids.astype(np.int64),
        token_texts=[f" w{int(t)}" for t in token_ids],
        entropy=entropy,
        surprisal=surprisal,
        top_k_margin=margin,
        topk_mass=mass,
        perplexity=np.exp2(entropy),
        logits_nan=np.zeros(steps, dtype=bool),
        logits_inf=np.zeros(steps, dtype=bool),
        hidden_l2=depth_profile(steps, layers, seed=seed),
        hidden_max_abs=depth_profile(steps, layers, seed=seed + 1) / 4,
        hidden_nan=np.zeros((steps, layers), dtype=bool),
        hidden_inf=np.zeros((steps, layers), dtype=bool),
        last_layer_sketch=rng.standard_normal((steps, 32)),
        attn_entropy_norm=np.clip(0.5 + 0.1 * rng.standard_normal((steps, layers)), 0, 1),
        attn_collapse_rate=np.zeros((steps, layers)),
        attn_concentration_max=np.clip(0.6 + 0.1 * rng.standard_normal((steps, layers)), 0, 1),
        attn_nan=np.zeros((steps, layers), dtype=bool),
        attn_inf=np.zeros((steps, layers), dtype=bool),
    )
    return replace(base, **fields) if fields else base


def copy_of(array: np.ndarray | None) -> np.ndarray:
    """A copy of one of the per-layer fields that ``make_signals`` fills (a summary capture's are None)."""
    assert array is not None
    return array.copy()


def summary_only(sig: SequenceSignals) -> SequenceSignals:
    """The same sequence as a summary capture keeps it: no per-layer arrays."""
    return replace(
        sig,
        hidden_l2=None,
        hidden_max_abs=None,
        hidden_nan=None,
        hidden_inf=None,
        last_layer_sketch=None,
        attn_entropy_norm=None,
        attn_collapse_rate=None,
        attn_concentration_max=None,
        attn_nan=None,
        attn_inf=None,
    )


def looping(sig: SequenceSignals, *, period: int, start: int) -> SequenceSignals:
    """``sig`` whose tokens from ``start`` on repeat the block at ``start`` with the given period."""
    ids = sig.token_ids.copy()
    block = np.arange(9000, 9000 + period)
    for t in range(start, ids.size):
        ids[t] = block[(t - start) % period]
    texts = [f" w{int(t)}" for t in ids]
    sketch = None
    if sig.last_layer_sketch is not None:
        sketch = sig.last_layer_sketch.copy()
        for t in range(start + period, ids.size):
            sketch[t] = sketch[t - period] + 0.01
    return replace(sig, token_ids=ids, token_texts=texts, last_layer_sketch=sketch)
