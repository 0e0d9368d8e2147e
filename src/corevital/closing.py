"""``with obj:`` closes ``obj`` on the way out, for every class of CoreVital that holds resources.

:class:`ClosesOnExit` gives a class with a ``close()`` method ``__enter__`` (returns the object) and
``__exit__`` (calls ``close()``, never suppresses the exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self


class ClosesOnExit:
    """Mixin: ``__enter__`` returns the object, ``__exit__`` calls its ``close()``."""

    if TYPE_CHECKING:

        def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ClosesOnExit"]
