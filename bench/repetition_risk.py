"""Risk of looping outputs vs ordinary text on the default model (SmolLM2-135M-Instruct), teacher-forced.

Each crafted output is tokenised with the default model's tokenizer and fed after its prompt through
the model in one forward pass; the per-token entropy, surprisal, margin and top-10 mass of the
model's own distribution over those tokens make the :class:`SequenceSignals` the analysis reads (no
per-layer data: what a summary capture keeps). Prints, per output: the risk, whether a loop was
found (level, period, unit), the factors, and the risk the same output gets when loops are looked
for on token ids only (word loops off), as before word-level detection.

    .venv/bin/python bench/repetition_risk.py
"""

from __future__ import annotations

import numpy as np
import torch

from corevital.analysis.diagnose import diagnose
from corevital.analysis.profiles import load_profile
from corevital.analysis.signals import SequenceSignals
from corevital.capture.loading import ModelSpec, load_model

BIRDS = ["Sparrow", "Robin", "Eagle", "Hawk", "Owl", "Crow", "Finch", "Wren", "Heron", "Swift"]
CASES: dict[str, tuple[str, str]] = {
    "looping list": ("Name ten birds.", " ".join(f"{i}. Sparrow" for i in range(1, 21))),
    "looping bullets": ("List some fruits.", "\n".join(["- Apple"] * 20)),
    "counter": ("Describe the procedure.", " ".join(f"Step {i}: mix the flour." for i in range(1, 16))),
    "one word changed": (
        "Tell me about animals.",
        " ".join(
            f"The {a} sat on the mat." for a in ["cat", "dog", "bird", "cow", "fox", "hen", "pig", "rat"]
        ),
    ),
    "distinct list": ("Name ten birds.", " ".join(f"{i}. {b}" for i, b in enumerate(BIRDS, 1))),
    "prose": (
        "Why is the sky blue?",
        "The sky looks blue because the molecules in the air scatter short wavelengths of sunlight more "
        "strongly than long ones. This effect, called Rayleigh scattering, sends blue light across the "
        "whole sky, while the sun itself looks slightly yellow.",
    ),
    "code": (
        "Write Python helpers for arithmetic.",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
        "def mul(a, b):\n    return a * b\n\n\ndef div(a, b):\n    if b == 0:\n        raise ValueError\n"
        "    return a / b\n",
    ),
    "requested repetition": ('Write "hello" 20 times.', " ".join(["hello"] * 20)),
}


def signals(loaded: object, prompt: str, output: str) -> SequenceSignals:
    tokenizer, model = loaded.tokenizer, loaded.model  # type: ignore[attr-defined]
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids[0]
    output_ids = tokenizer(output, add_special_tokens=False, return_tensors="pt").input_ids[0]
    ids = torch.cat([prompt_ids, output_ids]).unsqueeze(0)
    with torch.no_grad():
        logits = model(ids).logits[0, prompt_ids.numel() - 1 : -1].double()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1) / np.log(2)
    surprisal = -logp.gather(1, output_ids.unsqueeze(1)).squeeze(1) / np.log(2)
    top = p.topk(10, dim=-1).values
    n = output_ids.numel()
    return SequenceSignals(
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        architecture="LlamaForCausalLM",
        model_type="llama",
        num_layers=30,
        num_heads=9,
        prompt_text=prompt,
        prompt_tokens=prompt_ids.numel(),
        token_ids=output_ids.numpy().astype(np.int64),
        token_texts=[tokenizer.decode([int(t)]) for t in output_ids],
        entropy=entropy.numpy(),
        surprisal=surprisal.numpy(),
        top_k_margin=(top[:, 0] - top[:, 1]).numpy(),
        topk_mass=top.sum(-1).numpy(),
        perplexity=np.exp2(entropy.numpy()),
        logits_nan=np.zeros(n, dtype=bool),
        logits_inf=np.zeros(n, dtype=bool),
    )


def main() -> None:
    torch.manual_seed(0)
    loaded = load_model(ModelSpec(device="cpu"))
    profile = load_profile("llama")
    tokens_only = load_profile("llama", {"repetition.min_word_span": 10**6})
    print(f"{'output':22} {'tokens':>6} {'risk':>5} {'tokens-only risk':>16}  loop")
    for name, (prompt, output) in CASES.items():
        sig = signals(loaded, prompt, output)
        d = diagnose(sig, profile)
        before = diagnose(sig, tokens_only).risk.risk_score
        rep = d.repetition
        loop = "-"
        if rep.detected:
            loop = f"{rep.level}, period {rep.period_words or rep.period}, unit {rep.unit!r}, span {rep.span}"
            loop += ", requested" if rep.requested else ""
        print(f"{name:22} {sig.num_steps:>6} {d.risk.risk_score:5.2f} {before:16.2f}  {loop}")
        print(f"{'':22} factors: {', '.join(d.risk.risk_factors[:3]) or '(none)'}")


if __name__ == "__main__":
    main()
