"""Tools for checking CoreVital itself: inject known faults into a loaded model and see them reported.

:mod:`corevital.testing.faults` makes one layer of a loaded model produce NaN hidden states,
exploding activations, a silenced sub-layer or collapsed attention for the duration of a ``with``
block, so a test (or a user checking their setup) can confirm that CoreVital's capture and analysis
catch them.
Importing this package imports torch.
"""

from corevital.testing.faults import (
    Fault,
    find_layer,
    inject_attention_collapse,
    inject_nan,
    inject_scale,
    inject_zero_norm,
)

__all__ = [
    "Fault",
    "find_layer",
    "inject_attention_collapse",
    "inject_nan",
    "inject_scale",
    "inject_zero_norm",
]
