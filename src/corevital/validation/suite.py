"""A validation suite of several failure kinds, generated deterministically (no downloads).

:func:`build_suite` writes the prompts of every kind from templates, a small built-in fact table
and a seeded generator; each item carries its kind, its group (the fact or template it comes from:
paraphrases and number variants of one group stay in one split) and its split (``dev`` or
``test``, by a hash of the group). :func:`label` judges an output by the kind's own rule:

- ``factual``: short factual questions (capitals, chemical symbols, authors, ...); failed unless
  the answer (or an accepted alias) appears as whole words in the output's first line
  (:func:`corevital.validation.answers.check_answer`, ``contains``).
- ``arithmetic``: 2–3 digit +, −, ×; failed unless the number the output gives as its answer
  (:func:`~corevital.validation.answer_text.extract_number`) equals the result.
- ``word_problem``: multi-step word problems (three operations); failed unless the **last** number
  in the output equals the result (the model may show its steps first; an output cut off before
  the result fails).
- ``open_ended``: lists, stories and explanations of 128 tokens, where small models degenerate;
  failed when the output's word-level repetition (:func:`word_repeat_rate`: the share of word
  3-grams that repeat an earlier one, numbers and list markers normalised away) is at least
  :data:`REPEAT_FAILURE_RATE`.
- ``requested_repetition``: "write X 50 times"; a loop is what was asked for, so the label is
  "did not comply": failed when X makes up less than half of the output's words. Reported
  separately: a good score stays low on these although they loop.
- ``unanswerable``: false-premise or unknowable questions; failed when the output asserts an
  answer, i.e. contains none of the words of :data:`DENIAL_WORDS` (no, not, never, cannot,
  unknown, fictional, ...), which a correction or a refusal needs.
- the injected-fault kinds (``fault_nan``, ``fault_scale``, ``fault_zero_norm_attention``,
  ``fault_zero_norm_mlp``, ``fault_q_proj``, ``fault_attention_collapse``): ordinary factual
  prompts run once with the fault (label 1) and once without (label 0); both runs share a group.
  :data:`FAULTS` says which injector and where; the runner (``bench/validation_suite.py``) applies it.

:func:`scores` gives the baselines of every run: sequence probability (−log₂ p), mean NLL, mean
and max entropy, minimum margin (negated: a smaller margin is more likely a failure), length and
the token 4-gram repeat rate, next to CoreVital's scores; :func:`kind_table` computes AUROC with
95% grouped bootstrap intervals per kind and pooled.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from corevital.analysis.evaluation import ConfidenceInterval, auroc, bootstrap_ci
from corevital.validation.answer_text import extract_number, find_numbers, same_number
from corevital.validation.answers import check_answer
from corevital.validation.labels import LabelledRecord

SEED = 19
REPEAT_FAILURE_RATE = 0.25
DENIAL_WORDS = (
    "no",
    "not",
    "never",
    "none",
    "nobody",
    "neither",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "isn't",
    "wasn't",
    "aren't",
    "weren't",
    "hasn't",
    "haven't",
    "won't",
    "unknown",
    "unable",
    "impossible",
    "fictional",
    "fictitious",
    "sorry",
    "myth",
    "incorrect",
    "false",
)

# kind -> new tokens generated
MAX_NEW_TOKENS: dict[str, int] = {
    "factual": 16,
    "arithmetic": 16,
    "word_problem": 48,
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

# (question templates, facts: subject -> answer and accepted aliases)
_FACTS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "capital": (
        ("What is the capital of {x}? Answer in one word.", "Name the capital city of {x}."),
        {
            "France": ("Paris",),
            "Japan": ("Tokyo",),
            "Italy": ("Rome",),
            "Germany": ("Berlin",),
            "Spain": ("Madrid",),
            "Egypt": ("Cairo",),
            "Canada": ("Ottawa",),
            "Australia": ("Canberra",),
            "Kenya": ("Nairobi",),
            "Peru": ("Lima",),
            "Norway": ("Oslo",),
            "Poland": ("Warsaw",),
            "Portugal": ("Lisbon",),
            "Greece": ("Athens",),
            "Turkey": ("Ankara",),
            "Chile": ("Santiago",),
        },
    ),
    "symbol": (
        ("What is the chemical symbol of {x}?", "Which chemical symbol stands for {x}?"),
        {
            "gold": ("Au",),
            "iron": ("Fe",),
            "sodium": ("Na",),
            "oxygen": ("O",),
            "silver": ("Ag",),
            "potassium": ("K",),
            "lead": ("Pb",),
        },
    ),
    "author": (
        ("Who wrote {x}? Answer with the name only.", "Name the author of the book {x}."),
        {
            "Hamlet": ("Shakespeare", "William Shakespeare"),
            "Pride and Prejudice": ("Austen", "Jane Austen"),
            "War and Peace": ("Tolstoy", "Leo Tolstoy"),
            "1984": ("Orwell", "George Orwell"),
            "Don Quixote": ("Cervantes", "Miguel de Cervantes"),
            "The Odyssey": ("Homer",),
            "Moby Dick": ("Melville", "Herman Melville"),
        },
    ),
}

_WORD_PROBLEMS: tuple[tuple[str, str], ...] = (
    (
        "A baker makes {a} loaves in the morning and {b} in the afternoon, then sells {c}. "
        "How many loaves are left?",
        "a+b-c",
    ),
    (
        "Tom has {a} marbles. He buys {b} bags with {c} marbles each. How many marbles does he have now?",
        "a+b*c",
    ),
    (
        "A school has {a} classes of {b} pupils. {c} pupils are absent today. How many pupils are present?",
        "a*b-c",
    ),
    (
        "Anna reads {a} pages a day for {b} days and then {c} more pages. How many pages did she read?",
        "a*b+c",
    ),
    (
        "A farmer has {a} cows and {b} sheep. He sells {c} sheep. How many animals does he have left?",
        "a+b-c",
    ),
    (
        "A shop has {a} boxes with {b} pens each. It sells {c} pens. How many pens remain?",
        "a*b-c",
    ),
    (
        "There are {a} red, {b} blue and {c} green balloons. How many balloons are there in all?",
        "a+b+c",
    ),
    (
        "A bus carries {a} people. At the first stop {b} get off and at the second {c} get on. "
        "How many people are on the bus?",
        "a-b+c",
    ),
    (
        "Each of {a} boxes holds {b} apples, and {c} apples are loose. How many apples are there?",
        "a*b+c",
    ),
    (
        "Sam saves {a} dollars a week for {b} weeks and spends {c} dollars. How much money is left?",
        "a*b-c",
    ),
)

_OPEN_ENDED: tuple[tuple[str, str], ...] = (
    ("list", "List twenty animals that live in the forest, one per line."),
    ("list", "Write a numbered list of 25 fruits."),
    ("list", "List thirty names of cities, one per line."),
    ("list", "Give me a long list of colours."),
    ("list", "Write a numbered list of things to pack for a holiday."),
    ("list", "List as many vegetables as you can."),
    ("list", "Write a bulleted list of 20 hobbies."),
    ("list", "List 25 words that rhyme with cat."),
    ("list", "Write a numbered list of 20 birds."),
    ("list", "List thirty musical instruments."),
    ("story", "Write a long story about a cat who wants to fly."),
    ("story", "Tell me a story about a robot who learns to cook."),
    ("story", "Write a story about a boy and his dog on a rainy day."),
    ("story", "Write a fairy tale about a princess and a dragon."),
    ("story", "Tell a long story about a journey across the sea."),
    ("story", "Write a story about a girl who finds a magic key."),
    ("story", "Write a bedtime story about the moon and the stars."),
    ("story", "Tell a story about a village where it never stops snowing."),
    ("story", "Write a story about two friends who build a treehouse."),
    ("story", "Write a long story about a lost teddy bear."),
    ("explain", "Explain in detail how a car engine works."),
    ("explain", "Explain why the sky is blue, step by step."),
    ("explain", "Explain how plants make their food."),
    ("explain", "Explain in detail how computers store data."),
    ("explain", "Explain the water cycle to a child."),
    ("explain", "Explain how a bicycle works."),
    ("explain", "Explain what gravity is and why things fall."),
    ("explain", "Explain how bread is made, in detail."),
    ("explain", "Explain how the heart pumps blood."),
    ("explain", "Explain how rain forms."),
)
_OPEN_SUFFIXES = ("", " Be thorough.")

_REPEAT_WORDS = (
    "apple",
    "hello",
    "blue",
    "sun",
    "tree",
    "yes",
    "cat",
    "river",
    "stone",
    "happy",
    "moon",
    "bread",
)
_REPEAT_TEMPLATES = (
    "Write the word {w} 50 times.",
    "Repeat the word '{w}' fifty times, separated by spaces.",
)

_UNANSWERABLE: tuple[str, ...] = (
    "What is the capital city of the Moon?",
    "Who was the first person to walk on Mars?",
    "In what year did Albert Einstein win his second Nobel Prize?",
    "What is the name of the ocean between France and Germany?",
    "Which king of the United States signed the Magna Carta?",
    "How many legs does a snake have on its back?",
    "What colour is the number seven when it sings?",
    "Who won the football World Cup in the year 3000?",
    "What is the phone number of the person reading this?",
    "What did Julius Caesar say in his first telephone call?",
    "Which planet in our solar system is made of cheese?",
    "What is the square root of a banana?",
    "When did the Eiffel Tower move to London?",
    "Who was the president of the Roman Empire in 1990?",
    "What is the name of the third sun of the Earth?",
    "How many wheels does a horse have?",
    "Which ocean is located in the middle of the Sahara desert?",
    "What is the chemical symbol of the element unobtainium?",
    "Who wrote Shakespeare's tenth play about the internet?",
    "In which year did dinosaurs build the pyramids?",
    "What is the exact number of grains of sand on Earth?",
    "Which country did Napoleon rule from the Moon?",
    "What is the airspeed of a pencil thinking about Tuesday?",
    "What was the name of Isaac Newton's smartphone?",
    "How many hours are in a day on the planet Vulcan?",
    "Which river flows through the city of Atlantis?",
    "Who is the current king of France?",
    "What did Mozart write on his computer?",
    "What is the largest city on Antarctica's tropical coast?",
    "What is the tallest mountain on the Moon of Venus?",
)
_UNANSWERABLE_SUFFIXES = ("", " Answer briefly.")


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
    for table, (templates, facts) in _FACTS.items():
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


def _arithmetic(rng: random.Random, n: int) -> list[SuiteItem]:
    items: list[SuiteItem] = []
    while len(items) < n:
        op = rng.choice("+-*")
        a, b = (
            (rng.randint(12, 99), rng.randint(12, 99))
            if op == "*"
            else (rng.randint(100, 999), rng.randint(10, 999))
        )
        result = a + b if op == "+" else a - b if op == "-" else a * b
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        group = f"{a}{op}{b}"
        for template in ("What is {a} {w} {b}? Answer with only the number.", "Compute {a} {o} {b}."):
            prompt = template.format(a=a, b=b, w=word, o=op.replace("*", "×"))
            items.append(_item("arithmetic", len(items), prompt, group, answer=result))
    return items[:n]


def _evaluate(form: str, a: int, b: int, c: int) -> int:
    value: int = eval(form, {"__builtins__": {}}, {"a": a, "b": b, "c": c})  # noqa: S307 - our own templates
    return value


def _word_problems(rng: random.Random, per_template: int) -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for t, (template, form) in enumerate(_WORD_PROBLEMS):
        for _ in range(per_template):
            while True:
                a, b, c = rng.randint(3, 40), rng.randint(2, 12), rng.randint(2, 30)
                result = _evaluate(form, a, b, c)
                if result > 0:
                    break
            prompt = template.format(a=a, b=b, c=c)
            items.append(_item("word_problem", len(items), prompt, f"t{t}", answer=result))
    return items


def _open_ended() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for t, (style, prompt) in enumerate(_OPEN_ENDED[::3] + _OPEN_ENDED[1::3]):
        for suffix in _OPEN_SUFFIXES:
            items.append(_item("open_ended", len(items), prompt + suffix, f"{style}{t}"))
    return items


def _requested_repetition() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for word in _REPEAT_WORDS[:6]:
        for template in _REPEAT_TEMPLATES:
            prompt = template.format(w=word)
            items.append(_item("requested_repetition", len(items), prompt, word, target_word=word))
    return items


def _unanswerable() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for t, question in enumerate(_UNANSWERABLE[:20]):
        for suffix in _UNANSWERABLE_SUFFIXES:
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
    chosen = [item for item in factual if int(item.id.rsplit("-", 1)[1]) % 2 == 0][::2][:FAULT_PROMPTS]
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
    return [
        *factual,
        *_faults(factual),
        *_arithmetic(rng, 40),
        *_unanswerable(),
        *_word_problems(rng, 4),
        *_open_ended(),
        *_requested_repetition(),
    ]


# --- labels ----------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?|\d+(?:[.,]\d+)*")


def words(text: str) -> list[str]:
    """Lower-case words of ``text``; every number (list markers included) becomes ``<n>``."""
    return ["<n>" if w[0].isdigit() else w.lower().replace("’", "'") for w in _WORD.findall(text)]


def repeat_rate(units: Sequence[object], n: int) -> float:
    """Share of the n-grams of ``units`` that repeat an earlier n-gram (0 for fewer than n units)."""
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def word_repeat_rate(text: str, n: int = 3) -> float:
    """Word-level repetition of an output: :func:`repeat_rate` of its word 3-grams, numbers as ``<n>``."""
    return repeat_rate(words(text), n)


def _last_number(text: str) -> float | None:
    found = find_numbers(text)
    return found[-1][1] if found else None


def label(item: SuiteItem, output: str) -> bool:
    """True when the output is a failure of the item's kind (see the module docstring)."""
    if item.fault is not None:
        return True
    if item.kind == "factual":
        record = LabelledRecord(
            id=item.id, prompt=item.prompt, answer=item.answer, accepted=list(item.accepted), match="contains"
        )
        return not check_answer(output, record)
    if item.kind == "arithmetic":
        got = extract_number(output, item.prompt)
        return got is None or not same_number(got, float(item.answer or 0))
    if item.kind == "word_problem":
        last = _last_number(output)
        return last is None or not same_number(last, float(item.answer or 0))
    if item.kind == "open_ended":
        return word_repeat_rate(output) >= REPEAT_FAILURE_RATE
    if item.kind == "requested_repetition":
        ws = words(output)
        return not ws or sum(w == item.target_word for w in ws) / len(ws) < 0.5
    if item.kind == "unanswerable":
        found = set(re.findall(r"[a-z']+", output.lower().replace("’", "'")))
        return not found & set(DENIAL_WORDS)
    raise ValueError(f"unknown kind {item.kind!r}")


# --- scores and tables -----------------------------------------------------------------------------

# (key, label); every score is oriented so that higher means "more likely failed"
SCORES: tuple[tuple[str, str], ...] = (
    ("risk_score", "risk_score (default, no profile)"),
    ("labelled_risk", "risk_score (shipped QA profile, labelled model)"),
    ("sequence_nll", "sequence probability (−log₂ p)"),
    ("mean_surprisal", "mean token NLL"),
    ("mean_entropy", "mean entropy"),
    ("max_entropy", "max entropy"),
    ("neg_min_margin", "min margin (negated)"),
    ("length", "generated length"),
    ("token_repeat_rate", "token 4-gram repeat rate"),
)
BASELINE_KEYS = tuple(key for key, _ in SCORES[2:])


def _num(value: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def baseline_scores(features: Mapping[str, float], token_ids: Sequence[int]) -> dict[str, float]:
    """The baselines of one run from its run features and generated token ids."""
    return {
        "sequence_nll": _num(features["sequence_nll"]),
        "mean_surprisal": _num(features["mean_surprisal"]),
        "mean_entropy": _num(features["mean_entropy"]),
        "max_entropy": _num(features["max_entropy"]),
        "neg_min_margin": -_num(features["min_margin"]),
        "length": _num(features["length"]),
        "token_repeat_rate": repeat_rate(list(token_ids), 4),
    }


@dataclass(frozen=True)
class ScoreAuroc:
    key: str
    label: str
    auroc: ConfidenceInterval


@dataclass(frozen=True)
class KindTable:
    kind: str
    split: str
    n: int
    failures: int
    rows: tuple[ScoreAuroc, ...]
    risk_quantiles: tuple[float, float, float, float, float]  # min, p25, median, p75, max

    def best_baseline(self) -> ScoreAuroc | None:
        rows = [r for r in self.rows if r.key in BASELINE_KEYS and math.isfinite(r.auroc.estimate)]
        return max(rows, key=lambda r: r.auroc.estimate) if rows else None

    def row(self, key: str) -> ScoreAuroc:
        return next(r for r in self.rows if r.key == key)


def kind_table(
    kind: str, split: str, runs: Sequence[Mapping[str, object]], *, n_resamples: int = 1000
) -> KindTable:
    """AUROC [95% grouped bootstrap CI] of every score on ``runs`` (dicts with ``failed``, ``group``
    and one entry per score key). NaN scores count as the lowest score (a baseline that cannot be
    computed says nothing)."""
    y = np.asarray([bool(r["failed"]) for r in runs], dtype=bool)
    groups = np.asarray([str(r["group"]) for r in runs])
    rows = []
    for key, text in SCORES:
        s = np.asarray([float(r[key]) for r in runs], dtype=np.float64)  # type: ignore[arg-type]
        s = np.where(np.isfinite(s), s, -1e9)
        if y.all() or not y.any():
            ci = ConfidenceInterval(math.nan, math.nan, math.nan)
        else:
            ci = bootstrap_ci(auroc, s, y, n_resamples=n_resamples, groups=groups)
        rows.append(ScoreAuroc(key, text, ci))
    risk = np.asarray([float(r["risk_score"]) for r in runs], dtype=np.float64)  # type: ignore[arg-type]
    q = np.quantile(risk, [0.0, 0.25, 0.5, 0.75, 1.0]) if risk.size else np.full(5, math.nan)
    return KindTable(
        kind=kind,
        split=split,
        n=len(runs),
        failures=int(y.sum()),
        rows=tuple(rows),
        risk_quantiles=(float(q[0]), float(q[1]), float(q[2]), float(q[3]), float(q[4])),
    )


def _ci(ci: ConfidenceInterval) -> str:
    if not math.isfinite(ci.estimate):
        return "–"
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def markdown_tables(tables: Sequence[KindTable]) -> str:
    """One Markdown table: a row per kind, a column per score (AUROC [95% CI])."""
    head = (
        "| kind | N (failed) | " + " | ".join(label for _, label in SCORES) + " | best baseline − default |"
    )
    lines = [head, "|" + "---|" * (len(SCORES) + 3)]
    for t in tables:
        best = t.best_baseline()
        gap = best.auroc.estimate - t.row("risk_score").auroc.estimate if best is not None else math.nan
        cells = " | ".join(_ci(r.auroc) for r in t.rows)
        lines.append(f"| {t.kind} | {t.n} ({t.failures}) | {cells} | {gap:+.3f} |")
    return "\n".join(lines)
