"""Metrics: pure tensor-to-tensor reductions of one step, on the model's device.

Logits, hidden-state and attention statistics as defined in ``spec/metrics.md`` §1-3, batched
over rows (sequences or query positions), layers and heads, with no Python loop over layers or
heads and no per-value host transfer. :mod:`corevital.metrics.transfer` moves a whole step to the
host in one copy.
"""
