"""Request and response bodies and headers as the proxy forwards them.

``logprobs`` (and ``top_logprobs``) are added to a well-formed request the client sent without them
(:func:`prepare_body`) and removed again from what the client receives (:func:`strip_logprobs`),
the rewritten JSON in the engine's own style (:func:`dumps_like`); headers lose the hop-by-hop
ones (:func:`forward_headers`); an unreachable upstream is answered with an OpenAI-style error
(:func:`error_body`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the message's; host names the proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class Injection:
    """What the proxy added to a request body (removed again from the response)."""

    logprobs: bool  # the client did not ask for logprobs: they are removed from what it receives


def prepare_body(
    body: Mapping[str, Any], *, chat: bool, top_logprobs: int
) -> tuple[dict[str, Any], Injection]:
    """The body sent upstream: ``logprobs`` (and ``top_logprobs``) added when the client did not ask."""
    upstream = dict(body)
    if chat:
        if body.get("logprobs"):
            return upstream, Injection(logprobs=False)
        upstream["logprobs"] = True
        upstream["top_logprobs"] = top_logprobs
        return upstream, Injection(logprobs=True)
    if body.get("logprobs") is not None:
        return upstream, Injection(logprobs=False)
    upstream["logprobs"] = top_logprobs
    return upstream, Injection(logprobs=True)


def well_formed(document: Any, *, chat: bool) -> bool:
    """Whether a request body has the shape a generation needs (chat: a list of message objects;
    completions: a prompt string or list); only those get logprobs added and are observed."""
    if not isinstance(document, dict):
        return False
    if chat:
        messages = document.get("messages")
        return isinstance(messages, list) and bool(messages) and all(isinstance(m, dict) for m in messages)
    return isinstance(document.get("prompt"), str | list)


def strip_logprobs(document: Any) -> bool:
    """Set each choice's ``logprobs`` to null (where present); whether anything changed."""
    changed = False
    if isinstance(document, dict):
        for choice in document.get("choices") or []:
            if isinstance(choice, dict) and choice.get("logprobs") is not None:
                choice["logprobs"] = None
                changed = True
    return changed


def dumps_like(document: Any, original: bytes) -> bytes:
    """``document`` serialised in the style of ``original``: compact (vLLM, SGLang, llama.cpp,
    FastAPI), indented by 2 (OpenAI's own API) or Python's default ``", "`` and ``": "``
    (llama-cpp-python's streamed events), non-ASCII escaped or not."""
    ascii_only = b"\\u" in original and original.isascii()
    if b"\n  " in original.strip():
        text = json.dumps(document, indent=2, ensure_ascii=ascii_only)
    elif _spaced(original):
        text = json.dumps(document, ensure_ascii=ascii_only)
    else:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=ascii_only)
    return text.encode("utf-8")


_FIRST_KEY = re.compile(rb'\s*\{\s*"(?:[^"\\]|\\.)*"\s*:( ?)')


def _spaced(original: bytes) -> bool:
    """Whether a JSON object's first key is followed by ``": "`` (Python's default separators)."""
    match = _FIRST_KEY.match(original)
    return match is not None and match.group(1) == b" "


def forward_headers(headers: Mapping[str, str] | Any, *, drop: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Headers minus hop-by-hop ones (and those ``connection`` names) and ``drop``."""
    items = list(headers.items())
    named = {
        token.strip().lower()
        for key, value in items
        if key.lower() == "connection"
        for token in value.split(",")
    }
    skip = HOP_BY_HOP | named | set(drop)
    return [(key, value) for key, value in items if key.lower() not in skip]


def error_body(message: str, kind: str = "upstream_unavailable") -> bytes:
    """An OpenAI-style error object."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
