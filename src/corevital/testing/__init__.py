"""Tools for checking CoreVital itself: inject known faults into a loaded model and see them reported.

:mod:`corevital.testing.faults` makes one layer of a loaded model produce NaN hidden states,
exploding activations, a silenced sub-layer or collapsed attention for the duration of a ``with``
block, so a test (or a user checking their setup) can confirm that CoreVital's capture and analysis
catch them (:mod:`.sites` finds the layer and its sub-modules, :mod:`.collapse` collapses attention).
Importing this package imports torch.
"""

from corevital.testing import faults
from corevital.testing.faults import *  # noqa: F403  (the public API is faults.__all__)

__all__ = list(faults.__all__)
