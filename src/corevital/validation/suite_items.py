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

# facts a 135M model often gets wrong (the fault kinds draw only on _FACTS)
_HARD_FACTS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "capital": (
        _FACTS["capital"][0],
        {
            "Burkina Faso": ("Ouagadougou",),
            "Kazakhstan": ("Astana",),
            "Myanmar": ("Naypyidaw", "Nay Pyi Taw"),
            "Nigeria": ("Abuja",),
            "Brazil": ("Brasília", "Brasilia"),
            "Switzerland": ("Bern", "Berne"),
            "New Zealand": ("Wellington",),
            "Morocco": ("Rabat",),
            "Vietnam": ("Hanoi", "Ha Noi"),
            "Pakistan": ("Islamabad",),
            "Tanzania": ("Dodoma",),
            "Mongolia": ("Ulaanbaatar", "Ulan Bator"),
            "Bhutan": ("Thimphu",),
            "Iceland": ("Reykjavik", "Reykjavík"),
            "Uruguay": ("Montevideo",),
        },
    ),
    "symbol": (
        _FACTS["symbol"][0],
        {"tungsten": ("W",), "mercury": ("Hg",), "tin": ("Sn",), "antimony": ("Sb",), "copper": ("Cu",)},
    ),
    "author": (
        _FACTS["author"][0],
        {
            "The Brothers Karamazov": ("Dostoevsky", "Dostoyevsky", "Fyodor Dostoevsky"),
            "Middlemarch": ("George Eliot", "Eliot"),
            "The Trial": ("Kafka", "Franz Kafka"),
            "Madame Bovary": ("Flaubert", "Gustave Flaubert"),
            "One Hundred Years of Solitude": ("García Márquez", "Garcia Marquez", "Márquez", "Marquez"),
            "Frankenstein": ("Mary Shelley", "Shelley"),
            "Dracula": ("Bram Stoker", "Stoker"),
        },
    ),
}

# (template, result formula): three operations
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

# (template, result formula): one operation on small numbers, which the model often gets right
_EASY_WORD_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("Lisa has {a} stickers. She gets {b} more. How many stickers does she have now?", "a+b"),
    ("Sam has {a} dollars and spends {b}. How much money does he have left?", "a-b"),
    ("There are {a} birds on a tree. {b} fly away. How many birds are left?", "a-b"),
    ("A box has {a} red balls and {b} blue balls. How many balls are in the box?", "a+b"),
    ("Each bag has {a} candies. How many candies are in {b} bags?", "a*b"),
    ("Mia has {a} pencils and Leo has {b} pencils. How many pencils do they have together?", "a+b"),
    ("A class has {a} girls and {b} boys. How many children are in the class?", "a+b"),
    ("Ben had {a} cookies and ate {b}. How many cookies are left?", "a-b"),
    ("A pack has {a} pens. How many pens are in {b} packs?", "a*b"),
    ("Jo walks {a} km on Monday and {b} km on Tuesday. How many km did Jo walk?", "a+b"),
)

# Two small steps on numbers 2-9, with the answer's form asked for ("Answer: N"), so that a small model
# solves some of them (it fails almost every three-operation problem and most one-operation ones).
_TWO_STEP_WORD_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("Tom has {a} apples. He buys {b} more and then eats {c}. How many apples does he have?", "a+b-c"),
    (
        "A shelf has {a} books. Ana puts {b} more on it, then {c} more. How many books are on the shelf?",
        "a+b+c",
    ),
    ("There are {a} cats and {b} dogs in a yard. {c} cats leave. How many animals are in the yard?", "a+b-c"),
    ("Kim has {a} coins. She finds {b} coins and loses {c}. How many coins does she have?", "a+b-c"),
    ("A bus has {a} people. {b} get on and {c} get off. How many people are on the bus?", "a+b-c"),
    (
        "Max reads {a} pages on Monday, {b} on Tuesday and {c} on Wednesday. How many pages did he read?",
        "a+b+c",
    ),
    (
        "A jar has {a} sweets. Eva adds {b} sweets and then {c} sweets. How many sweets are in the jar?",
        "a+b+c",
    ),
    ("Sara has {a} flowers. She picks {b} more and gives {c} away. How many flowers does she have?", "a+b-c"),
    ("A farm has {a} cows, {b} pigs and {c} goats. How many animals are on the farm?", "a+b+c"),
    (
        "Leo has {a} toy cars. He gets {b} more and gives {c} to his sister. How many cars does he have?",
        "a+b-c",
    ),
)
TWO_STEP_SUFFIX = " End your reply with a line of the form 'Answer: N'."

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
# the third suffix invites a denial, so that the kind has both outcomes
_UNANSWERABLE_SUFFIXES = ("", " Answer briefly.", " If the question has no true answer, say so.")


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
    for table, (templates, facts) in [*_FACTS.items(), *_HARD_FACTS.items()]:
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
    """Three-operation problems (:data:`_WORD_PROBLEMS`) and one-operation ones on small numbers
    (:data:`_EASY_WORD_PROBLEMS`), ``per_template`` number sets each; a template is a group."""
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
    return items + _easy_word_problems(rng, per_template, len(items))


def _easy_word_problems(rng: random.Random, per_template: int, first: int) -> list[SuiteItem]:
    """``per_template`` problems of every :data:`_EASY_WORD_PROBLEMS` template, ids from ``first``."""
    items: list[SuiteItem] = []
    for t, (template, form) in enumerate(_EASY_WORD_PROBLEMS):
        for _ in range(per_template):
            a, b = rng.randint(10, 20), rng.randint(2, 9)
            prompt = template.format(a=a, b=b)
            answer = _evaluate(form, a, b, 0)
            items.append(_item("word_problem", first + len(items), prompt, f"e{t}", answer=answer))
    return items


def _two_step_word_problems(rng: random.Random, per_template: int, first: int) -> list[SuiteItem]:
    """``per_template`` problems of every :data:`_TWO_STEP_WORD_PROBLEMS` template (numbers 2-9, the
    answer asked as "Answer: N"), ids from ``first``; a template is a group."""
    items: list[SuiteItem] = []
    for t, (template, form) in enumerate(_TWO_STEP_WORD_PROBLEMS):
        for _ in range(per_template):
            a, b, c = rng.randint(4, 9), rng.randint(2, 9), rng.randint(2, 4)
            prompt = template.format(a=a, b=b, c=c) + TWO_STEP_SUFFIX
            answer = _evaluate(form, a, b, c)
            items.append(_item("word_problem", first + len(items), prompt, f"s{t}", answer=answer))
    return items


def _open_ended() -> list[SuiteItem]:
    items: list[SuiteItem] = []
    for t, (style, prompt) in enumerate(_OPEN_ENDED[::3] + _OPEN_ENDED[1::3] + _OPEN_ENDED[2::3]):
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
    for t, question in enumerate(_UNANSWERABLE):
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
    first = 2 * sum(len(facts) for _, facts in _FACTS.values())  # the items of _FACTS, not _HARD_FACTS
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
