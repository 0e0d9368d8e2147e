"""Running the application under uvicorn on a socket bound beforehand.

Binding first turns "address in use" or "cannot assign address" into one clear error before
anything is announced; uvicorn then serves on that socket until SIGINT or SIGTERM. With several
workers each forked process listens on its own socket bound to the same address (SO_REUSEPORT:
the kernel spreads connections over them), with its own read-only store and event loop; the
first process keeps the address bound, waits for them and passes a stop signal on.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

import uvicorn

from corevital.errors import ConfigError, StoreError
from corevital.server.app import create_app
from corevital.server.config import ServeConfig
from corevital.server.live import LiveGenerator
from corevital.sinks.base import ReportStore


def bind(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening); ConfigError if that fails.

    ``shared``: with ``SO_REUSEPORT``, so that workers can bind their own sockets to the same
    address (:func:`rebind`) and the kernel spreads new connections over them.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICSERV
        )[0]
    except (OSError, UnicodeError) as error:
        raise ConfigError(f"--host {host}: {getattr(error, 'strerror', None) or error}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def rebind(sock: socket.socket, backlog: int) -> socket.socket:
    """A listening socket of one worker, on the address of ``sock`` (bound with ``shared``)."""
    own = socket.socket(sock.family, sock.type, sock.proto)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(sock.getsockname())
    own.listen(backlog)
    return own


def url_of(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 addresses in brackets)."""
    name = host.strip("[]")
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, telling the application when a signal asks it to stop."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)


def serve(
    store: ReportStore,
    config: ServeConfig,
    *,
    access_log: bool = False,
    announce: Callable[[], None] | None = None,
    workers: int = 1,
    reopen: Callable[[], ReportStore] | None = None,
    live: LiveGenerator | None = None,
) -> None:
    """Serve ``store`` until interrupted; ``announce`` is called once the socket is bound.

    ``live``: the generator of the dashboard's live runs (one process only: not with ``workers``).

    With ``workers`` > 1 that many processes (forked after binding) listen on the address, each
    serving its own store from ``reopen()``; ``store`` itself is closed first (a database
    connection must not cross a fork).
    """
    sock = bind(config.host, config.port, shared=workers > 1)
    # What the first request would import (anyio's asyncio backend), imported now and, with
    # workers, before forking: serving opens no file but the store.
    importlib.import_module("anyio._backends._asyncio")
    try:
        if announce is not None:
            announce()
        if workers > 1:
            if live is not None:
                raise ValueError("live runs are served by one process: not with several workers")
            if reopen is None:
                raise ValueError("serving with several workers needs reopen")
            store.close()
            _serve_forked(sock, config, access_log, workers, reopen)
        else:
            _serve_on(sock, store, config, access_log, live)
    finally:
        sock.close()


class _WorkerStore:
    """The store of forked workers: each opens its own with ``reopen`` (:meth:`open`, after the
    fork), while the application around it is built once, before forking."""

    def __init__(self, reopen: Callable[[], ReportStore]) -> None:
        self._reopen = reopen
        self._store: ReportStore | None = None

    def open(self) -> None:
        self._store = self._reopen()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __getattr__(self, name: str) -> Any:
        if self._store is None:
            raise StoreError("the worker's store is not open")
        return getattr(self._store, name)


def _serve_on(
    sock: socket.socket,
    store: ReportStore,
    config: ServeConfig,
    access_log: bool,
    live: LiveGenerator | None = None,
) -> None:
    stopping = threading.Event()
    app = create_app(store, config, stopping=stopping, live=live)
    server = _Server(_uvicorn_config(app, config, access_log), stopping)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled: the normal end
        server.run(sockets=[sock])


def _uvicorn_config(app: Any, config: ServeConfig, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=access_log,
        lifespan="off",
        http="h11",  # bounds a request's head while parsing it (16 KiB); httptools does not
        proxy_headers=False,
        server_header=False,
        limit_concurrency=config.limits.max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=2,
    )


def _serve_forked(
    sock: socket.socket,
    config: ServeConfig,
    access_log: bool,
    workers: int,
    reopen: Callable[[], ReportStore],
) -> None:
    """Fork ``workers`` processes serving on ``sock``; forward SIGINT/SIGTERM and wait for them."""
    # Each worker listens on a socket of its own (SO_REUSEPORT): the kernel spreads connections
    # over them evenly, where one shared socket would let the first worker awake take them all.
    # ``sock`` keeps the address bound meanwhile (it never listens).
    # Everything is built and imported here, once: a worker then reads no file but its store.
    store = _WorkerStore(reopen)
    stopping = threading.Event()
    uvicorn_config = _uvicorn_config(
        create_app(cast(ReportStore, store), config, stopping=stopping), config, access_log
    )
    uvicorn_config.load()
    for module in ("uvicorn.loops.auto", "uvicorn.loops.asyncio", "encodings.idna"):
        importlib.import_module(module)
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: its own store, its own event loop; never returns
            code = 0
            try:
                store.open()
                own = rebind(sock, config.limits.max_connections)
                try:
                    with contextlib.suppress(KeyboardInterrupt):
                        _Server(uvicorn_config, stopping).run(sockets=[own])
                finally:
                    own.close()
                    store.close()
            except BaseException as error:  # noqa: BLE001 - one line, as the CLI writes errors
                print(f"corevital: error: server worker {os.getpid()}: {error}", file=sys.stderr, flush=True)
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed = 0
        for child in children:
            _, status = os.waitpid(child, 0)
            failed += os.waitstatus_to_exitcode(status) not in (0, -signal.SIGINT, -signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise StoreError(f"{failed} of {workers} server workers stopped with an error (see above)")
