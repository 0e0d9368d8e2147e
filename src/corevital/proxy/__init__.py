"""Watching models served elsewhere: reports from OpenAI-compatible responses, and the reverse proxy.

:mod:`corevital.proxy.reports` turns a chat/completions response carrying per-token log-probabilities
into reports through the pipeline's analysis and builder (``capture.source = "logprobs"``);
:mod:`corevital.proxy.server` is ``corevital proxy``, an OpenAI-compatible reverse proxy that asks the
engine for those log-probabilities, passes the client exactly what it would have received, and
writes one report per choice when a response ends. Its parts: :mod:`~corevital.proxy.bodies`
(request/response bodies and headers), :mod:`~corevital.proxy.events` (server-sent events),
:mod:`~corevital.proxy.watch` (the policies that stop a stream), :mod:`~corevital.proxy.report_queue`
(the report worker), :mod:`~corevital.proxy.stats` (counters and added latency);
:mod:`corevital.proxy.llama_cpp` runs a GGUF in process (``corevital run --backend llama-cpp``).
"""
