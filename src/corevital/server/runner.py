"""Running the application under uvicorn on a socket bound beforehand.

Binding first turns "address in use" or "cannot assign address" into one clear error before
anything is announced; uvicorn then serves on that socket until SIGINT or SIGTERM.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from corevital.errors import ConfigError
from corevital.server.app import create_app
from corevital.server.config import ServeConfig
from corevital.sinks.base import ReportStore


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening); ConfigError if that fails."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICSERV
        )[0]
    except (OSError, UnicodeError) as error:
        raise ConfigError(f"--host {host}: {getattr(error, 'strerror', None) or error}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


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
) -> None:
    """Serve ``store`` until interrupted; ``announce`` is called once the socket is bound."""
    sock = bind(config.host, config.port)
    stopping = threading.Event()
    app = create_app(store, config, stopping=stopping)
    uvicorn_config = uvicorn.Config(
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
    server = _Server(uvicorn_config, stopping)
    try:
        if announce is not None:
            announce()
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: stopping is the normal end
        pass
    finally:
        sock.close()
