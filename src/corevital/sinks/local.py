"""JSON files: one ``trace_<trace_id>.json`` per report in a directory.

Files are compact by default (``pretty`` indents them) and written atomically (a temporary file in
the same directory, then a rename), so a reader never sees half a report. The full trace id is in
the name; ``corevital migrate`` imports such directories into a store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from corevital.errors import StoreError
from corevital.report.encoding import report_to_json
from corevital.report.schema import Report
from corevital.sinks.encoded import EncodedReport

TRACE_FILE_PREFIX = "trace_"
TRACE_FILE_GLOB = "trace_*.json"


def trace_file_name(trace_id: str) -> str:
    """The file name of a report: ``trace_<trace_id>.json``."""
    if not trace_id or "/" in trace_id or "\\" in trace_id or trace_id in {".", ".."}:
        raise StoreError(f"trace id {trace_id!r} cannot name a file")
    return f"{TRACE_FILE_PREFIX}{trace_id}.json"


class LocalFileSink:
    """A :class:`~corevital.sinks.base.Sink` writing one JSON file per report into ``directory``."""

    def __init__(self, directory: str | Path, pretty: bool = False) -> None:
        self.directory = Path(directory)
        self.pretty = pretty
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create directory {self.directory}: {error.strerror or error}") from None

    def path_for(self, trace_id: str) -> Path:
        """Where the report with this trace id is written."""
        return self.directory / trace_file_name(trace_id)

    def write(self, report: Report) -> str:
        """Write ``report`` to its file (replacing an older one); returns the file path."""
        return self.write_encoded(EncodedReport(report))

    def write_encoded(self, encoded: EncodedReport) -> str:
        """:meth:`write`, reusing the report's compact encoding (``pretty`` makes its own)."""
        report = encoded.report
        target = self.path_for(report.trace_id)
        data = report_to_json(report, pretty=True).encode("utf-8") if self.pretty else encoded.json_bytes
        try:
            write_atomically(target, data)
        except OSError as error:
            raise StoreError(f"cannot write {target}: {error.strerror or error}") from None
        return str(target)

    def close(self) -> None:
        """Nothing to release."""


@contextmanager
def replaced_atomically(target: Path) -> Iterator[Path]:
    """A new temporary path beside ``target`` for the block to write (created with the umask's mode):
    it replaces ``target`` when the block ends, and is removed when the block raises, so ``target``
    is either as it was or whole."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(target: Path, data: bytes) -> None:
    """``data`` written to ``target`` through :func:`replaced_atomically`."""
    with replaced_atomically(target) as temporary, temporary.open("xb") as stream:
        stream.write(data)
