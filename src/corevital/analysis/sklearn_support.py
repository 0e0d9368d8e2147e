"""scikit-learn, imported only where a model is fitted or evaluated (the ``validate`` extra).

Scoring a run with a fitted risk model is plain numpy (:mod:`.calibration.risk_model`); fitting one
(``corevital calibrate --labels``) and the validation workflow (``corevital validate``) need
scikit-learn. :func:`require_sklearn` turns its absence into one line that says what to install.
"""

from __future__ import annotations

from corevital.errors import NotAvailableError

INSTALL_HINT = 'pip install "corevital[validate]"'


def require_sklearn(what: str = "fitting and validating risk models") -> None:
    """Raise :class:`NotAvailableError` unless scikit-learn can be imported."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise NotAvailableError(f"{what} needs scikit-learn: {INSTALL_HINT}") from None
