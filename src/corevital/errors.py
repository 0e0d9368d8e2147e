"""The one exception tree of CoreVital.

Every error a user can cause (a bad flag, a missing model, an unwritable directory, a corrupt
database) is raised as a subclass of :class:`CoreVitalError` with a message that stands on one
line and says what to do. The CLI prints that line and exits non-zero; tracebacks are shown only
with ``--log_level DEBUG``.
"""

from __future__ import annotations


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
    """A report store (SQLite, JSON directory, PostgreSQL) could not be opened or written."""

    exit_code = 6


class ExporterError(CoreVitalError):
    """An exporter could not be configured. Failures while exporting are logged, never raised."""

    exit_code = 7


class NotAvailableError(CoreVitalError):
    """A feature that this build or this machine does not provide (yet)."""

    exit_code = 8
