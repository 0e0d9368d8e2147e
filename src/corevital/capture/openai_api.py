"""OpenAI-compatible requests and responses as CoreVital reads them: the prompt and decoding fields of
a request, each choice's tokens with their log-probabilities and listed alternatives (chat
``logprobs.content`` or completions ``logprobs.tokens/token_logprobs/top_logprobs``), and a streamed
response rebuilt from its chunks. Malformed logprobs are a :class:`LogprobsError`. No numpy, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class LogprobsError(ValueError):
    """A response that does not carry per-token log-probabilities in a known shape."""


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log-probability (nats) and the alternatives the engine listed."""

    token: str
    logprob: float | None  # None: the engine wrote no finite value (probability 0 or unknown)
    top: tuple[tuple[str, float | None], ...]


@dataclass(frozen=True)
class ChoiceLogprobs:
    """One choice of a response: the text, why it ended, its tokens."""

    index: int
    text: str
    finish_reason: str | None
    tokens: list[TokenLogprob]


@dataclass(frozen=True)
class ObservedRequest:
    """What the client asked for (the request body's decoding fields and its prompt as text)."""

    prompt: str
    chat: bool
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, prompt: str | None = None) -> ObservedRequest:
        chat = "messages" in body
        return cls(
            prompt=prompt if prompt is not None else prompt_text(body),
            chat=chat,
            temperature=_number(body.get("temperature")),
            top_p=_number(body.get("top_p")),
            max_tokens=_integer(body.get("max_completion_tokens", body.get("max_tokens"))),
            seed=_integer(body.get("seed")),
        )


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt of a request body as text: the completion prompt, or the chat's messages, one per
    line as ``role: content`` (content parts' text joined)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        lines = []
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
            lines.append(f"{message.get('role', '')}: {content if content is not None else ''}")
        return "\n".join(lines)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\n".join(str(p) for p in prompt)
    return "" if prompt is None else str(prompt)


def parse_choices(response: Mapping[str, Any]) -> list[ChoiceLogprobs]:
    """The choices of a chat or completions response (non-streaming shape), with their tokens.

    A choice without log-probabilities is a :class:`LogprobsError`.
    """
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise LogprobsError("the response has no choices")
    parsed = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            raise LogprobsError(f"choice {position} is not an object")
        index = choice.get("index", position)
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, Mapping):
            raise LogprobsError(f"choice {index} carries no logprobs")
        message = choice.get("message")
        if isinstance(message, Mapping) or "content" in logprobs:
            text = message.get("content") if isinstance(message, Mapping) else None
            tokens = _chat_tokens(logprobs.get("content"))
        else:
            text = choice.get("text")
            tokens = _completion_tokens(logprobs)
        finish = choice.get("finish_reason")
        parsed.append(
            ChoiceLogprobs(
                index=int(index) if isinstance(index, int) else position,
                text=text if isinstance(text, str) else "".join(t.token for t in tokens),
                finish_reason=finish if isinstance(finish, str) else None,
                tokens=tokens,
            )
        )
    return parsed


def choice_tokens(choice: Mapping[str, Any]) -> list[TokenLogprob]:
    """The tokens of one choice of a response or of a streamed chunk (none without logprobs)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, Mapping):
        return []
    if "content" in logprobs:
        return _chat_tokens(logprobs.get("content"))
    return _completion_tokens(logprobs)


def _chat_tokens(content: Any) -> list[TokenLogprob]:
    if content is None:
        return []
    if not isinstance(content, list):
        raise LogprobsError("logprobs.content is not a list")
    tokens = []
    for item in content:
        if not isinstance(item, Mapping):
            raise LogprobsError("a logprobs.content entry is not an object")
        top = item.get("top_logprobs") or []
        alternatives = tuple(
            (str(alt.get("token", "")), _logprob(alt.get("logprob")))
            for alt in top
            if isinstance(alt, Mapping)
        )
        tokens.append(TokenLogprob(str(item.get("token", "")), _logprob(item.get("logprob")), alternatives))
    return tokens


def _completion_tokens(logprobs: Mapping[str, Any]) -> list[TokenLogprob]:
    names = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    if not isinstance(names, list) or not isinstance(values, list) or not isinstance(tops, list):
        raise LogprobsError("logprobs.tokens, token_logprobs and top_logprobs must be lists")
    tokens = []
    for i, name in enumerate(names):
        top = tops[i] if i < len(tops) else None
        alternatives = (
            tuple((str(k), _logprob(v)) for k, v in top.items()) if isinstance(top, Mapping) else ()
        )
        tokens.append(TokenLogprob(str(name), _logprob(values[i] if i < len(values) else None), alternatives))
    return tokens


def _logprob(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number <= 0.0 + 1e-6 else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class StreamAccumulator:
    """Rebuilds a non-streaming response from the chunks of a streamed one (SSE ``data:`` objects).

    Chat chunks carry ``choices[i].delta.content`` and ``choices[i].logprobs.content``; completion
    chunks ``choices[i].text`` and ``choices[i].logprobs.{tokens, token_logprobs, top_logprobs}``.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.chat = False
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Mapping[str, Any]) -> None:
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = chunk["usage"]
        if chunk.get("object") == "chat.completion.chunk":
            self.chat = True
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0)
            slot = self._choices.setdefault(
                index if isinstance(index, int) else 0,
                {"text": [], "content": [], "tokens": [], "token_logprobs": [], "top_logprobs": []},
            )
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                self.chat = True
                if isinstance(delta.get("content"), str):
                    slot["text"].append(delta["content"])
            elif isinstance(choice.get("text"), str):
                slot["text"].append(choice["text"])
            if isinstance(choice.get("finish_reason"), str):
                slot["finish_reason"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, Mapping):
                if isinstance(logprobs.get("content"), list):
                    slot["content"].extend(logprobs["content"])
                for key in ("tokens", "token_logprobs", "top_logprobs"):
                    if isinstance(logprobs.get(key), list):
                        slot[key].extend(logprobs[key])

    def response(self) -> dict[str, Any]:
        """The response as a non-streaming call would have returned it (the fields CoreVital reads)."""
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            text = "".join(slot["text"])
            entry: dict[str, Any] = {"index": index, "finish_reason": slot.get("finish_reason")}
            if self.chat:
                entry["message"] = {"role": "assistant", "content": text}
                entry["logprobs"] = {"content": slot["content"]}
            else:
                entry["text"] = text
                entry["logprobs"] = {
                    "tokens": slot["tokens"],
                    "token_logprobs": slot["token_logprobs"],
                    "top_logprobs": slot["top_logprobs"],
                }
            choices.append(entry)
        response: dict[str, Any] = {"model": self.model, "choices": choices}
        if self.usage is not None:
            response["usage"] = dict(self.usage)
        return response
