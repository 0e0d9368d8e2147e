"""Can the default model solve the suite's two-step word problems when the prompt shows it how?

Runs the ten two-step templates of ``corevital.validation.suite_prompts.TWO_STEP_WORD_PROBLEMS``
on the default model (greedy, summary capture, CPU) under several answer formats and counts the
runs the suite's ``word_problem`` labeller passes: numbers 2-9 (two problems per template, seed 5)
with a worked example, equations asked for, or the suite's own "Answer: N" line; numbers 1-5
(three per template, seed 7) with the number only, "think step by step" or the calculation first.
Prints, per format, the share solved and the first outputs.

    .venv/bin/python bench/word_problem_formats.py
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from corevital.capture.loading import ModelSpec, load_model
from corevital.capture.runner import capture_prompts
from corevital.config import load_settings
from corevital.validation.suite_items import TWO_STEP_SUFFIX, SuiteItem, _evaluate, _two_step_word_problems
from corevital.validation.suite_labels import label
from corevital.validation.suite_prompts import TWO_STEP_WORD_PROBLEMS

EXAMPLE = (
    " Solve it step by step as in this example.\nExample: Ann has 3 pens. She buys 4 more and then gives "
    "away 2. How many pens does she have?\n3 + 4 = 7\n7 - 2 = 5\nAnswer: 5"
)
# (numbers, format name, suffix, new tokens)
FORMATS: tuple[tuple[str, str, str, int], ...] = (
    ("2-9", "worked example", EXAMPLE, 96),
    ("2-9", "equations asked for", " Write each step as an equation, then a last line 'Answer: N'.", 96),
    ("2-9", "the suite's 'Answer: N' line", TWO_STEP_SUFFIX, 96),
    ("1-5", "the number only", " Reply with the number only.", 16),
    (
        "1-5",
        "step by step, then 'The answer is N.'",
        " Think step by step, then write 'The answer is N.'",
        96,
    ),
    (
        "1-5",
        "the calculation first",
        " First write the calculation, for example 3 + 2 - 1 = 4, then the answer.",
        48,
    ),
)


def problems(numbers: str) -> list[tuple[str, int]]:
    """(problem, answer) pairs: the suite's own two-step problems (numbers 2-9), two per template
    (seed 5), without their answer-format suffix; or numbers 1-5, three per template (seed 7)."""
    if numbers == "2-9":
        suite = _two_step_word_problems(random.Random(5), 2, first=0)
        return [(item.prompt.removesuffix(TWO_STEP_SUFFIX), int(item.answer or 0)) for item in suite]
    rng = random.Random(7)
    out = []
    for template, form in TWO_STEP_WORD_PROBLEMS:
        for _ in range(3):
            a, b, c = rng.randint(2, 5), rng.randint(1, 4), rng.randint(1, 2)
            out.append((template.format(a=a, b=b, c=c), _evaluate(form, a, b, c)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=2, help="outputs printed per format")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(ModelSpec(device="cpu"))
    print("| numbers | format | solved | seconds |\n|---|---|---|---|")
    shown: list[str] = []
    for numbers, name, suffix, tokens in FORMATS:
        settings = load_settings(
            {
                "device": "cpu",
                "max_new_tokens": tokens,
                "temperature": 0.0,
                "batch_size": 16,
                "capture": "summary",
            },
            environ={},
        )
        items = problems(numbers)
        t0, solved = time.perf_counter(), 0
        for start in range(0, len(items), 16):
            chunk = items[start : start + 16]
            result = capture_prompts(loaded, [p + suffix for p, _ in chunk], settings)
            for (prompt, answer), seq in zip(chunk, result.sequences, strict=True):
                item = SuiteItem("x", "word_problem", prompt, "g", "dev", tokens, answer=answer)
                failed = label(item, seq.generated_text)
                solved += not failed
                if sum(line.startswith(f"{name}:") for line in shown) < args.show:
                    verdict = "fails" if failed else "passes"
                    shown.append(f"{name}: {seq.generated_text[:140]!r} (answer {answer}, {verdict})")
        print(
            f"| {numbers} | {name} | {solved} of {len(items)} | {time.perf_counter() - t0:.0f} |", flush=True
        )
    print("\n" + "\n".join(shown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
