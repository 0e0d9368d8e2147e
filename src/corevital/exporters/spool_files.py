"""An on-disk spool of payloads not delivered yet (the thread that delivers them is
:class:`~corevital.exporters.spool.SpoolSender`, in :mod:`corevital.exporters.spool`).

Used by the HTTP sink and the Datadog exporter: ``put`` writes a payload to a file (a ``.part``
file renamed into place, so a payload is whole or absent) before anything is sent, so it survives
the process being killed and an endpoint that is down. A :class:`SpoolSender` thread delivers the
payloads in the order they were put, retrying with exponential backoff and full jitter, and
deletes each one once it is delivered.

Stable storage (surviving a power loss, not only a killed process) needs ``fsync``, which costs
milliseconds per file on many disks, so it is kept off the exporting thread: as soon as a
delivery fails, the sender fsyncs every payload written so far (each file, then the directory),
and again at least every second while it waits; a payload delivered at its first attempt is
never fsync-ed. ``sync_on_put`` fsyncs each payload inside ``put`` instead.

Layout of a spool directory (several processes may share one)::

    <spool>/<owner>/                  one per process: "<start time ns>-<pid>-<random>"
        .lock                         flock-ed by the owning process for as long as it runs
        000000000001.item             a payload: its key on the first line, then the body
        .000000000002.part            a payload being written (renamed to .item when complete)
    <spool>/rejected/                 payloads the far end refused (a 4xx), each with a .reason file

A process writes only into its own directory, so names order its payloads exactly. A directory
whose lock can be taken belongs to a process that has exited (or was killed: the kernel drops the
lock): a sender adopts it, holding its lock so no other process does, delivers what is left in
order, and removes it. Delivery is at least once: a payload sent just before a kill is sent again
by the adopter, under the same key, for the receiver to drop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ITEM_SUFFIX = ".item"
REJECTED_DIR = "rejected"
LOCK_NAME = ".lock"


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One payload on disk: ``seq`` orders it within its owner's directory."""

    path: Path
    seq: int

    @property
    def owner(self) -> str:
        return self.path.parent.name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_item(path: Path) -> tuple[str, bytes]:
    """The key and body of a spooled payload."""
    data = path.read_bytes()
    key, _, body = data.partition(b"\n")
    return key.decode("utf-8"), body


def _items(directory: Path) -> list[SpoolItem]:
    items = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(ITEM_SUFFIX) and name[: -len(ITEM_SUFFIX)].isdigit():
            items.append(SpoolItem(directory / name, int(name[: -len(ITEM_SUFFIX)])))
    items.sort(key=lambda item: item.seq)
    return items


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove_dir(directory: Path) -> None:
    """Remove an owner directory holding no payload (its lock file and stray .part files)."""
    for name in (LOCK_NAME, *(n for n in _listdir(directory) if n.endswith(".part"))):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    with contextlib.suppress(FileNotFoundError, OSError):
        directory.rmdir()


def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


class Adopted:
    """The directory of an exited process, locked by this one until :meth:`release`."""

    def __init__(self, directory: Path, lock_fd: int) -> None:
        self.directory = directory
        self._fd: int | None = lock_fd

    def items(self) -> list[SpoolItem]:
        return _items(self.directory)

    def release(self) -> None:
        """Remove the directory if it is empty, then drop its lock."""
        if self._fd is None:
            return
        if not self.items():
            _remove_dir(self.directory)
        os.close(self._fd)
        self._fd = None


class Spool:
    """This process's directory in the spool ``root`` (created, and locked, at once)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        owner = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}"
        staging = self.root / f".{owner}.new"
        staging.mkdir()
        lock = staging / LOCK_NAME
        lock.touch()
        fd = _try_lock(lock)
        assert fd is not None, "a new lock file is free"
        self._lock_fd: int | None = fd
        self.directory = self.root / owner
        os.replace(staging, self.directory)  # appears complete, lock already held
        _fsync_dir(self.root)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._seq = 0
        self._lock = threading.Lock()
        self._unsynced: list[Path] = []

    @property
    def owner(self) -> str:
        return self.directory.name

    def put(self, key: str, body: bytes, *, sync: bool = False) -> SpoolItem:
        """Write a payload atomically: written to a ``.part`` file, then renamed into place.

        Once this returns the payload survives the process being killed (the kernel has it). It is
        on stable storage (file and directory ``fsync``-ed) after :meth:`sync`, or at once with
        ``sync``.
        """
        if "\n" in key:
            raise ValueError("a spool key is one line")
        with self._lock:
            self._seq += 1
            seq = self._seq
            part = self.directory / f".{seq:012d}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, key.encode("utf-8") + b"\n")
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            final = self.directory / f"{seq:012d}{ITEM_SUFFIX}"
            os.replace(part, final)
            if sync:
                os.fsync(self._dir_fd)
            else:
                self._unsynced.append(final)
        return SpoolItem(final, seq)

    @property
    def dirty(self) -> bool:
        """Whether some payload written without ``sync`` is not on stable storage yet."""
        return bool(self._unsynced)

    def sync(self) -> int:
        """Put every payload written so far on stable storage (each file, then the directory)."""
        with self._lock:
            paths, self._unsynced = self._unsynced, []
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # delivered already
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if paths:
            os.fsync(self._dir_fd)
        return len(paths)

    def read(self, item: SpoolItem) -> tuple[str, bytes]:
        """The key and body of a payload (FileNotFoundError once it is delivered or rejected)."""
        return read_item(item.path)

    def pending(self) -> list[SpoolItem]:
        """This process's payloads not delivered yet, in order."""
        return _items(self.directory)

    def remove(self, item: SpoolItem) -> None:
        """Forget a delivered payload."""
        with contextlib.suppress(FileNotFoundError):
            item.path.unlink()

    def reject(self, item: SpoolItem, reason: str) -> Path:
        """Move a refused payload to ``rejected/`` with a ``.reason`` file beside it; its new path."""
        rejected = self.root / REJECTED_DIR
        rejected.mkdir(exist_ok=True)
        target = rejected / f"{item.owner}-{item.path.name}"
        os.replace(item.path, target)
        target.with_suffix(".reason").write_text(reason.rstrip() + "\n", encoding="utf-8")
        return target

    def adopt(self) -> Adopted | None:
        """The oldest directory of an exited process, locked for this one (None when there is none)."""
        for name in sorted(_listdir(self.root)):
            directory = self.root / name
            if name.startswith(".") or name == REJECTED_DIR or directory == self.directory:
                continue
            if not directory.is_dir():
                continue
            fd = _try_lock(directory / LOCK_NAME)
            if fd is None:
                if not (directory / LOCK_NAME).exists() and not _items(directory):
                    _remove_dir(directory)  # removed by its owner while we looked
                continue
            return Adopted(directory, fd)
        return None

    def waiting(self) -> int:
        """Payloads in the whole spool not delivered yet (every process's, rejected ones excluded)."""
        total = 0
        for name in _listdir(self.root):
            if not name.startswith(".") and name != REJECTED_DIR:
                total += len(_items(self.root / name))
        return total

    def close(self) -> None:
        """Drop this process's lock; its directory is removed when empty, else left for adoption."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            self.sync()
        os.close(self._dir_fd)
        if not self.pending():
            _remove_dir(self.directory)
        os.close(self._lock_fd)
        self._lock_fd = None


def iter_waiting(root: str | Path) -> Iterator[Path]:
    """Every payload waiting in a spool (all processes), owner by owner, in order."""
    base = Path(root)
    for name in sorted(_listdir(base)):
        if not name.startswith(".") and name != REJECTED_DIR:
            for item in _items(base / name):
                yield item.path


__all__ = [
    "ITEM_SUFFIX",
    "LOCK_NAME",
    "REJECTED_DIR",
    "Adopted",
    "Spool",
    "SpoolItem",
    "iter_waiting",
    "read_item",
]
