"""The llama.cpp capture backend: a GGUF file run in process through llama-cpp-python.

``--backend llama-cpp`` (the ``llama-cpp`` extra) decodes with llama.cpp's own kernels on the GGUF's
own (quantised) weights, one token at a time, and reads the full-vocabulary logits of every step
(``llama_get_logits_ith``). From each row :mod:`corevital.capture.host_logits` computes the logit
tier exactly as :mod:`corevital.metrics.logits` does from a transformers model's logits (entropy
in bits from the full softmax, margin, top-k mass, the most likely tokens, the chosen token's
surprisal), in float64 numpy on the host: no torch on this path.

Attention and hidden states are not observed (llama.cpp does not hand them out per layer); the
capture says so in its warnings, and the report marks them as not observed.

Loading the GGUF and preparing prompts: :mod:`corevital.capture.gguf` (llama-cpp-python is imported
only when a model loads; without it the error names the extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from corevital.capture.gguf import LlamaModel, model_record, prepare_prompt
from corevital.capture.host_logits import (
    LN2,
    FullChosenStats,
    FullLogitStats,
    RowStats,
    TokenChooser,
    row_stats,
)
from corevital.capture.messages import Prompt
from corevital.capture.records import (
    CaptureWarning,
    GenerationRecord,
    PromptRecord,
    RunCapture,
    SequenceCapture,
    generation_record,
    utc_timestamp,
)
from corevital.config import Settings
from corevital.errors import InputError

NOT_OBSERVED = (
    CaptureWarning(
        "ATTENTION_NOT_AVAILABLE",
        "attention is not observed when llama.cpp runs the model (llama-cpp backend)",
    ),
    CaptureWarning(
        "HIDDEN_STATES_NOT_AVAILABLE",
        "hidden states are not observed when llama.cpp runs the model (llama-cpp backend)",
    ),
)


StepHook = Callable[[int, int], bool]
"""``hook(step, token_id)`` after each chosen token; True stops the generation there."""


def generate_one(
    model: LlamaModel,
    prompt: PromptRecord,
    generation: GenerationRecord,
    *,
    topk: int,
    mass_k: int,
    batch_index: int = 0,
    batch_size: int = 1,
    hook: StepHook | None = None,
    forced: Sequence[int] | None = None,
) -> SequenceCapture:
    """Decode one prompt token by token and capture every step's full-vocabulary statistics.

    ``forced``: the tokens to take instead of choosing (teacher forcing: the statistics of another
    backend's output under this model); the generation is then as long as ``forced``.
    """
    llm, module = model.llm, model.module
    vocab = model.vocab_size
    chooser = TokenChooser(generation)
    started = time.perf_counter()
    started_at = utc_timestamp()
    llm.reset()
    llm.eval(prompt.token_ids)
    rows: list[RowStats] = []
    chosen: list[int] = []
    surprisal: list[float] = []
    sampling: list[tuple[float | None, float | None]] = []
    step_end_ms: list[float] = []
    finish = "length"
    stopped_at: int | None = None
    steps_wanted = len(forced) if forced is not None else generation.max_new_tokens
    for step in range(steps_wanted):
        pointer = module.llama_get_logits_ith(llm.ctx, -1)
        logits = np.array(np.ctypeslib.as_array(pointer, shape=(vocab,)), dtype=np.float32)
        stats = row_stats(logits, topk=topk, mass_k=mass_k)
        token, sampled_entropy, sampled_prob = chooser(logits)
        if forced is not None:
            token, sampled_entropy, sampled_prob = int(forced[step]), None, None
        rows.append(stats)
        chosen.append(token)
        surprisal.append(float(-stats.log_probs[token] / LN2))
        sampling.append((sampled_entropy, sampled_prob))
        step_end_ms.append((time.perf_counter() - started) * 1000.0)
        if hook is not None and hook(step, token):
            finish, stopped_at = "stopped_by_callback", step
            break
        if model.is_end(token) and not generation.ignore_eos and forced is None:
            finish = "eos"
            break
        if step + 1 < steps_wanted:
            llm.eval([token])
    elapsed = (time.perf_counter() - started) * 1000.0
    text_ids = [t for t in chosen if not model.is_end(t)]
    text = bytes(llm.detokenize(text_ids, prev_tokens=prompt.token_ids)).decode("utf-8", errors="replace")
    steps = len(rows)
    width = rows[0].top_ids.shape[0] if rows else min(topk, vocab)
    logit_stats = FullLogitStats(
        entropy=np.array([r.entropy for r in rows], dtype=np.float64),
        top_k_margin=np.array([r.margin for r in rows], dtype=np.float64),
        topk_mass=np.array([r.mass for r in rows], dtype=np.float64),
        topk_ids=np.array([r.top_ids for r in rows], dtype=np.int64).reshape(steps, width),
        topk_probs=np.array([r.top_probs for r in rows], dtype=np.float64).reshape(steps, width),
        log_normalizer=np.array([r.log_normalizer for r in rows], dtype=np.float64),
        has_nan=np.array([r.has_nan for r in rows], dtype=bool),
        has_inf=np.array([r.has_inf for r in rows], dtype=bool),
    )
    sampled = generation.do_sample and forced is None
    chosen_stats = FullChosenStats(
        token_ids=np.array(chosen, dtype=np.int64),
        surprisal=np.array(surprisal, dtype=np.float64),
        sampling_entropy=np.array([s[0] for s in sampling], dtype=np.float64) if sampled else None,
        sampling_prob=np.array([s[1] for s in sampling], dtype=np.float64) if sampled else None,
    )
    named = set(chosen) | {int(i) for i in logit_stats.topk_ids.reshape(-1)}
    return SequenceCapture(
        batch_index=batch_index,
        batch_size=batch_size,
        prompt=prompt,
        generated_token_ids=chosen,
        generated_text=text,
        finish_reason=finish,
        logits=logit_stats,
        chosen=chosen_stats,
        token_texts={i: model.token_text(i) for i in sorted(named)},
        warnings=list(NOT_OBSERVED),
        stopped_at_step=stopped_at,
        started_at_utc=started_at,
        generation_ms=elapsed,
        step_end_ms=step_end_ms,
    )


def capture_llama(
    model: LlamaModel,
    prompts: Sequence[Prompt],
    settings: Settings,
    *,
    first_index: int = 0,
    hook: StepHook | None = None,
) -> RunCapture:
    """Generate for each prompt in turn (llama.cpp decodes one sequence at a time here)."""
    if not prompts:
        raise InputError("no prompt given")
    if settings.num_beams != 1:
        raise InputError("--backend llama-cpp decodes greedily or by sampling: --num_beams must be 1")
    generation = generation_record(settings)
    started_at = utc_timestamp()
    t0 = time.perf_counter()
    prepared = [prepare_prompt(model, prompt, settings) for prompt in prompts]
    tokenize_ms = (time.perf_counter() - t0) * 1000.0
    sequences = []
    step_ms: list[float] = []
    for offset, prompt in enumerate(prepared):
        seq = generate_one(
            model,
            prompt,
            generation,
            topk=settings.topk,
            mass_k=settings.topk_mass_k,
            batch_index=first_index + offset,
            batch_size=len(prepared),
            hook=hook,
        )
        ends = seq.step_end_ms or []
        step_ms.extend(b - a for a, b in zip([0.0, *ends[:-1]], ends, strict=True))
        sequences.append(seq)
    return RunCapture(
        model=model_record(model),
        generation=generation,
        capture_mode="summary",
        entropy_mode="full",
        sequences=sequences,
        elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        started_at_utc=started_at,
        tokenize_ms=tokenize_ms,
        step_ms=step_ms,
    )
