"""``corevital serve``: the stored runs over a local, read-only HTTP API.

Everything is checked before anything listens: the store (opened read-only), the host (a
non-loopback address needs ``--token-file``), the port, the origins and the token. The server
then prints one line and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from corevital.errors import ConfigError, NotAvailableError
from corevital.server.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServeConfig,
    check_settings,
    is_loopback,
    loopback_hosts,
    path_spellings,
    read_token,
)
from corevital.sinks.sqlite_schema import DEFAULT_DB_PATH

if TYPE_CHECKING:
    from corevital.cli.live_runner import PipelineGenerator
    from corevital.sinks.base import ReportStore

MAX_WORKERS = 16


def _require_serve_extra() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise NotAvailableError(
            f"corevital serve needs {' and '.join(missing)}: pip install 'corevital[serve]'"
        )


def cmd_serve(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS} (got {args.workers})")
    if args.model is not None and args.workers > 1:
        raise ConfigError("--model: live runs are served by one process (leave out --workers)")
    token = read_token(args.token_file) if args.token_file else None
    origins = check_settings(args.host, args.port, args.allow_origins, token)
    _require_serve_extra()

    from corevital.server.runner import serve, url_of
    from corevital.sinks.open import is_postgres_url, open_location, redact_url
    from corevital.sinks.sqlite import SERVER_READERS

    def reopen() -> ReportStore:
        return open_location(args.db, read_only=True, readers=SERVER_READERS)

    # With --model the live runs' writable handle opens first: it creates the store if there is none.
    live = _live_generator(args.model, args.db) if args.model is not None else None
    store = reopen()
    if is_postgres_url(args.db):  # named by its URL without password; a client's db_path names no database
        label, spellings, shown = redact_url(args.db), frozenset[str](), redact_url(args.db)
    else:
        path = Path(args.db)
        label, spellings, shown = path.name, path_spellings(args.db, path.resolve()), args.db
    config = ServeConfig(
        store_label=label,
        store_paths=spellings,
        host=args.host,
        port=args.port,
        allow_origins=origins,
        token=token,
        allowed_hosts=loopback_hosts(args.host, args.port) if is_loopback(args.host) else None,
    )
    url = url_of(args.host, args.port)

    def announce() -> None:  # the address is bound: load the model (the longest step), then listen
        note = ""
        if live is not None:
            print(f"Loading {args.model} for live runs…", flush=True)
            live.load()
            note = f"; live runs of {live.model_id}"
        print(f"Serving {shown} at {url} (read-only{note})", flush=True)

    try:
        serve(
            store,
            config,
            access_log=args.access_log,
            announce=announce,
            workers=args.workers,
            reopen=reopen,
            live=live,
        )
    finally:
        if live is not None:
            live.close()
        store.close()
    return 0


def _live_generator(model: str, location: str) -> PipelineGenerator:
    """The dashboard's live runs of ``model``, stored in the served store through the generator's
    own writable handle (opened now; the model is loaded once the address is bound)."""
    from corevital.cli.live_runner import PipelineGenerator

    generator = PipelineGenerator(model, location)
    generator.open_store()
    return generator


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``serve``."""
    parser.add_argument(
        "--db",
        default=DEFAULT_DB_PATH,
        metavar="PATH|URL",
        help=f"The store to serve, opened read-only: a SQLite file (default: {DEFAULT_DB_PATH}) "
        "or a postgresql:// URL.",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"Address to listen on (default {DEFAULT_HOST}). Any non-loopback address needs --token-file.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}).")
    parser.add_argument(
        "--allow-origin",
        "--allow_origin",
        dest="allow_origins",
        action="append",
        default=[],
        metavar="URL",
        help="A web origin (https://host[:port]) whose pages may call the API (repeatable). "
        "Without it no CORS headers are sent.",
    )
    parser.add_argument(
        "--token-file",
        "--token_file",
        dest="token_file",
        metavar="FILE",
        help="File holding a bearer token (one word, 16+ characters) that every request must send "
        "as 'Authorization: Bearer <token>'. Required off loopback.",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="M",
        help="Load this model (a Hugging Face id, a local directory, or 'default' for the embedded "
        "SmolLM2-135M-Instruct) and turn on the dashboard's 'Try a prompt' form: live runs, stored "
        "in the served store. Without it the server only reads the store.",
    )
    parser.add_argument(
        "--access-log", "--access_log", dest="access_log", action="store_true", help="Log every request."
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help=f"Server processes sharing the port, each with the store open read-only "
        f"(1 to {MAX_WORKERS}; default 1).",
    )
    parser.set_defaults(handler=cmd_serve)
