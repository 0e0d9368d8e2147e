"""What observing a model derives from its structure and weights, made once per model.

A generation's observer needs the model's weight bytes and devices (its memory budgets follow them), the
fixed random projection of hidden-state sketches, the attention modules, the pre-MLP norms and the
config objects the attention tap re-points. None
of these changes between generations of the same loaded model, and computing them again for every
``generate()`` call (a pass over every parameter, a random matrix, a walk over every module) is a
fixed cost per generation that short generations feel. :class:`ModelConstants` keeps them; one is
held by each :class:`~corevital.capture.loading.LoadedModel`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.hf_compat import model_configs
from corevital.capture.instruments import model_bytes, sketch_matrix
from corevital.capture.mlp_inputs import MlpInputTap, pre_mlp_norms
from corevital.capture.model_checks import model_checks
from corevital.capture.options import CaptureOptions
from corevital.capture.registry import AttentionSite, find_attention_sites


class ModelConstants:
    """The per-model values of one loaded model, each computed on first use."""

    def __init__(self, model: Any, caps: ModelCapabilities) -> None:
        self.model = model
        self.caps = caps
        self._bytes: int | None = None
        self._sites: list[AttentionSite] | None = None
        self._norms: tuple[nn.Module, ...] | None = None
        self._norms_found = False
        self._sketches: dict[tuple[int, torch.device], Tensor | None] = {}
        self._configs: list[Any] | None = None
        self._devices: tuple[torch.device, ...] | None = None

    @property
    def configs(self) -> list[Any]:
        """The model's config objects, which the attention tap points at its function."""
        if self._configs is None:
            self._configs = model_configs(self.model)
        return self._configs

    @property
    def weight_bytes(self) -> int:
        if self._bytes is None:
            self._bytes = model_bytes(self.model)
        return self._bytes

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """The devices the model's weights are on (several for a model split with ``device_map``)."""
        if self._devices is None:
            self._devices = tuple(dict.fromkeys(p.device for p in self.model.parameters()))
        return self._devices

    @property
    def sites(self) -> list[AttentionSite]:
        """The attention modules (a new list each time: callers may filter it)."""
        if self._sites is None:
            self._sites = find_attention_sites(self.model, self.caps)
        return list(self._sites)

    def sketch(self, options: CaptureOptions, device: torch.device) -> Tensor | None:
        key = (options.sketch_dim, device)
        if key not in self._sketches:
            self._sketches[key] = sketch_matrix(self.caps, options, device)
        return self._sketches[key]

    def mlp_tap(self, chunk_bytes: int) -> MlpInputTap | None:
        """A new tap on the pre-MLP norms (found once), or None where the model has none.

        ``chunk_bytes``: the generation's prompt chunk budget (:class:`~.options.Tuning`).
        """
        if not self._norms_found:
            self._norms, self._norms_found = pre_mlp_norms(self.model, self.caps.num_layers), True
        if self._norms is None:
            return None
        return MlpInputTap(self._norms, chunk_bytes, positional=model_checks(self.model).mlp_positional)
