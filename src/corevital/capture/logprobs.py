"""The logprobs capture backend: the logit tier of a generation from an OpenAI-compatible response.

Engines that serve models behind the OpenAI API (vLLM, SGLang, TGI, llama.cpp) return, per generated
token, its log-probability and up to 20 alternatives with theirs (``logprobs``, ``top_logprobs``).
From those this module computes the per-step statistics the report's logit tier holds, as numpy
arrays shaped like capture's (``[T]``, ``[T, k]``), and hands them to the report builder as a
:class:`~corevital.capture.records.RunCapture` with one sequence per choice:

- ``surprisal``: ``-log2 p`` of the chosen token (exact: the engine's own log-probability);
- ``top_k_margin``: ``p(1) - p(2)`` of the two most likely alternatives (NaN with fewer than two);
- ``topk_mass``: the sum of the ``mass_k`` largest probabilities available (fewer when fewer came);
- ``entropy_lower``: a lower bound, the known probabilities plus the remaining mass ``r`` counted as
  one token (merging outcomes never raises entropy); ``entropy_upper``: the remaining mass spread
  uniformly over the ``V - n`` other tokens of the vocabulary, when its size ``V`` is known (the
  largest entropy any distribution with these known probabilities can have);
- ``entropy``: the estimate the analysis reads, the midpoint of the two bounds when the vocabulary
  size is known (within half their width of the exact entropy), else the lower bound. On the
  labelled set the midpoint gives the shipped risk model the exact entropy's ranking and
  calibration, the lower bound under-predicts failure (docs/validation.md, the logprobs tier).

Attention and hidden states are not observed through the API; the capture says so in its warnings.
Token ids: OpenAI responses name tokens by their text, so ids are assigned per response, one per
distinct token text in order of first appearance, unless the engine writes tokens as ``token_id:N``
(vLLM's ``return_tokens_as_token_ids``), whose numbers are the vocabulary's ids.

Reading the requests and responses themselves: :mod:`corevital.capture.openai_api`. No torch: only
numpy and plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corevital.capture.capabilities import ModelCapabilities
from corevital.capture.host_logits import LN2
from corevital.capture.openai_api import ChoiceLogprobs, ObservedRequest, TokenLogprob, parse_choices
from corevital.capture.openai_api import LogprobsError as LogprobsError  # capture_response raises it
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


@dataclass(frozen=True)
class LogprobLogitStats:
    """The logit tier of one sequence from log-probabilities (same names as capture's LogitStats)."""

    entropy: np.ndarray  # [T] bits, the estimate: midpoint of the bounds (the lower bound without V)
    entropy_lower: np.ndarray  # [T] bits, lower bound
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


def entropy_estimate(lower: float, upper: float) -> float:
    """The entropy estimate (bits) from the bounds: their midpoint, or ``lower`` when ``upper`` is NaN."""
    return lower if math.isnan(upper) else (lower + upper) / 2.0


def logit_stats(
    tokens: Sequence[TokenLogprob], token_id: TokenIds, *, topk: int, mass_k: int, vocab_size: int | None
) -> tuple[LogprobLogitStats, LogprobChosenStats]:
    """The per-step arrays of one sequence's tokens."""
    steps = len(tokens)
    width = min([topk, *(len(t.top) for t in tokens)]) if tokens else 0
    entropy = np.full(steps, np.nan)
    lower = np.full(steps, np.nan)
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
            lower[step], upper[step], remaining[step] = step_bounds(probs, vocab_size)
            entropy[step] = entropy_estimate(lower[step], upper[step])
            mass[step] = float(probs[:mass_k].sum())
        if len(alternatives) >= 2:
            margin[step] = alternatives[0][1] - alternatives[1][1]
        for j, (text, p) in enumerate(alternatives[:width]):
            ids[step, j] = token_id(text)
            top_probs[step, j] = p
    flags = np.zeros(steps, dtype=bool)
    stats = LogprobLogitStats(
        entropy=entropy,
        entropy_lower=lower,
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
