"""An on-disk spool of payloads not delivered yet, and the thread that delivers them in order.

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
import email.utils
import fcntl
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)

ITEM_SUFFIX = ".item"
REJECTED_DIR = "rejected"
LOCK_NAME = ".lock"
SYNC_INTERVAL_S = 1.0
"""While deliveries fail, payloads written are fsync-ed at least this often."""
RETRY_AFTER_MAX_S = 300.0
"""The longest wait a Retry-After header is honoured for (a longer one waits this long)."""


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


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to: ``detail`` is a one-line description for the log."""

    outcome: Outcome
    detail: str
    status: int | None = None
    retry_after: float | None = None
    logged: bool = False
    """The deliver function has logged this failure itself (the sender logs it at debug only)."""


RETRIED_STATUSES = frozenset({408, 425, 429})


def outcome_of_status(status: int) -> Outcome:
    """2xx delivered; 5xx, 408, 425 and 429 retried; anything else (other 4xx, 3xx) rejected."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status in RETRIED_STATUSES:
        return Outcome.RETRY
    return Outcome.REJECTED


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


@dataclass
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random | None = None

    def delay(self, attempt: int) -> float:
        rng = self.rng or random
        return rng.uniform(0.0, min(self.cap, self.base * 2.0 ** min(attempt, 62)))


Deliver = Callable[[str, bytes], Attempt]
"""Sends one payload (its key and body) once; never raises for a failure of the far end."""


@dataclass
class SenderStats:
    delivered: int = 0
    rejected: int = 0
    failed_attempts: int = 0
    adopted: int = 0


class SpoolSender:
    """A daemon thread that delivers a :class:`Spool`'s payloads in order.

    It first drains the directories of exited processes (oldest first), then this process's own
    payloads as :meth:`put` adds them, looking for newly orphaned directories every ``rescan_s``.
    A payload is retried until it is delivered or rejected; :meth:`close` waits a bounded time for
    what is queued and leaves the rest on disk for the next process.
    """

    def __init__(
        self,
        spool: Spool,
        deliver: Deliver,
        *,
        name: str,
        backoff: Backoff | None = None,
        rescan_s: float = 5.0,
        tick: Callable[[], None] | None = None,
        logger: logging.Logger | None = None,
        sync_on_put: bool = False,
    ) -> None:
        self.spool = spool
        self.sync_on_put = sync_on_put
        self.deliver = deliver
        self.name = name
        self.backoff = backoff or Backoff()
        self.rescan_s = rescan_s
        self.tick = tick
        self.log = logger or log
        self.stats = SenderStats()
        self._queue: deque[SpoolItem] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"corevital-{name}-sender", daemon=True)
        self._thread.start()

    # --- the producer side -------------------------------------------------------------------
    def put(self, key: str, body: bytes) -> SpoolItem:
        """Spool a payload and queue it for delivery (the sender thread fsyncs it before sending,
        or this call does with ``sync_on_put``)."""
        with self._cond:
            item = self.spool.put(key, body, sync=self.sync_on_put)
            self._queue.append(item)
            self._cond.notify_all()
        return item

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being delivered (orphans included); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, wait_s: float) -> int:
        """Deliver what is queued for up to ``wait_s`` seconds, then stop; the payloads left on disk."""
        if self.tick is not None:
            with contextlib.suppress(Exception):
                self.tick()
        self.wait_idle(wait_s)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=wait_s + 5.0)
        left = len(self.spool.pending())
        self.spool.close()
        return left

    # --- the sender thread --------------------------------------------------------------------
    def _run(self) -> None:
        last_scan = -float("inf")
        while not self._stop.is_set():
            if time.monotonic() - last_scan >= self.rescan_s:
                last_scan = time.monotonic()
                try:
                    self._drain_orphans()
                except OSError as exc:  # the spool directory itself failing: try again later
                    self.log.error("%s: cannot read the spool %s: %s", self.name, self.spool.root, exc)
                continue
            with self._cond:
                if not self._queue:
                    self._cond.wait(self.rescan_s)
                if self._stop.is_set():
                    break
                item = self._queue.popleft() if self._queue else None
                self._busy = item is not None
            try:
                if item is None:
                    if self.tick is not None:
                        self._safe_tick()
                    continue
                try:
                    self._send(item)
                except OSError as exc:  # the spool failing (disk full, permissions): the item waits
                    self.log.error("%s: spool error on %s: %s", self.name, item.path, exc)
                    with self._cond:
                        self._queue.appendleft(item)
                    self._stop.wait(SYNC_INTERVAL_S)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _safe_tick(self) -> None:
        assert self.tick is not None
        try:
            self.tick()
        except Exception as exc:  # a bug in the tick must not end the thread
            self.log.warning("%s: %s", self.name, exc)

    def _drain_orphans(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._busy = True
            try:
                adopted = self.spool.adopt()
                if adopted is None:
                    return
                try:
                    items = adopted.items()
                    if items:
                        self.stats.adopted += len(items)
                        self.log.info(
                            "%s: delivering %d payload(s) left in %s by an earlier process",
                            self.name,
                            len(items),
                            adopted.directory,
                        )
                    for item in items:
                        if not self._send(item):
                            return
                finally:
                    adopted.release()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, item: SpoolItem) -> bool:
        """Deliver or reject one payload, retrying meanwhile; False when stopped before that."""
        attempt = 0
        while not self._stop.is_set():
            try:
                key, body = read_item(item.path)
            except FileNotFoundError:
                return True  # delivered by someone else already
            try:
                result = self.deliver(key, body)
            except Exception as exc:  # a bug in a deliver function is retried, not fatal
                result = Attempt(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
            if result.outcome is Outcome.DELIVERED:
                self.spool.remove(item)
                self.stats.delivered += 1
                if self._failing:
                    self._failing = False
                    self.log.info("%s: delivering again (%s)", self.name, result.detail)
                return True
            if result.outcome is Outcome.REJECTED:
                target = self.spool.reject(item, f"{result.detail}\nkey: {key}")
                self.stats.rejected += 1
                self.log.log(
                    logging.DEBUG if result.logged else logging.ERROR,
                    "%s: payload %s rejected, not retried: %s (kept in %s)",
                    self.name,
                    key,
                    result.detail,
                    target,
                )
                return True
            self.stats.failed_attempts += 1
            delay = self.backoff.delay(attempt)
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            if not self._failing:
                self._failing = True
                self.log.warning(
                    "%s: delivery failed (%s); retrying with backoff, payloads kept in %s",
                    self.name,
                    result.detail,
                    self.spool.root,
                )
            else:
                self.log.debug(
                    "%s: attempt %d failed (%s); next in %.2fs", self.name, attempt, result.detail, delay
                )
            attempt += 1
            if not self._wait_syncing(delay):
                return False
        return False

    def _wait_syncing(self, delay: float) -> bool:
        """Wait ``delay`` seconds (False when stopped meanwhile), putting what is written meanwhile
        on stable storage at least every :data:`SYNC_INTERVAL_S`: payloads that have to wait are
        fsync-ed; one delivered at its first attempt never needed to be."""
        deadline = time.monotonic() + delay
        while True:
            if self.spool.dirty:
                try:
                    self.spool.sync()
                except OSError as exc:
                    self.log.warning("%s: cannot fsync the spool %s: %s", self.name, self.spool.root, exc)
            left = deadline - time.monotonic()
            if left <= 0:
                return not self._stop.is_set()
            if self._stop.wait(min(left, SYNC_INTERVAL_S)):
                return False


def iter_waiting(root: str | Path) -> Iterator[Path]:
    """Every payload waiting in a spool (all processes), owner by owner, in order."""
    base = Path(root)
    for name in sorted(_listdir(base)):
        if not name.startswith(".") and name != REJECTED_DIR:
            for item in _items(base / name):
                yield item.path


__all__ = [
    "Adopted",
    "Attempt",
    "Backoff",
    "Deliver",
    "Outcome",
    "SenderStats",
    "Spool",
    "SpoolItem",
    "SpoolSender",
    "iter_waiting",
    "outcome_of_status",
    "parse_retry_after",
    "read_item",
]
