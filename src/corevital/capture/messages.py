"""Prompts as strings or chat messages (no torch: the library checks them before loading a model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from corevital.errors import InputError

Messages = Sequence[Mapping[str, str]]
"""A chat conversation: ``[{"role": "user", "content": "..."}, ...]``, rendered with the chat template."""

Prompt = str | Messages
"""A prompt string, or chat messages."""


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Chat messages as a list of ``{"role", "content"}`` dicts (an InputError when they are not)."""
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise InputError('chat messages are a non-empty list of {"role": ..., "content": ...} dicts')
    checked = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InputError(f'chat message {number} is not a {{"role": ..., "content": ...}} dict')
        content = message.get("content")
        if not isinstance(content, str):
            raise InputError(f"chat message {number} has no text content")
        checked.append({**message, "role": message["role"], "content": content})
    if not any(m["content"].strip() for m in checked):
        raise InputError("the chat messages are empty")
    return checked


def prompt_text(prompt: Prompt) -> str:
    """The text a report records as the prompt: the string, or one ``role: content`` line per message."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in check_messages(prompt))
