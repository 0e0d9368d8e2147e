"""A calibration profile of a model's runs, made in a test from a pipeline with the model in use."""

from __future__ import annotations

from pathlib import Path

from corevital.analysis.calibration.builder import ProfileBuilder
from corevital.analysis.calibration.profile import ModelIdentity, save_calibration_profile
from corevital.pipeline import Pipeline, generation_identity

__all__ = ["healthy_profile"]


def healthy_profile(pipeline: Pipeline, runs: int, path: Path) -> Path:
    """The profile of ``runs`` runs of ``pipeline``'s model (prompts "healthy prompt number i")
    with ``pipeline``'s settings, saved at ``path`` with a fixed creation time."""
    builder = ProfileBuilder(ModelIdentity.of(pipeline.loaded), generation_identity(pipeline.settings))
    healthy = pipeline.capture([f"healthy prompt number {i}" for i in range(runs)])
    for seq in healthy.sequences:
        builder.add(pipeline.diagnose_one(healthy, seq)[0])
    return save_calibration_profile(
        builder.finish(created_at_utc="2026-01-01T00:00:00.000Z", corevital_version="test"), path
    )
