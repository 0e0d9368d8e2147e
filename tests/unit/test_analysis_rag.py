"""The RAG context attention share in the context_loss compound signal."""

from __future__ import annotations

import numpy as np

from corevital.analysis.compound import context_loss
from corevital.analysis.profiles import load_profile
from tests.support.signals import make_signals


def test_context_loss_fires_on_a_low_share_without_basin_scores() -> None:
    profile = load_profile("llama").compound
    confused = make_signals(12, entropy=np.full(12, 7.0))
    fired = context_loss(confused, profile, None, context_share=0.05)
    assert fired is not None and any("RAG context" in e for e in fired.evidence)
    assert context_loss(confused, profile, None, context_share=0.6) is None
    assert context_loss(confused, profile, None, context_share=None) is None
    calm = make_signals(12, entropy=np.full(12, 1.0))
    assert context_loss(calm, profile, None, context_share=0.05) is None
