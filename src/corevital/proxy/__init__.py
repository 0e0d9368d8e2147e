"""Watching models served elsewhere: reports from OpenAI-compatible responses, and the reverse proxy.

:mod:`corevital.proxy.reports` turns a chat/completions response carrying per-token log-probabilities
into reports through the pipeline's analysis and builder (``capture.source = "logprobs"``);
:mod:`corevital.proxy.server` is ``corevital proxy``, an OpenAI-compatible reverse proxy that asks the
engine for those log-probabilities, passes the client exactly what it would have received, and
writes one report per choice when a response ends.
"""
