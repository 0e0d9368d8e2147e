"""The logprobs capture backend: the logit tier of a generation from an OpenAI-compatible response.

Engines that serve models behind the OpenAI API (vLLM, SGLang, TGI, llama.cpp) return, per generated
token, its log-probability and up to 20 alternatives with theirs (``logprobs``, ``top_logprobs``).
From those this module computes the per-step statistics the report's logit tier holds, as numpy
arrays shaped like capture's (``[T]``, ``[T, k]``), and hands them to the report builder as a
:class:`~corevital.capture.records.RunCapture` with one sequence per choice:

- ``surprisal``: ``-log2 p`` of the chosen token (exact: the engine's own log-probability);
- ``top_k_margin``: ``p(1) - p(2)`` of the two most likely alternatives (NaN with fewer than two);
- ``topk_mass``: the sum of the ``mass_k`` largest probabilities available (fewer when fewer came);
- ``entropy``: a lower bound, the known probabilities plus the remaining mass ``r`` counted as one
  token (merging outcomes never raises entropy); ``entropy_upper``: the remaining mass spread
  uniformly over the ``V - n`` other tokens of the vocabulary, when its size ``V`` is known (the
  largest entropy any distribution with these known probabilities can have).

Attention and hidden states are not observed through the API; the capture says so in its warnings.
Token ids: OpenAI responses name tokens by their text, so ids are assigned per response, one per
distinct token text in order of first appearance, unless the engine writes tokens as ``token_id:N``
(vLLM's ``return_tokens_as_token_ids``), whose numbers are the vocabulary's ids.

No torch: only numpy and plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.host_logits import LN2
from corevital.capture.records import (
    CaptureWarning,
    GenerationRecord,
    ModelRecord,
    PromptRecord,
    RunCapture,
    SequenceCapture,
)

TAIL_EPSILON = 1e-12  # remaining mass below this counts as none (float rounding of the known mass)
NOT_OBSERVED = (
    CaptureWarning(
        "ATTENTION_NOT_AVAILABLE",
        "attention is not observed through an OpenAI-compatible API (logprobs capture)",
    ),
    CaptureWarning(
        "HIDDEN_STATES_NOT_AVAILABLE",
        "hidden states are not observed through an OpenAI-compatible API (logprobs capture)",
    ),
)
# OpenAI finish reasons -> the report's (``stop`` and the others end the generation as an EOS does)
FINISH_REASONS = {"length": "length"}


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
class LogprobLogitStats:
    """The logit tier of one sequence from log-probabilities (same names as capture's LogitStats)."""

    entropy: np.ndarray  # [T] bits, lower bound
    entropy_upper: np.ndarray  # [T] bits, upper bound (NaN when the vocabulary size is unknown)
    top_k_margin: np.ndarray  # [T]
    topk_mass: np.ndarray  # [T]
    remaining_mass: np.ndarray  # [T] 1 - the known probabilities
    topk_ids: np.ndarray  # [T, k]
    topk_probs: np.ndarray  # [T, k]
    has_nan: np.ndarray  # [T] bool
    has_inf: np.ndarray  # [T] bool


@dataclass(frozen=True)
class LogprobChosenStats:
    """The chosen token of each step (same names as capture's ChosenTokenStats)."""

    token_ids: np.ndarray  # [T]
    surprisal: np.ndarray  # [T] bits
    sampling_entropy: None = None
    sampling_prob: None = None


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


@dataclass
class LogprobCapture:
    """A response turned into a capture, with what the report records of the logprobs tier."""

    run: RunCapture
    choices: list[ChoiceLogprobs]
    stats: list[LogprobLogitStats]
    alternatives: int  # the most alternatives listed at any step
    vocab_size: int | None
    endpoint: str  # chat.completions | completions
    vocabulary_ids: bool  # token ids are the vocabulary's (token_id:N), not per-response
    prompt_tokens: int | None
    upstream_finish_reasons: list[str | None] = field(default_factory=list)


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


class TokenIds:
    """Token texts -> ids: ``token_id:N`` as N, others numbered per response in order of appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.texts: dict[int, str] = {}
        self.vocabulary = True

    def __call__(self, token: str) -> int:
        if token not in self.ids:
            number = _vocabulary_id(token)
            if number is None:
                self.vocabulary = False
            self.ids[token] = number if number is not None else len(self.ids)
        token_id = self.ids[token]
        self.texts.setdefault(token_id, token)
        return token_id


def _vocabulary_id(token: str) -> int | None:
    prefix = "token_id:"
    if token.startswith(prefix) and token[len(prefix) :].isdigit():
        return int(token[len(prefix) :])
    return None


def step_bounds(known: np.ndarray, vocab_size: int | None) -> tuple[float, float, float]:
    """Entropy bounds (bits) of a distribution of which the probabilities ``known`` are known.

    Returns ``(lower, upper, remaining)``: ``lower`` counts the remaining mass ``r = 1 - Σ known``
    as one token; ``upper`` spreads it uniformly over the ``vocab_size - n`` other tokens (NaN
    when ``vocab_size`` is unknown; equal to ``lower`` when nothing remains).
    """
    probs = known[known > 0.0]
    base = float(-(probs * np.log2(probs)).sum()) if probs.size else 0.0
    remaining = max(0.0, 1.0 - float(known.sum()))
    if remaining <= TAIL_EPSILON:
        return base, base, remaining
    lower = base - remaining * math.log2(remaining)
    others = (vocab_size - known.size) if vocab_size is not None else 0
    if vocab_size is None or others < 1:
        return lower, (math.nan if vocab_size is None else lower), remaining
    return lower, lower + remaining * math.log2(others), remaining


def logit_stats(
    tokens: Sequence[TokenLogprob], token_id: TokenIds, *, topk: int, mass_k: int, vocab_size: int | None
) -> tuple[LogprobLogitStats, LogprobChosenStats]:
    """The per-step arrays of one sequence's tokens."""
    steps = len(tokens)
    width = min([topk, *(len(t.top) for t in tokens)]) if tokens else 0
    entropy = np.full(steps, np.nan)
    upper = np.full(steps, np.nan)
    margin = np.full(steps, np.nan)
    mass = np.full(steps, np.nan)
    remaining = np.full(steps, np.nan)
    surprisal = np.full(steps, np.nan)
    ids = np.zeros((steps, width), dtype=np.int64)
    top_probs = np.zeros((steps, width))
    chosen = np.zeros(steps, dtype=np.int64)
    for step, token in enumerate(tokens):
        chosen[step] = token_id(token.token)
        alternatives = sorted(
            ((text, math.exp(lp)) for text, lp in token.top if lp is not None), key=lambda a: -a[1]
        )
        # alternatives are kept one by one (distinct tokens may share a text); the chosen token
        # counts once more only when no alternative has its text (sampled outside the top list)
        known = [p for _, p in alternatives]
        if token.logprob is not None:
            if all(text != token.token for text, _ in alternatives):
                known.append(math.exp(token.logprob))
            surprisal[step] = -token.logprob / LN2
        probs = np.sort(np.asarray(known, dtype=np.float64))[::-1]
        if probs.size:
            entropy[step], upper[step], remaining[step] = step_bounds(probs, vocab_size)
            mass[step] = float(probs[:mass_k].sum())
        if len(alternatives) >= 2:
            margin[step] = alternatives[0][1] - alternatives[1][1]
        for j, (text, p) in enumerate(alternatives[:width]):
            ids[step, j] = token_id(text)
            top_probs[step, j] = p
    flags = np.zeros(steps, dtype=bool)
    stats = LogprobLogitStats(
        entropy=entropy,
        entropy_upper=upper,
        top_k_margin=margin,
        topk_mass=mass,
        remaining_mass=remaining,
        topk_ids=ids,
        topk_probs=top_probs,
        has_nan=flags,
        has_inf=flags.copy(),
    )
    return stats, LogprobChosenStats(token_ids=chosen, surprisal=surprisal)


def capture_response(
    response: Mapping[str, Any],
    request: ObservedRequest,
    *,
    topk: int,
    mass_k: int,
    vocab_size: int | None = None,
    elapsed_ms: float = 0.0,
    started_at_utc: str = "",
) -> LogprobCapture:
    """A :class:`RunCapture` of an OpenAI chat/completions response: one sequence per choice."""
    choices = parse_choices(response)
    model = response.get("model")
    usage = response.get("usage")
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    record = ModelRecord(
        hf_id=model if isinstance(model, str) and model else "unknown",
        revision=None,
        source="hub",  # the report builder's placeholder; the logprobs report writes none
        gguf_file=None,
        dtype="unknown",
        device="remote",
        quantization=None,
        capabilities=remote_capabilities(vocab_size),
    )
    temperature = request.temperature
    generation = GenerationRecord(
        do_sample=temperature is None or temperature > 0,
        temperature=temperature if temperature is None or temperature > 0 else None,
        top_k=None,
        top_p=request.top_p,
        num_beams=1,
        early_stopping=False,
        max_new_tokens=request.max_tokens or max((len(c.tokens) for c in choices), default=0),
        seed=request.seed if request.seed is not None else 0,
    )
    prompt = PromptRecord(
        text=request.prompt, model_text=request.prompt, token_ids=[], chat_template_applied=request.chat
    )
    sequences: list[SequenceCapture] = []
    all_stats: list[LogprobLogitStats] = []
    vocabulary = True
    for choice in choices:
        token_id = TokenIds()
        stats, chosen = logit_stats(choice.tokens, token_id, topk=topk, mass_k=mass_k, vocab_size=vocab_size)
        vocabulary = vocabulary and token_id.vocabulary
        all_stats.append(stats)
        sequences.append(
            SequenceCapture(
                batch_index=choice.index,
                batch_size=len(choices),
                prompt=prompt,
                generated_token_ids=[int(i) for i in chosen.token_ids],
                generated_text=choice.text,
                finish_reason=FINISH_REASONS.get(choice.finish_reason or "", "eos"),
                logits=stats,
                chosen=chosen,
                token_texts=dict(token_id.texts),
                warnings=list(NOT_OBSERVED),
                started_at_utc=started_at_utc or None,
                generation_ms=elapsed_ms,
            )
        )
    run = RunCapture(
        model=record,
        generation=generation,
        capture_mode="summary",
        entropy_mode="topk_approx",  # the builder's placeholder; the logprobs report records its bounds
        sequences=sequences,
        elapsed_ms=elapsed_ms,
        started_at_utc=started_at_utc,
    )
    return LogprobCapture(
        run=run,
        choices=choices,
        stats=all_stats,
        alternatives=max((len(t.top) for c in choices for t in c.tokens), default=0),
        vocab_size=vocab_size,
        endpoint="chat.completions" if request.chat else "completions",
        vocabulary_ids=vocabulary and any(c.tokens for c in choices),
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        upstream_finish_reasons=[c.finish_reason for c in choices],
    )


def remote_capabilities(vocab_size: int | None) -> ModelCapabilities:
    """What is known of a model served behind an API: nothing but, perhaps, its vocabulary size."""
    return ModelCapabilities(
        architecture="unknown",
        model_type="unknown",
        is_encoder_decoder=False,
        num_layers=0,
        num_encoder_layers=None,
        num_attention_heads=0,
        num_key_value_heads=0,
        hidden_size=0,
        vocab_size=vocab_size or 0,
        context_length=None,
        is_moe=False,
        num_experts=None,
        num_experts_per_token=None,
        sliding_window=None,
    )


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
