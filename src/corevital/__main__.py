"""``python -m corevital``: the same command line as ``corevital``."""

from corevital.cli import main

raise SystemExit(main())
