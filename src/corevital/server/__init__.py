"""Server: ``corevital serve``, the local HTTP API and the built-in dashboard."""
