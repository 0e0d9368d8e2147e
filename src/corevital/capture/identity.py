"""What identifies a loaded model beyond its name: a small, fixed sample of its weights.

Two loads of the same weights (a Hub id, a local copy, the GGUF file loaded by CoreVital or by the
user, the converted copy in the cache) give the same sample whatever they are called; another
model gives a different one. The sample is 32 values of the input embedding matrix at fixed
pseudo-random positions and 16 of the last floating-point parameter (usually the final norm), read
on the model's device and copied to the CPU (48 numbers, no pass over the weights). Values are kept
to 6 significant digits; a calibration profile compares them with a 1 % tolerance
(:meth:`corevital.analysis.calibration.profile.ModelIdentity.differs_from`), so the same weights
loaded in float32, float16 or bfloat16 still match.
"""

from __future__ import annotations

from typing import Any

import torch

_EMBEDDING_VALUES = 32
_LAST_VALUES = 16
_STRIDE = 2654435761  # Knuth's multiplicative hash constant: positions spread over the whole tensor


def _sample(tensor: torch.Tensor, count: int) -> list[float]:
    flat = tensor.detach().reshape(-1)
    size = flat.numel()
    if size == 0:
        return []
    positions = sorted({(i * _STRIDE + 12345) % size for i in range(count)})
    index = torch.tensor(positions, dtype=torch.long, device=flat.device)
    values = flat.index_select(0, index).to(torch.float32).cpu().tolist()
    return [float(f"{v:.6g}") for v in values]


def weights_sample(model: Any) -> tuple[float, ...]:
    """The model's weight sample (empty when its weights cannot be read, e.g. on the meta device)."""
    try:
        embeddings = model.get_input_embeddings()
        weight = getattr(embeddings, "weight", None)
        samples: list[float] = []
        if isinstance(weight, torch.Tensor) and weight.is_floating_point() and weight.device.type != "meta":
            samples.extend(_sample(weight, _EMBEDDING_VALUES))
        shared = weight.data_ptr() if isinstance(weight, torch.Tensor) else None
        last = None
        for parameter in model.parameters():
            readable = parameter.is_floating_point() and parameter.device.type != "meta"
            if readable and parameter.data_ptr() != shared:
                last = parameter
        if last is not None:
            samples.extend(_sample(last, _LAST_VALUES))
        return tuple(samples)
    except (AttributeError, NotImplementedError, RuntimeError, TypeError):
        return ()
