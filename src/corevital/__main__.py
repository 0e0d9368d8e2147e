"""``python -m corevital``: the same command line as ``corevital``."""

from corevital.cli import console_main

console_main()
