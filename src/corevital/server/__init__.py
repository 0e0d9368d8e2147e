"""Server: ``corevital serve``, a read-only HTTP API over one report store. Never imports torch.

Modules: :mod:`~corevital.server.config` (``ServeConfig``, ``Limits`` and the checks made before
anything listens; no FastAPI), :mod:`~corevital.server.app` (``create_app(store, config)``),
:mod:`~corevital.server.api` (``/api/v1``), :mod:`~corevital.server.events` (the server-sent-event
feed), :mod:`~corevital.server.legacy` (the original dashboard's routes),
:mod:`~corevital.server.comparison` (digests and comparisons through :mod:`corevital.views`),
:mod:`~corevital.server.guard` (host, size, token and time checks),
:mod:`~corevital.server.cache` (listings answered from memory while the store is unchanged),
:mod:`~corevital.server.errors` (error bodies), :mod:`~corevital.server.models` (the OpenAPI
shapes) and :mod:`~corevital.server.runner` (uvicorn on a socket bound first). See docs/server.md.
"""
