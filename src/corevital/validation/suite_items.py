"""The items of the validation suite (:mod:`corevital.validation.suite`), generated deterministically.

:func:`build_suite` writes the prompts of every kind from templates, a small built-in fact table
and a seeded generator; each item carries its kind, its group (the fact, operand pair, template or
question it comes from: paraphrases and number variants of one group stay in one split) and its
split (``dev`` or ``test``, by a hash of the group). Every kind mixes easier and harder items, so
that a small model both passes and fails some: well-known and obscure facts, one-digit sums and
two-digit products, one- and three-operation word problems, questions with and without an
invitation to say that they have no answer.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from corevital.validation.suite_prompts import (
    EASY_WORD_PROBLEMS,
    FACTS,
    HARD_FACTS,
    MORE_CAPITALS,
    MORE_OPEN_ENDED,
    MORE_UNANSWERABLE,
    OPEN_ENDED,
    OPEN_SUFFIXES,
    REPEAT_TEMPLATES,
    REPEAT_WORDS,
    TWO_STEP_SUFFIX,
    TWO_STEP_WORD_PROBLEMS,
    UNANSWERABLE,
    UNANSWERABLE_SUFFIXES,
    WORD_PROBLEMS,
)

SEED = 19
# kind -> new tokens generated
MAX_NEW_TOKENS: dict[str, int] = {
    "factual": 16,
    "arithmetic": 64,
    "word_problem": 96,
    "open_ended": 128,
    "requested_repetition": 96,
    "unanswerable": 32,
}

# fault kind -> (injector, arguments); the layer is chosen per prompt (early, middle, late in turn)
FAULTS: dict[str, tuple[str, dict[str, object]]] = {
    "fault_nan": ("nan", {}),
    "fault_scale": ("scale", {"factor": 1e4}),
    "fault_zero_norm_attention": ("zero_norm", {"which": "attention"}),
    "fault_zero_norm_mlp": ("zero_norm", {"which": "mlp"}),
    "fault_q_proj": ("scale", {"factor": 100.0, "module": "q_proj"}),
    "fault_attention_collapse": ("attention_collapse", {}),
}
FAULT_PROMPTS = 12  # faulted prompts per fault kind (the clean runs are the factual kind's)


@dataclass(frozen=True)
class SuiteItem:
    id: str
    kind: str
    prompt: str
    group: str
    split: str
    max_new_tokens: int
    answer: str | int | float | None = None
    accepted: tuple[str, ...] = ()
    target_word: str | None = None  # requested_repetition
    fault: str | None = None  # fault kinds: the injector
    fault_args: Mapping[str, object] = field(default_factory=dict)
    depth: str | None = None  # fault kinds: early | middle | late
    clean_of: str | None = None  # fault kinds: the id of the fault-free run of the same prompt


def split_of(group: str) -> str:
    """``dev`` or ``test`` by a hash of the group: every record of a group lands in one split."""
    return "dev" if hashlib.sha256(group.encode()).digest()[0] % 2 == 0 else "test"


def _item(kind: str, index: int, prompt: str, group: str, **extra: object) -> SuiteItem:
    group = f"{kind}:{group}"
    return SuiteItem(
        id=f"{kind}-{index:03d}",
        kind=kind,
        prompt=prompt,
        group=group,
        split=split_of(group),
        max_new_tokens=MAX_NEW_TOKENS.get(kind, MAX_NEW_TOKENS["factual"]),
        **extra,  # type: ignore[arg-type]
    )


def _factual() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    more = ("capital", (FACTS["capital"][0], MORE_CAPITALS))
    for table, (templates, facts) in [*FACTS.items(), *HARD_FACTS.items(), more]:
        for subject, answers in facts.items():
            for template in templates:
                items.append(
                    _item(
                        "factual",
                        len(items),
                        template.format(x=subject),
                        f"{table}:{subject}",
                        answer=answers[0],
                        accepted=answers[1:],
                    )
                )
    return items


# (operation, range of a, range of b), from easy to hard; the groups cycle through them
_ARITHMETIC_TIERS: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("+", (2, 9), (2, 9)),
    ("+", (10, 50), (10, 49)),
    ("-", (20, 99), (10, 19)),
    ("*", (2, 12), (2, 9)),
    ("+", (100, 999), (100, 999)),
    ("*", (12, 99), (12, 99)),
)


def _arithmetic(
    rng: random.Random, groups: int, first: int = 0, avoid: set[str] | None = None
) -> list[SuiteItem]:
    """``groups`` operand pairs (easy to hard in turn, :data:`_ARITHMETIC_TIERS`), two phrasings
    each; ``first``: the number of groups made before (ids and tiers go on from there). With
    ``avoid`` (groups made before), a pair already drawn is drawn again, and the new ones are added."""
    items: list[SuiteItem] = []
    for g in range(first, first + groups):
        op, (a0, a1), (b0, b1) = _ARITHMETIC_TIERS[g % len(_ARITHMETIC_TIERS)]
        a, b = rng.randint(a0, a1), rng.randint(b0, b1)
        while avoid is not None and f"arithmetic:{a}{op}{b}" in avoid:
            a, b = rng.randint(a0, a1), rng.randint(b0, b1)
        if avoid is not None:
            avoid.add(f"arithmetic:{a}{op}{b}")
        result = a + b if op == "+" else a - b if op == "-" else a * b
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        for template in ("What is {a} {w} {b}? Reply with the number only.", "Compute {a} {o} {b}."):
            prompt = template.format(a=a, b=b, w=word, o=op.replace("*", "×"))
            items.append(_item("arithmetic", 2 * first + len(items), prompt, f"{a}{op}{b}", answer=result))
    return items


def _evaluate(form: str, a: int, b: int, c: int) -> int:
    value: int = eval(form, {"__builtins__": {}}, {"a": a, "b": b, "c": c})  # noqa: S307 - our own templates
    return value


def _word_problems(rng: random.Random, per_template: int) -> list[SuiteItem]:
    """Three-operation problems (:data:`WORD_PROBLEMS`) and one-operation ones on small numbers
    (:data:`EASY_WORD_PROBLEMS`), ``per_template`` number sets each; a template is a group."""
    items: list[SuiteItem] = []
    for t, (template, form) in enumerate(WORD_PROBLEMS):
        for _ in range(per_template):
            while True:
                a, b, c = rng.randint(3, 40), rng.randint(2, 12), rng.randint(2, 30)
                result = _evaluate(form, a, b, c)
                if result > 0:
                    break
            prompt = template.format(a=a, b=b, c=c)
            items.append(_item("word_problem", len(items), prompt, f"t{t}", answer=result))
    return items + _easy_word_problems(rng, per_template, len(items))


def _easy_word_problems(rng: random.Random, per_template: int, first: int) -> list[SuiteItem]:
    """``per_template`` problems of every :data:`EASY_WORD_PROBLEMS` template, ids from ``first``."""
    items: list[SuiteItem] = []
    for t, (template, form) in enumerate(EASY_WORD_PROBLEMS):
        for _ in range(per_template):
            a, b = rng.randint(10, 20), rng.randint(2, 9)
            prompt = template.format(a=a, b=b)
            answer = _evaluate(form, a, b, 0)
            items.append(_item("word_problem", first + len(items), prompt, f"e{t}", answer=answer))
    return items


def _two_step_word_problems(rng: random.Random, per_template: int, first: int) -> list[SuiteItem]:
    """``per_template`` problems of every :data:`TWO_STEP_WORD_PROBLEMS` template (numbers 2-9, the
    answer asked as "Answer: N"), ids from ``first``; a template is a group."""
    items: list[SuiteItem] = []
    for t, (template, form) in enumerate(TWO_STEP_WORD_PROBLEMS):
        for _ in range(per_template):
            a, b, c = rng.randint(4, 9), rng.randint(2, 9), rng.randint(2, 4)
            prompt = template.format(a=a, b=b, c=c) + TWO_STEP_SUFFIX
            answer = _evaluate(form, a, b, c)
            items.append(_item("word_problem", first + len(items), prompt, f"s{t}", answer=answer))
    return items


def _open_ended() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    first = OPEN_ENDED[::3] + OPEN_ENDED[1::3] + OPEN_ENDED[2::3]
    for t, (style, prompt) in enumerate((*first, *MORE_OPEN_ENDED)):
        for suffix in OPEN_SUFFIXES:
            items.append(_item("open_ended", len(items), prompt + suffix, f"{style}{t}"))
    return items


def _requested_repetition() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for word in REPEAT_WORDS[:6]:
        for template in REPEAT_TEMPLATES:
            prompt = template.format(w=word)
            items.append(_item("requested_repetition", len(items), prompt, word, target_word=word))
    return items


def _unanswerable() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for t, question in enumerate((*UNANSWERABLE, *MORE_UNANSWERABLE)):
        for suffix in UNANSWERABLE_SUFFIXES:
            items.append(_item("unanswerable", len(items), question + suffix, f"q{t}"))
    return items


def fault_layers(num_layers: int) -> dict[str, int]:
    """The early, middle and late layer a fault goes into.

    Early is layer 1 and late is layer L − 2: the update ratio of layer 0 needs the embeddings and
    layer L − 1's reported state is taken after the final norm (docs/validation.md).
    """
    return {"early": 1, "middle": num_layers // 2, "late": max(1, num_layers - 2)}


def _faults(factual: Sequence[SuiteItem]) -> list[SuiteItem]:
    # one paraphrase per fact, so a fault kind sees FAULT_PROMPTS different facts (of every table)
    first = 2 * sum(len(facts) for _, facts in FACTS.values())  # the items of FACTS, not HARD_FACTS
    chosen = [item for item in factual[:first] if int(item.id.rsplit("-", 1)[1]) % 2 == 0][::2][
        :FAULT_PROMPTS
    ]
    items: list[SuiteItem] = []
    for kind, (injector, args) in FAULTS.items():
        for i, clean in enumerate(chosen):
            depth = ("early", "middle", "late")[i % 3]
            items.append(
                SuiteItem(
                    id=f"{kind}-{i:03d}",
                    kind=kind,
                    prompt=clean.prompt,
                    group=clean.group,
                    split=clean.split,
                    max_new_tokens=clean.max_new_tokens,
                    fault=injector,
                    fault_args=args,
                    depth=depth,
                    clean_of=clean.id,
                )
            )
    return items


def build_suite(seed: int = SEED) -> list[SuiteItem]:
    """Every item of the suite, in a fixed order (same seed, same items)."""
    rng = random.Random(seed)
    factual = _factual()
    arithmetic = [*_arithmetic(rng, 30), *_arithmetic(random.Random(seed + 1), 12, first=30)]
    return [
        *factual,
        *_faults(factual),
        *arithmetic,
        # more operand pairs, none repeated, so that a labelled model's calibration on one kind is
        # measured on a few hundred runs per split
        *_arithmetic(random.Random(seed + 4), 200, first=42, avoid={i.group for i in arithmetic}),
        *_unanswerable(),
        *_word_problems(rng, 3),
        *_easy_word_problems(random.Random(seed + 2), 2, first=60),
        *_two_step_word_problems(random.Random(seed + 3), 4, first=80),
        *_open_ended(),
        *_requested_repetition(),
    ]


__all__ = [
    "FAULTS",
    "FAULT_PROMPTS",
    "MAX_NEW_TOKENS",
    "SEED",
    "TWO_STEP_SUFFIX",
    "SuiteItem",
    "build_suite",
    "fault_layers",
    "split_of",
]
