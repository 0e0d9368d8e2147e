"""Hidden-state statistics of one decoding step (docs/metrics.md §2).

One vectorised pass over all layers at once: the input is the stack of each layer's output at the
position being decoded, ``[L, N, d]``. Math is float32 on the input's device, with no host
synchronisation.

Non-finite input: NaN and ±Inf are detected before clamping. ±Inf is beyond any finite clip value,
so it is clamped (and counted in ``clip_fraction``); NaN survives clamping, so the mean, std, norm,
``max_abs`` and sketch of a row holding NaN are NaN, while its flags and clip statistics stay exact.
``clip_max_before`` is the largest *finite* magnitude (0 for a row with no finite element).

Update ratio: ``‖h_l − h_(l−1)‖ / ‖h_(l−1)‖`` of consecutive layers (clamped values), how much
layer ``l`` changes the residual stream. A silenced sub-layer (a zeroed norm before the attention
or the MLP) lowers it at that layer; exploding activations raise it. The first layer of a stack
has no kept input (NaN) and the last layer's state is taken after the final norm, so its ratio
would measure the norm (NaN too). One subtraction and one norm over the stack, on the device.

MLP update ratio: ``‖h_l − m_l‖ / ‖m_l‖`` where ``m_l`` is layer ``l``'s residual stream between its
attention and its MLP (the pre-MLP norm's input, kept by :mod:`corevital.capture.mlp_inputs`): the
MLP's own share of the update. A silenced MLP adds exactly nothing (0); the last layer is NaN (its
state is taken after the final norm).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from corevital.metrics.types import HiddenStats

DEFAULT_CLIP_VALUE = 1e6
DEFAULT_SKETCH_WIDTH = 32


@torch.no_grad()
def summarize_hidden(
    hidden: Tensor,
    *,
    clip_value: float = DEFAULT_CLIP_VALUE,
    sketch_matrix: Tensor | None = None,
    layers: int | None = None,
) -> HiddenStats:
    """Mean, std, L2 norm, max |h|, clipping and anomaly flags of each ``hidden[l, n, :]``.

    ``sketch_matrix`` [d, S] (see :func:`make_sketch_matrix`) adds the projection ``h @ R`` of the
    clamped vector, [L, N, S]. ``layers``: the first axis holds several stacks of this many layers
    one after the other (several decoding steps at once); the update ratio is taken within each.
    Default: one stack of ``hidden.shape[0]`` layers.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [L, N, d], got shape {tuple(hidden.shape)}")
    if not clip_value > 0:
        raise ValueError("clip_value must be > 0")
    owned = hidden.dtype != torch.float32  # .float() made a copy we may overwrite
    h = hidden.float()
    width = h.shape[-1]

    mag = h.abs()
    # Clamping keeps NaN and puts ±inf at the clip value, so this is NaN, the clip value or the
    # largest clamped magnitude, as the clamped vector's max |h| must be.
    max_abs = mag.clamp(max=clip_value).amax(dim=-1)
    has_nan = torch.isnan(max_abs)  # amax propagates NaN
    has_inf = (mag == math.inf).any(dim=-1)  # not isinf: it would build another |h| temporary
    clip_count = (mag > clip_value).sum(dim=-1)  # NaN compares False; ±inf counts as clipped
    clip_max_before = mag.nan_to_num_(nan=0.0, posinf=0.0).amax(dim=-1)
    del mag

    clamped = h.clamp_(-clip_value, clip_value) if owned else h.clamp(-clip_value, clip_value)
    std, mean = torch.std_mean(clamped, dim=-1, correction=0)
    l2_norm = torch.linalg.vector_norm(clamped, dim=-1)
    ratio = update_ratio(clamped, l2_norm, layers or clamped.shape[0])
    sketch = None
    if sketch_matrix is not None:
        if sketch_matrix.dim() != 2 or sketch_matrix.shape[0] != width:
            raise ValueError(f"sketch_matrix must be [{width}, S], got shape {tuple(sketch_matrix.shape)}")
        sketch = clamped @ sketch_matrix.to(device=clamped.device, dtype=torch.float32)

    return HiddenStats(
        mean=mean,
        std=std,
        l2_norm=l2_norm,
        max_abs=max_abs,
        clipped=clip_count > 0,
        clip_fraction=clip_count / max(width, 1),  # true division: float32
        clip_max_before=clip_max_before,
        has_nan=has_nan,
        has_inf=has_inf,
        sketch=sketch,
        update_ratio=ratio,
    )


def update_ratio(hidden: Tensor, norms: Tensor, layers: int) -> Tensor:
    """``‖h_l − h_(l−1)‖ / ‖h_(l−1)‖`` of ``hidden`` [S·layers, N, d] per stack of ``layers`` rows.

    ``norms`` [S·layers, N] are the rows' L2 norms. The first and last row of each stack are NaN
    (see the module docstring); so is every row of a stack of fewer than 3 layers.
    """
    rows, n = hidden.shape[0], hidden.shape[1]
    if layers < 1 or rows % layers:
        raise ValueError(f"{rows} rows do not split into stacks of {layers} layers")
    out = torch.full((rows // layers, layers, n), math.nan, dtype=torch.float32, device=hidden.device)
    if layers >= 3:
        h = hidden.reshape(rows // layers, layers, n, hidden.shape[-1])
        change = torch.linalg.vector_norm(h[:, 1:-1] - h[:, :-2], dim=-1)  # layers 1 .. L-2
        base = norms.reshape(rows // layers, layers, n)[:, :-2]
        out[:, 1:-1] = change / base.clamp(min=1e-12)
    return out.flatten(0, 1)


def mlp_update_ratio(hidden: Tensor, mlp_inputs: Tensor, layers: int) -> Tensor:
    """``‖h_l − m_l‖ / ‖m_l‖`` of ``hidden`` and ``mlp_inputs`` [S·layers, N, d], per stack of ``layers``.

    Float32 on the input's device; the last row of each stack is NaN (see the module docstring).
    """
    if hidden.shape != mlp_inputs.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and mlp_inputs {tuple(mlp_inputs.shape)} differ")
    rows, n = hidden.shape[0], hidden.shape[1]
    if layers < 1 or rows % layers:
        raise ValueError(f"{rows} rows do not split into stacks of {layers} layers")
    m = mlp_inputs.float()
    change = torch.linalg.vector_norm(hidden.float() - m, dim=-1)
    ratio: Tensor = change / torch.linalg.vector_norm(m, dim=-1).clamp(min=1e-12)
    stacks = ratio.view(rows // layers, layers, n)
    stacks[:, -1] = math.nan
    return ratio


def make_sketch_matrix(
    d: int,
    width: int = DEFAULT_SKETCH_WIDTH,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A [d, width] matrix of N(0, 1)/sqrt(d) entries, identical across runs, machines and devices.

    Drawn on the CPU from a seeded generator (device generators differ) and then moved.
    """
    if d < 1 or width < 1:
        raise ValueError("d and width must be >= 1")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    matrix = torch.randn(d, width, generator=gen, dtype=torch.float32) / math.sqrt(d)
    return matrix.to(device=device, dtype=dtype)
