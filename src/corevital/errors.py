"""The one exception tree of CoreVital.

Every error a user can cause (a bad flag, a missing model, an unwritable directory, a corrupt
database) is raised as a subclass of :class:`CoreVitalError` with a message that stands on one
line and says what to do. The CLI prints that line and exits non-zero; tracebacks are shown only
with ``--log_level DEBUG``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

    from pydantic import ValidationError


class CoreVitalError(Exception):
    """Base of every error CoreVital raises on purpose."""

    exit_code = 1


class ConfigError(CoreVitalError):
    """Invalid settings: an unknown key, a value out of range, an unreadable config file."""

    exit_code = 2


class InputError(CoreVitalError):
    """Invalid input to a run: an empty prompt, a token budget the model cannot hold."""

    exit_code = 2


class ModelLoadError(CoreVitalError):
    """A model, tokenizer or GGUF file could not be found or loaded."""

    exit_code = 3


class DeviceError(CoreVitalError):
    """The requested device or quantization is not available on this machine."""

    exit_code = 3


class CaptureError(CoreVitalError):
    """Instrumented generation failed."""

    exit_code = 4


class ReportError(CoreVitalError):
    """A report could not be read, validated or migrated."""

    exit_code = 5


class StoreError(CoreVitalError):
    """A report store (the SQLite database, a JSON directory) could not be opened or written."""

    exit_code = 6


class ExporterError(CoreVitalError):
    """An exporter could not be set up (a bad endpoint, a missing key). Failures while exporting a
    report are logged and counted, never raised into a generation."""

    exit_code = 9


class NotAvailableError(CoreVitalError):
    """A feature that this build or this machine does not provide (yet)."""

    exit_code = 8


def import_extra(*modules: str, hint: str) -> ModuleType:
    """Import ``modules`` (an optional extra's packages) and return the first; when one is missing, a
    :class:`NotAvailableError` "<hint> (<missing module> is missing)"."""
    import importlib

    try:
        imported = [importlib.import_module(name) for name in modules]
    except ImportError as exc:
        raise NotAvailableError(f"{hint} ({exc.name} is missing)") from exc
    return imported[0]


def validation_line(
    exc: ValidationError, *, where_default: str, show_input: bool = False, quote_where: bool = False
) -> str:
    """A pydantic validation failure as one line: ``where: message (and N more problems)``.

    ``where`` is the dotted location of the first problem (``where_default`` when it is the whole
    document), in quotes with ``quote_where``; ``show_input`` appends the offending value when it is
    not a mapping.
    """
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or where_default
    message = " ".join(str(first.get("msg", "invalid value")).removeprefix("Value error, ").split())
    value = first.get("input")
    shown = f", got {value!r}" if show_input and not isinstance(value, dict) else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where!r}: {message}{shown}{more}" if quote_where else f"{where}: {message}{shown}{more}"
