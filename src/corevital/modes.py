"""The named choices and logit defaults shared by the settings, capture, metrics and the report.

Each is declared once here (a leaf module: no imports beyond ``typing``, so the report schema and
the torch-side metrics can use them without pulling in the settings machinery).
"""

from __future__ import annotations

from typing import Literal

# How much of a run is kept: full (per-layer detail), summary (logits timeline only), on_risk
# (summary, full detail kept when risk is high). The setting ``capture``, the monitor's
# ``capture`` argument, the CLI's ``--capture`` and the report's ``run_config.capture_mode``.
CaptureMode = Literal["full", "summary", "on_risk"]
# Logit entropy: full (exact) or topk_approx (top tokens plus a uniform tail); docs/metrics.md §1.
EntropyMode = Literal["full", "topk_approx"]
# Where the weights came from: a Hub id, a local directory, or a GGUF file.
ModelSource = Literal["hub", "local", "gguf"]

# Tokens listed per step (``topk``) and the K of the top-K probability mass (``topk_mass_k``).
DEFAULT_TOPK = 5
DEFAULT_TOPK_MASS_K = 10
