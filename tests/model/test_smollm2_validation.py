"""The shipped labelled risk model on the real SmolLM2: its scores are probabilities that separate.

A small slice of the held-out split only (the full table is `docs/validation.md`, reproduced with
`corevital validate`); this checks the wiring on the real model: the shipped profile loads for the
default model, the risk score comes from the labelled model, and the answer checker and the table
run end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corevital.capture.loading import LoadedModel
from corevital.pipeline import Pipeline
from corevital.validation.answers import check_answer
from corevital.validation.labels import load_labelled
from corevital.validation.workflow import labelled_runs, validate
from tests.model.conftest import smol_settings

pytestmark = [pytest.mark.model, pytest.mark.slow]

LABELS = Path(__file__).resolve().parents[2] / "examples" / "validation" / "qa_labelled.jsonl"


def test_shipped_risk_model_on_held_out_records(smollm2: LoadedModel) -> None:
    records = load_labelled(LABELS, split="test")[:24]
    settings = smol_settings(temperature=0.0, max_new_tokens=24, batch_size=8, calibration="default")
    pipeline = Pipeline(settings)
    pipeline.use_model(smollm2)
    pipeline.check_calibration_model()
    assert pipeline.calibration_mismatch() == []
    runs = labelled_runs(pipeline, records, check_answer)
    scores = np.asarray([r.risk_score for r in runs])
    assert np.all((scores > 0.0) & (scores < 1.0))
    assert len(np.unique(np.round(scores, 3))) > 12  # not a constant or saturated score
    failed = np.asarray([r.failed for r in runs])
    assert 0 < failed.sum() < len(runs)
    # On this slice as on the whole split, failures score higher on average.
    assert scores[failed].mean() > scores[~failed].mean()
    (table,) = validate(runs, labelled_model=True)
    assert table.split == "test" and table.n == 24
    assert table.row("risk_score").label == "risk_score (labelled model)"
    assert 0.0 <= table.row("heuristic_risk_score").auroc.estimate <= 1.0
