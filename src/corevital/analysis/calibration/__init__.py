"""Calibration against a model's own healthy runs, and the labelled risk model.

- :mod:`.profile`: the versioned JSON calibration profile (per-metric distributions by generation
  position, per-layer hidden-state norms and attention entropy, optionally a fitted risk model),
  validated on load, with a clear error when it was made for another model.
- :mod:`.builder`: accumulates healthy runs into a profile (``corevital calibrate``).
- :mod:`.divergence`: how far one run is from the profile (``extensions.calibration``).
- :mod:`.features` and :mod:`.risk_model`: run-level features and the logistic risk model fitted on
  labelled runs, whose output is a calibrated probability of failure.

numpy and pydantic only; no torch.
"""
