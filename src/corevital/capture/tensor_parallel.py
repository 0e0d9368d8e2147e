"""A tensor-parallel model (transformers' ``tp_plan``, torch DTensor) observed on its shards.

Under tensor parallelism (``torchrun --nproc-per-node N``, one process per shard) each process runs
the same ``generate()`` on the same tokens. Column-wise q/k/v projections give each rank a contiguous
block of the attention heads (rank r holds heads ``r·H/N … (r+1)·H/N − 1``), so the attention hooks
see only the local heads; the row-wise output projections end in an all-reduce, so every layer's
hidden state is the whole, replicated state on every rank, and transformers' ``lm_head`` plan
(``colwise_gather_output``) gives every rank the full logits. Hidden-state and logit statistics are
therefore computed by each rank alone and are the same everywhere.

The attention statistics are reduced over heads on each rank as for a single process (entropy per
local head, then mean/max/min/counts over the local heads) and combined here, without moving the
attention weights: the reduced per-row values of every rank are gathered in **one** ``all_gather``
per window of steps (a few numbers per layer and row, plus one value per head for the per-head
fields) and merged the way a reduction over all heads would have (:data:`RULES`). Every rank ends
with the same statistics; only the model's tensor-parallel rank 0 writes reports
(:func:`writes_reports`).

Nothing here touches transformers: the shards are found from the model's DTensor parameters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from corevital.metrics.prompt import PromptAttentionStats
from corevital.metrics.types import AttentionStats

T = TypeVar("T")

# How each AttentionStats field of all heads follows from those of each rank's heads (every rank
# holds as many heads: a mean over all heads is the mean of the ranks' means).
RULES: dict[str, str] = {
    "entropy_mean": "mean",
    "entropy_min": "min",
    "entropy_max": "max",
    "entropy_mean_normalized": "mean",
    "concentration_max": "max",
    "concentration_min": "min",
    "collapsed_head_count": "sum",
    "collapsed_head_rate": "mean",
    "focused_head_count": "sum",
    "sink_mass_mean": "mean",
    "prev_token_mass_mean": "mean",
    "prev_token_mass_max": "max",
    "max_weight_per_head": "heads_last",
    "num_keys": "same",
    "renormalized": "any",
    "has_nan": "any",
    "has_inf": "any",
}
# PromptAttentionStats fields and the prompt's span shares are per sequence and head: [B, H, ...].
PROMPT_RULE = "heads_second"


@dataclass
class ShardGroup:
    """The processes that hold one model's tensor-parallel shards, and this process's place among them.

    ``gathers`` records the element count of each gather this observer made (one per window of
    steps), so that what crosses between ranks can be checked.
    """

    group: Any  # torch.distributed ProcessGroup of the mesh's tensor-parallel dimension
    size: int
    rank: int
    gathers: list[int] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def gather(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Every rank's ``tensors``, each with a new leading rank axis ``[size, ...]``, in one collective.

        The tensors are packed into one float64 vector (float32 values, counts below 2⁵³ and flags
        round-trip exactly) and each part is given back in its own dtype.
        """
        if not tensors:
            return []
        import torch.distributed as dist

        packed = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        parts = [torch.empty_like(packed) for _ in range(self.size)]
        dist.all_gather(parts, packed, group=self.group)
        self.gathers.append(int(packed.numel()))
        stacked = torch.stack(parts)  # [size, n]
        found, offset = [], 0
        for t in tensors:
            n = t.numel()
            found.append(stacked[:, offset : offset + n].reshape(self.size, *t.shape).to(t.dtype))
            offset += n
        return found


def shard_group(model: Any) -> ShardGroup | None:
    """The tensor-parallel group of ``model``'s DTensor parameters; None for a model on one process.

    The mesh dimension named ``tp`` (transformers names its mesh ``(pp, fsdp, tp)``), or the only
    dimension of a one-dimensional mesh; None when that dimension has one process.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return None
    from torch.distributed.tensor import DTensor

    for parameter in model.parameters():
        if not isinstance(parameter, DTensor):
            continue
        mesh = parameter.device_mesh
        names = mesh.mesh_dim_names or ()
        if "tp" in names:
            group = mesh.get_group("tp")
        elif mesh.ndim == 1:
            group = mesh.get_group()
        else:
            return None
        size = dist.get_world_size(group)
        return ShardGroup(group, size, dist.get_rank(group)) if size > 1 else None
    return None


def writes_reports(model: Any) -> bool:
    """Whether this process writes the reports of ``model``'s generations (rank 0 of its shards)."""
    group = shard_group(model)
    return group is None or group.writes


def launched_rank() -> int:
    """This process's rank as torchrun (or another launcher) set ``RANK``; 0 when not launched so."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def merge_field(rule: str, gathered: Tensor) -> Tensor:
    """One field of every rank, ``[size, ...]``, merged by its ``rule`` (:data:`RULES`)."""
    if rule == "mean":
        return gathered.mean(dim=0, dtype=torch.float64).to(gathered.dtype)
    if rule == "max":
        return gathered.amax(dim=0)
    if rule == "min":
        return gathered.amin(dim=0)
    if rule == "sum":
        return gathered.sum(dim=0, dtype=gathered.dtype)
    if rule == "any":
        return gathered.any(dim=0)
    if rule == "same":
        return gathered[0]
    if rule == "heads_last":  # [size, ..., h] -> [..., size·h], rank r's heads in block r
        return gathered.movedim(0, -2).flatten(-2)
    if rule == "heads_second":  # [size, B, h, ...] -> [B, size·h, ...]
        return gathered.movedim(0, 1).flatten(1, 2)
    raise ValueError(f"unknown combination rule {rule!r}")


def _rule(stats: Any, name: str) -> str:
    if isinstance(stats, AttentionStats):
        if name not in RULES:
            raise ValueError(f"AttentionStats.{name} has no rule to combine it over tensor-parallel ranks")
        return RULES[name]
    return PROMPT_RULE


def combine(items: Sequence[T], group: ShardGroup) -> list[T]:
    """``items`` (AttentionStats, PromptAttentionStats, per-head tensors [B, H] or None) over all heads.

    One gather for all of them; every rank gets the same result.
    """
    tensors: list[Tensor] = []
    plan: list[list[tuple[str, str]]] = []
    for item in items:
        if item is None:
            plan.append([])
        elif isinstance(item, Tensor):
            plan.append([("", PROMPT_RULE)])
            tensors.append(item)
        elif isinstance(item, AttentionStats | PromptAttentionStats):
            names = [f.name for f in dataclasses.fields(item)]
            plan.append([(name, _rule(item, name)) for name in names])
            tensors.extend(getattr(item, name) for name in names)
        else:
            raise TypeError(f"cannot combine a {type(item).__name__} over tensor-parallel ranks")
    gathered = group.gather(tensors)
    merged = iter(merge_field(rule, part) for (_, rule), part in zip(_flat(plan), gathered, strict=True))
    out: list[Any] = []
    for item, fields in zip(items, plan, strict=True):
        if item is None:
            out.append(None)
        elif isinstance(item, Tensor):
            out.append(next(merged))
        else:
            out.append(type(item)(**{name: next(merged) for name, _ in fields}))
    return out


def _flat(plan: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    return [entry for fields in plan for entry in fields]


WindowStep = tuple[AttentionStats | None, AttentionStats | None]


def combine_window(
    batches: list[tuple[Any, list[WindowStep]]], group: ShardGroup
) -> list[tuple[Any, list[WindowStep]]]:
    """A window's reduced batches (:class:`~.steps.StepBatch`, per-step attention) over all heads.

    The deferred attention of every batch and each step's own self- and cross-attention statistics
    go through one gather.
    """
    items: list[AttentionStats | None] = []
    for batch, steps in batches:
        items.append(batch.attention)
        for attention, cross in steps:
            items.extend((attention, cross))
    merged = iter(combine(items, group))
    out = []
    for batch, steps in batches:
        attention = next(merged)
        combined = [(next(merged), next(merged)) for _ in steps]
        out.append((dataclasses.replace(batch, attention=attention), combined))
    return out
