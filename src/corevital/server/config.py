"""What ``corevital serve`` is started with, and the checks made before anything listens.

Nothing here imports FastAPI: the CLI validates its flags (and reports a missing ``serve`` extra)
before the web stack is loaded.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from corevital.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client can ask of the server."""

    max_body_bytes: int = 16 * 1024
    """Requests with a larger body are refused with 413 (every endpoint is a GET)."""
    max_url_chars: int = 8 * 1024
    """Longer request targets (path and query) are refused with 414."""
    request_timeout_s: float = 30.0
    """A request that takes longer is answered with 503 (event streams excepted)."""
    max_compare: int = 20
    """The most runs one comparison takes."""
    max_event_clients: int = 16
    """Concurrent event-stream clients; one more is answered with 503."""
    event_poll_s: float = 0.5
    """How often an event stream asks the store for new runs."""
    heartbeat_s: float = 15.0
    """How long an event stream may stay silent before it sends a comment line."""
    max_connections: int = 200
    """Concurrent connections uvicorn accepts before it answers 503."""
    cache_ttl_s: float = 1.0
    """How long a listing response may be answered from memory (0: never); see ``server/cache.py``."""
    cache_check_s: float = 0.25
    """How often the cache asks the store whether a run has landed."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything :func:`corevital.server.app.create_app` needs besides the store.

    ``store_label`` names the served store in messages (its file name: error bodies never carry a
    directory). ``store_paths`` are the spellings of the store's path that a client's ``db_path``
    (sent by the original dashboard) may use without being refused. ``allowed_hosts`` are the
    ``Host`` header values accepted (``None``: any), which keeps DNS-rebinding pages away from a
    loopback server.
    """

    store_label: str
    store_paths: frozenset[str] = frozenset()
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_origins: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    allowed_hosts: frozenset[str] | None = None
    limits: Limits = field(default_factory=Limits)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface: ``localhost``, 127.0.0.0/8 or ::1."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_port(port: int) -> int:
    """``port`` if it is a TCP port a server can listen on (1-65535); else ConfigError."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535 (got {port})")
    return port


def check_origin(origin: str) -> str:
    """``origin`` normalised (``scheme://host[:port]``, no path); ``*`` is kept; else ConfigError."""
    text = origin.strip()
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--allow-origin {origin!r} is not an origin such as https://dashboard.example")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"--allow-origin {origin!r}: an origin has no path, query or user")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def read_token(path: str | Path) -> str:
    """The bearer token in the file at ``path`` (surrounding whitespace removed); ConfigError if unusable."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        raise ConfigError(f"cannot read --token-file {path}: {reason}") from None
    if not token:
        raise ConfigError(f"--token-file {path} is empty")
    if len(token) < MIN_TOKEN_CHARS or any(char.isspace() for char in token):
        raise ConfigError(
            f"--token-file {path}: the token must be one word of at least {MIN_TOKEN_CHARS} characters "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def loopback_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values a loopback server answers: its names, with and without the port."""
    names = {*LOOPBACK_NAMES, host.strip("[]").lower()}
    values: set[str] = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        values.update((shown, f"{shown}:{port}"))
    return frozenset(values)


def path_spellings(given: str, resolved: Path) -> frozenset[str]:
    """The spellings of the served store's path that a client's ``db_path`` may use."""
    spellings = {given, os.path.normpath(str(resolved)), os.path.normpath(os.path.abspath(given))}
    return frozenset(spelling for spelling in spellings if spelling)


def check_settings(host: str, port: int, origins: list[str], token: str | None) -> tuple[str, ...]:
    """Check host, port and origins together; returns the normalised origins. ConfigError otherwise."""
    check_port(port)
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"--host {host} is not a loopback address: serving off this machine needs --token-file FILE "
            "(clients then send 'Authorization: Bearer <token>')"
        )
    normalised = tuple(dict.fromkeys(check_origin(origin) for origin in origins))
    if "*" in normalised and token is not None:
        raise ConfigError("--allow-origin '*' cannot be combined with --token-file: name the origins")
    return normalised
