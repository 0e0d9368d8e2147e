"""Delivering spooled payloads: the sender thread, its retries with backoff, and what an attempt came to.

The on-disk spool itself (:class:`Spool`, its layout and what its files guarantee) is in
:mod:`corevital.exporters.spool_files`; its names are re-exported here, so that the HTTP sink and
the Datadog exporter import everything from this module.

A :class:`SpoolSender` takes the payloads of a :class:`Spool` in the order they were put and hands
each to a deliver function (the HTTP sink's POST, Datadog's), which answers with an
:class:`Attempt`: delivered (the payload is deleted), rejected (moved to ``rejected/``, not
retried) or to retry, with exponential backoff and full jitter (:class:`Backoff`) and a
Retry-After honoured. While deliveries fail, the payloads written meanwhile are fsync-ed at least
every :data:`SYNC_INTERVAL_S` (see :mod:`corevital.exporters.spool_files` for what the files
guarantee). It also adopts the directories of exited processes and delivers what they left first.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from corevital.exporters.spool_files import (
    ITEM_SUFFIX,
    LOCK_NAME,
    REJECTED_DIR,
    Adopted,
    Spool,
    SpoolItem,
    iter_waiting,
    read_item,
)

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
"""While deliveries fail, payloads written are fsync-ed at least this often."""
RETRY_AFTER_MAX_S = 300.0
"""The longest wait a Retry-After header is honoured for (a longer one waits this long)."""


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
                key, body = self.spool.read(item)
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


__all__ = [
    "ITEM_SUFFIX",
    "LOCK_NAME",
    "REJECTED_DIR",
    "RETRY_AFTER_MAX_S",
    "SYNC_INTERVAL_S",
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
