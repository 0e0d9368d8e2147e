"""Placeholder, replaced by the command module's own implementation."""

from __future__ import annotations

import argparse

from corevital.errors import NotAvailableError


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """Not available yet."""

    def handler(args: argparse.Namespace) -> int:
        raise NotAvailableError(f"corevital {name} is not available in this version yet")

    parser.set_defaults(handler=handler)
