"""Accumulating healthy runs into a :class:`~.profile.CalibrationProfile` (``corevital calibrate``).

The builder keeps each run's per-step values only until :meth:`ProfileBuilder.finish` summarises them
(a few hundred runs of a few hundred steps are a few MB); the profile itself holds statistics only.
"""

from __future__ import annotations

import numpy as np

from corevital.analysis.calibration.profile import (
    POSITION_BUCKET_STARTS,
    CalibrationProfile,
    GenerationIdentity,
    LayerReference,
    MetricStats,
    ModelIdentity,
    PositionBucket,
)
from corevital.analysis.depth import log_norms
from corevital.analysis.signals import SequenceSignals
from corevital.errors import ConfigError


class ProfileBuilder:
    def __init__(self, model: ModelIdentity, generation: GenerationIdentity) -> None:
        self.model = model
        self.generation = generation
        self._steps: dict[str, list[np.ndarray]] = {
            m: [] for m in ("entropy", "margin", "surprisal", "topk_mass")
        }
        self._positions: list[np.ndarray] = []
        self._log_l2: list[np.ndarray] = []
        self._attention: list[np.ndarray] = []
        self._update_ratio: list[np.ndarray] = []  # [L] per run
        self.num_runs = 0

    def add(self, sig: SequenceSignals) -> None:
        if sig.num_layers != self.model.num_layers:
            raise ConfigError(
                f"run of {sig.model_id} has {sig.num_layers} layers, "
                f"the profile is for {self.model.num_layers}"
            )
        self.num_runs += 1
        n = sig.num_steps
        self._positions.append(np.arange(n))
        for name, values in (
            ("entropy", sig.entropy),
            ("margin", sig.top_k_margin),
            ("surprisal", sig.surprisal),
            ("topk_mass", sig.topk_mass),
        ):
            self._steps[name].append(np.asarray(values, dtype=np.float64)[:n])
        if sig.hidden_l2 is not None and np.ndim(sig.hidden_l2) == 2:
            self._log_l2.append(log_norms(sig.hidden_l2))
        if sig.attn_entropy_norm is not None and np.ndim(sig.attn_entropy_norm) == 2:
            self._attention.append(np.asarray(sig.attn_entropy_norm, dtype=np.float64))
        if sig.hidden_update_ratio is not None and np.ndim(sig.hidden_update_ratio) == 2:
            self._update_ratio.append(_run_median_log(sig.hidden_update_ratio))

    def finish(self, *, created_at_utc: str, corevital_version: str) -> CalibrationProfile:
        if self.num_runs == 0:
            raise ConfigError("no calibration runs: the prompts file gave no prompt")
        positions = np.concatenate(self._positions) if self._positions else np.zeros(0, dtype=np.int64)
        return CalibrationProfile(
            created_at_utc=created_at_utc,
            corevital_version=corevital_version,
            model=self.model,
            generation=self.generation,
            num_runs=self.num_runs,
            num_steps=int(positions.size),
            buckets=self._buckets(positions),
            layers=self._layers(),
        )

    def _buckets(self, positions: np.ndarray) -> list[PositionBucket]:
        values = {m: np.concatenate(v) if v else np.zeros(0) for m, v in self._steps.items()}
        starts = POSITION_BUCKET_STARTS
        buckets = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else None
            inside = (positions >= start) & (positions < (end if end is not None else np.iinfo(np.int64).max))
            stats = {m: MetricStats.of(v[inside]) for m, v in values.items()}
            buckets.append(PositionBucket(start=start, end=end, **stats))
        return buckets

    def _layers(self) -> list[LayerReference]:
        layers = self.model.num_layers
        logs = np.concatenate(self._log_l2, axis=0) if self._log_l2 else None
        attention = np.concatenate(self._attention, axis=0) if self._attention else None
        updates = np.stack(self._update_ratio) if self._update_ratio else None
        jumps = None
        if logs is not None:  # ln ratios of consecutive layers, as depth.log_jumps (logs already taken)
            jumps = np.full(logs.shape, np.nan)
            jumps[:, 1:] = np.diff(logs, axis=1)
        refs = []
        for layer in range(layers):
            refs.append(
                LayerReference(
                    layer=layer,
                    log_l2=_column(logs, layer),
                    log_l2_jump=_column(jumps, layer) if layer > 0 else None,
                    attention_entropy=_column(attention, layer),
                    log_update_ratio=_column(updates, layer),
                )
            )
        return refs


def _run_median_log(ratio: np.ndarray) -> np.ndarray:
    """[L] the run's median over steps of ln(update ratio) per layer (NaN where none is finite)."""
    arr = np.asarray(ratio, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(arr > 0, np.log(np.where(arr > 0, arr, 1.0)), np.nan)
    out = np.full(arr.shape[1], np.nan)
    for layer in range(arr.shape[1]):
        column = logs[np.isfinite(logs[:, layer]), layer]
        if column.size:
            out[layer] = float(np.median(column))
    return out


def _column(values: np.ndarray | None, layer: int) -> MetricStats | None:
    if values is None or layer >= values.shape[1]:
        return None
    return MetricStats.of(values[:, layer])
