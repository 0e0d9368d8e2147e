"""Generate ``qa_labelled.jsonl``: the labelled prompts shipped for measuring detection quality.

Two tasks of about 320 records each:

* ``arithmetic``: addition, subtraction and multiplication with 1- to 3-digit operands, from trivial
  (``20 + 30``, ``7 * 10``) to hard for a small model (``47 * 38``, ``23 - 57``); compared
  numerically. Some problems are asked twice (another phrasing, or the operands swapped); both
  records share a ``group``.
* ``factual``: short questions with one unambiguous answer (capitals, chemical symbols, authors of
  famous books, counts and units, opposites, plurals, languages, currencies, young animals and a
  few science facts), with accepted variants; names are matched with ``contains`` (the model tends
  to answer in a sentence: "The capital of Kenya is Nairobi."), counts numerically. Questions about
  one country, element or author share a ``group``.

Splits: every group goes wholly to ``dev`` or ``test``; groups are assigned greedily (largest
first, in a seeded random order) to the split with fewer records of the same task and category, so
both splits get about half of every kind of item. Deterministic: running the script again rewrites
the same file.

Usage: ``python examples/validation/make_labelled_set.py [OUTPUT]``
(default: ``qa_labelled.jsonl`` next to this script; the result is checked with ``load_labelled``).
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

SEED = 20240611
HERE = Path(__file__).resolve().parent

FEW_WORDS = "Answer in a few words."
ONE_WORD = "Answer with one word."
ONLY_NUMBER = "Answer with only the number."


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- factual data (each line checked by hand) --------------------------------------------------
# (country, capital, other accepted spellings). Countries whose capital shares their name, or whose
# capital is disputed or split (Netherlands, South Africa, Bolivia, Sri Lanka...), are left out.
CAPITALS: list[tuple[str, str, list[str]]] = [
    ("France", "Paris", []),
    ("Germany", "Berlin", []),
    ("Italy", "Rome", ["Roma"]),
    ("Spain", "Madrid", []),
    ("Portugal", "Lisbon", ["Lisboa"]),
    ("the United Kingdom", "London", []),
    ("Ireland", "Dublin", []),
    ("Belgium", "Brussels", ["Bruxelles"]),
    ("Switzerland", "Bern", ["Berne"]),
    ("Austria", "Vienna", ["Wien"]),
    ("Poland", "Warsaw", ["Warszawa"]),
    ("the Czech Republic", "Prague", ["Praha"]),
    ("Hungary", "Budapest", []),
    ("Greece", "Athens", []),
    ("Sweden", "Stockholm", []),
    ("Norway", "Oslo", []),
    ("Denmark", "Copenhagen", []),
    ("Finland", "Helsinki", []),
    ("Russia", "Moscow", []),
    ("Ukraine", "Kyiv", ["Kiev"]),
    ("Romania", "Bucharest", []),
    ("Bulgaria", "Sofia", []),
    ("Serbia", "Belgrade", []),
    ("Croatia", "Zagreb", []),
    ("Slovakia", "Bratislava", []),
    ("Lithuania", "Vilnius", []),
    ("Turkey", "Ankara", []),
    ("Egypt", "Cairo", []),
    ("Morocco", "Rabat", []),
    ("Algeria", "Algiers", []),
    ("Tunisia", "Tunis", []),
    ("Nigeria", "Abuja", []),
    ("Kenya", "Nairobi", []),
    ("Ethiopia", "Addis Ababa", []),
    ("Ghana", "Accra", []),
    ("Senegal", "Dakar", []),
    ("Zimbabwe", "Harare", []),
    ("Japan", "Tokyo", []),
    ("China", "Beijing", ["Peking"]),
    ("South Korea", "Seoul", []),
    ("North Korea", "Pyongyang", []),
    ("India", "New Delhi", ["Delhi"]),
    ("Pakistan", "Islamabad", []),
    ("Bangladesh", "Dhaka", ["Dacca"]),
    ("Nepal", "Kathmandu", []),
    ("Thailand", "Bangkok", []),
    ("Vietnam", "Hanoi", ["Ha Noi"]),
    ("Cambodia", "Phnom Penh", []),
    ("the Philippines", "Manila", []),
    ("Malaysia", "Kuala Lumpur", []),
    ("Mongolia", "Ulaanbaatar", ["Ulan Bator"]),
    ("Afghanistan", "Kabul", []),
    ("Iran", "Tehran", ["Teheran"]),
    ("Iraq", "Baghdad", []),
    ("Saudi Arabia", "Riyadh", []),
    ("Syria", "Damascus", []),
    ("Jordan", "Amman", []),
    ("Lebanon", "Beirut", []),
    ("Qatar", "Doha", []),
    ("the United Arab Emirates", "Abu Dhabi", []),
    ("Kazakhstan", "Astana", ["Nur-Sultan"]),
    ("Uzbekistan", "Tashkent", []),
    ("the country of Georgia", "Tbilisi", []),
    ("Armenia", "Yerevan", []),
    ("the United States", "Washington, D.C.", ["Washington", "Washington DC"]),
    ("Canada", "Ottawa", []),
    ("Mexico", "Mexico City", []),
    ("Cuba", "Havana", []),
    ("Jamaica", "Kingston", []),
    ("Costa Rica", "San Jose", []),
    ("Argentina", "Buenos Aires", []),
    ("Brazil", "Brasilia", []),
    ("Chile", "Santiago", []),
    ("Peru", "Lima", []),
    ("Colombia", "Bogota", []),
    ("Venezuela", "Caracas", []),
    ("Ecuador", "Quito", []),
    ("Uruguay", "Montevideo", []),
    ("Australia", "Canberra", []),
    ("New Zealand", "Wellington", []),
]
# Capital -> country, for well-known capitals (same group as the forward question).
REVERSE_CAPITALS: list[tuple[str, list[str]]] = [
    ("France", []),
    ("Japan", []),
    ("Italy", []),
    ("Spain", []),
    ("Germany", []),
    ("Russia", ["Russian Federation"]),
    ("Egypt", []),
    ("Canada", []),
    ("Australia", []),
    ("China", []),
    ("Greece", []),
    ("Kenya", []),
    ("Peru", []),
    ("South Korea", []),
    ("Argentina", []),
    ("Turkey", ["Turkiye"]),
]

# (element, symbol). Symbols that are common English words (As, In, At, Be, He, No, I) are left out.
SYMBOLS: list[tuple[str, str]] = [
    ("hydrogen", "H"), ("carbon", "C"), ("nitrogen", "N"), ("oxygen", "O"), ("sodium", "Na"),
    ("magnesium", "Mg"), ("aluminum", "Al"), ("silicon", "Si"), ("phosphorus", "P"), ("chlorine", "Cl"),
    ("potassium", "K"), ("calcium", "Ca"), ("iron", "Fe"), ("copper", "Cu"), ("zinc", "Zn"),
    ("silver", "Ag"), ("gold", "Au"), ("tin", "Sn"), ("lead", "Pb"), ("mercury", "Hg"),
    ("tungsten", "W"), ("uranium", "U"), ("neon", "Ne"), ("argon", "Ar"), ("lithium", "Li"),
    ("fluorine", "F"), ("nickel", "Ni"), ("platinum", "Pt"), ("titanium", "Ti"), ("bromine", "Br"),
    ("antimony", "Sb"),
]  # fmt: skip
# Symbol -> element (same group as the forward question).
REVERSE_SYMBOLS = ["Fe", "Au", "Ag", "Na", "K", "Pb", "Hg", "Cu", "Sn", "W", "Sb", "Zn"]

# (title, author, accepted). Grouped by author.
BOOKS: list[tuple[str, str, list[str]]] = [
    ("Pride and Prejudice", "Jane Austen", ["Austen"]),
    ("Romeo and Juliet", "William Shakespeare", ["Shakespeare"]),
    ("Hamlet", "William Shakespeare", ["Shakespeare"]),
    ("Nineteen Eighty-Four", "George Orwell", ["Orwell"]),
    ("Animal Farm", "George Orwell", ["Orwell"]),
    ("War and Peace", "Leo Tolstoy", ["Tolstoy"]),
    ("Crime and Punishment", "Fyodor Dostoevsky", ["Dostoevsky", "Dostoyevsky"]),
    ("The Great Gatsby", "F. Scott Fitzgerald", ["Fitzgerald", "Scott Fitzgerald"]),
    ("Moby-Dick", "Herman Melville", ["Melville"]),
    ("Don Quixote", "Miguel de Cervantes", ["Cervantes"]),
    ("The Odyssey", "Homer", []),
    ("Adventures of Huckleberry Finn", "Mark Twain", ["Twain", "Samuel Clemens"]),
    ("Oliver Twist", "Charles Dickens", ["Dickens"]),
    ("A Tale of Two Cities", "Charles Dickens", ["Dickens"]),
    ("Harry Potter and the Philosopher's Stone", "J. K. Rowling", ["Rowling", "JK Rowling"]),
    ("The Hobbit", "J. R. R. Tolkien", ["Tolkien"]),
    ("Frankenstein", "Mary Shelley", ["Shelley"]),
    ("Dracula", "Bram Stoker", ["Stoker"]),
    ("Jane Eyre", "Charlotte Bronte", ["Bronte"]),
    ("To Kill a Mockingbird", "Harper Lee", []),
    ("The Catcher in the Rye", "J. D. Salinger", ["Salinger"]),
    ("Les Miserables", "Victor Hugo", ["Hugo"]),
    ("The Old Man and the Sea", "Ernest Hemingway", ["Hemingway"]),
    ("Alice's Adventures in Wonderland", "Lewis Carroll", ["Carroll"]),
    ("Brave New World", "Aldous Huxley", ["Huxley"]),
    ("On the Origin of Species", "Charles Darwin", ["Darwin"]),
    ("Robinson Crusoe", "Daniel Defoe", ["Defoe"]),
    ("Gulliver's Travels", "Jonathan Swift", ["Swift"]),
    ("Of Mice and Men", "John Steinbeck", ["Steinbeck"]),
    ("Little Women", "Louisa May Alcott", ["Alcott"]),
    ("The Picture of Dorian Gray", "Oscar Wilde", ["Wilde"]),
    ("Treasure Island", "Robert Louis Stevenson", ["Stevenson"]),
    ("The Jungle Book", "Rudyard Kipling", ["Kipling"]),
    ("Around the World in Eighty Days", "Jules Verne", ["Verne"]),
    ("Charlie and the Chocolate Factory", "Roald Dahl", ["Dahl"]),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez", ["Garcia Marquez", "Marquez"]),
]

# (question without the instruction, answer, accepted, group). Numbers never appear in the question.
COUNTS: list[tuple[str, int, list[int | str], str]] = [
    ("How many legs does a spider have?", 8, [], "legs-spider"),
    ("How many legs does an insect have?", 6, [], "legs-insect"),
    ("How many days are in a week?", 7, [], "days-week"),
    ("How many months are in a year?", 12, [], "months-year"),
    ("How many hours are in a day?", 24, [], "hours-day"),
    ("How many minutes are in an hour?", 60, [], "minutes-hour"),
    ("How many seconds are in a minute?", 60, [], "seconds-minute"),
    ("How many days are in a leap year?", 366, [], "days-year"),
    ("How many days are in a year that is not a leap year?", 365, [], "days-year"),
    ("How many sides does a triangle have?", 3, [], "sides-triangle"),
    ("How many sides does a hexagon have?", 6, [], "sides-hexagon"),
    ("How many sides does an octagon have?", 8, [], "sides-octagon"),
    ("How many planets are in our solar system?", 8, [], "planets"),
    ("How many continents are there on Earth?", 7, [], "continents"),
    ("How many players does a soccer team have on the field?", 11, [], "players-soccer"),
    ("How many strings does a standard violin have?", 4, [], "strings-violin"),
    ("How many keys does a standard piano have?", 88, [], "keys-piano"),
    ("How many bones are in the adult human body?", 206, [], "bones"),
    ("How many centimeters are in a meter?", 100, [], "cm-meter"),
    ("How many grams are in a kilogram?", 1000, [], "grams-kilogram"),
    ("How many meters are in a kilometer?", 1000, [], "meters-kilometer"),
    ("How many inches are in a foot?", 12, [], "inches-foot"),
    ("How many feet are in a yard?", 3, [], "feet-yard"),
    ("How many ounces are in a pound?", 16, [], "ounces-pound"),
    ("At how many degrees Celsius does water boil at sea level?", 100, [], "water-temperature"),
    ("At how many degrees Celsius does water freeze?", 0, [], "water-temperature"),
    ("At how many degrees Fahrenheit does water freeze?", 32, [], "water-temperature"),
    ("How many degrees are in a right angle?", 90, [], "degrees-angle"),
    ("How many degrees are in a full circle?", 360, [], "degrees-angle"),
    ("How many states are in the United States of America?", 50, [], "us-states"),
    ("How many cards are in a standard deck of playing cards, without jokers?", 52, [], "cards-deck"),
    ("How many squares are on a chessboard?", 64, [], "chessboard"),
]

# (word, opposite, accepted). One direction of each pair.
OPPOSITES: list[tuple[str, str, list[str]]] = [
    ("hot", "cold", ["cool"]),
    ("up", "down", []),
    ("day", "night", []),
    ("black", "white", []),
    ("early", "late", []),
    ("north", "south", []),
    ("east", "west", []),
    ("win", "lose", ["loss"]),
    ("buy", "sell", []),
    ("push", "pull", []),
    ("full", "empty", []),
    ("heavy", "light", []),
    ("true", "false", []),
    ("alive", "dead", []),
    ("wet", "dry", []),
    ("fast", "slow", []),
    ("strong", "weak", []),
    ("rich", "poor", []),
    ("happy", "sad", ["unhappy"]),
    ("before", "after", []),
    ("above", "below", ["beneath", "under"]),
    ("remember", "forget", []),
    ("maximum", "minimum", []),
    ("ancient", "modern", []),
    ("possible", "impossible", []),
    ("visible", "invisible", []),
    ("cheap", "expensive", ["costly"]),
    ("victory", "defeat", ["loss"]),
    ("arrive", "depart", ["leave"]),
    ("friend", "enemy", ["foe"]),
]

# (singular, plural, accepted).
PLURALS: list[tuple[str, str, list[str]]] = [
    ("mouse", "mice", []),
    ("child", "children", []),
    ("goose", "geese", []),
    ("tooth", "teeth", []),
    ("foot", "feet", []),
    ("man", "men", []),
    ("woman", "women", []),
    ("person", "people", ["persons"]),
    ("ox", "oxen", []),
    ("cactus", "cacti", ["cactuses"]),
    ("analysis", "analyses", []),
    ("crisis", "crises", []),
    ("phenomenon", "phenomena", []),
    ("criterion", "criteria", []),
    ("leaf", "leaves", []),
    ("knife", "knives", []),
    ("wolf", "wolves", []),
    ("half", "halves", []),
    ("potato", "potatoes", []),
    ("hero", "heroes", []),
    ("city", "cities", []),
    ("bus", "buses", ["busses"]),
    ("fungus", "fungi", ["funguses"]),
    ("nucleus", "nuclei", []),
    ("radius", "radii", []),
    ("louse", "lice", []),
    ("thesis", "theses", []),
    ("wife", "wives", []),
    ("baby", "babies", []),
    ("life", "lives", []),
]

# (country, language, accepted); same groups as the capitals.
LANGUAGES: list[tuple[str, str, list[str]]] = [
    ("Brazil", "Portuguese", []),
    ("Mexico", "Spanish", []),
    ("Egypt", "Arabic", []),
    ("Germany", "German", []),
    ("Japan", "Japanese", []),
    ("Italy", "Italian", []),
    ("Russia", "Russian", []),
    ("Greece", "Greek", []),
    ("the Netherlands", "Dutch", []),
    ("Sweden", "Swedish", []),
    ("Poland", "Polish", []),
    ("Portugal", "Portuguese", []),
    ("Turkey", "Turkish", []),
    ("Vietnam", "Vietnamese", []),
    ("Thailand", "Thai", []),
    ("Iran", "Persian", ["Farsi"]),
    ("South Korea", "Korean", []),
    ("Norway", "Norwegian", []),
]

# (country, currency, accepted).
CURRENCIES: list[tuple[str, str, list[str]]] = [
    ("Japan", "yen", []),
    ("the United Kingdom", "pound", ["pounds", "pound sterling", "sterling"]),
    ("India", "rupee", ["rupees"]),
    ("Russia", "ruble", ["rubles", "rouble", "roubles"]),
    ("China", "yuan", ["renminbi", "RMB"]),
    ("Mexico", "peso", ["pesos"]),
    ("Switzerland", "franc", ["francs", "Swiss franc"]),
    ("South Africa", "rand", ["rands"]),
    ("Thailand", "baht", []),
    ("Turkey", "lira", ["liras", "lire"]),
    ("Poland", "zloty", ["złoty", "zlotys", "zlotych"]),
    ("Sweden", "krona", ["kronor"]),
    ("the United States", "dollar", ["dollars", "US dollar"]),
    ("Germany", "euro", ["euros"]),
    ("Israel", "shekel", ["shekels", "new shekel"]),
    ("Vietnam", "dong", []),
]

# (animal, young, accepted).
YOUNG: list[tuple[str, str, list[str]]] = [
    ("cat", "kitten", ["kittens", "kitty"]),
    ("dog", "puppy", ["pup", "puppies"]),
    ("cow", "calf", ["calves"]),
    ("horse", "foal", ["colt", "filly"]),
    ("sheep", "lamb", ["lambs"]),
    ("bear", "cub", ["cubs"]),
    ("kangaroo", "joey", ["joeys"]),
    ("frog", "tadpole", ["tadpoles", "froglet"]),
    ("duck", "duckling", ["ducklings"]),
    ("swan", "cygnet", ["cygnets"]),
    ("goose", "gosling", ["goslings"]),
    ("pig", "piglet", ["piglets"]),
    ("deer", "fawn", ["fawns"]),
]

# (question, answer, accepted, group).
MISC: list[tuple[str, str, list[str], str]] = [
    ("Which is the largest planet in our solar system?", "Jupiter", [], "planet-largest"),
    ("Which planet is known as the Red Planet?", "Mars", [], "planet-red"),
    ("Which planet is closest to the Sun?", "Mercury", [], "planet-closest"),
    ("Which planet is famous for its large, bright rings?", "Saturn", [], "planet-rings"),
    ("What is the largest ocean on Earth?", "Pacific", ["Pacific Ocean"], "ocean-largest"),
    ("What is the highest mountain on Earth?", "Mount Everest", ["Everest"], "mountain-highest"),
    ("What is the fastest land animal?", "cheetah", ["cheetahs"], "animal-fastest"),
    ("What is the largest animal that has ever lived?", "blue whale", [], "animal-largest"),
    ("What is the hardest natural substance?", "diamond", ["diamonds"], "substance-hardest"),
    ("Which gas do plants take in from the air for photosynthesis?", "carbon dioxide", ["CO2"], "gas-plants"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong", ["Armstrong"], "moon-first"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Leonardo", "da Vinci"], "mona-lisa"),
    ("Who developed the theory of relativity?", "Albert Einstein", ["Einstein"], "relativity"),
    ("What is the largest organ of the human body?", "skin", [], "organ-largest"),
    ("What is the chemical formula of water?", "H2O", [], "formula-water"),
    ("What color do you get by mixing blue and yellow?", "green", [], "color-mix"),
    ("What is the largest hot desert in the world?", "Sahara", ["Sahara Desert"], "desert-largest"),
    ("Which star is at the center of our solar system?", "Sun", ["the Sun", "Sol"], "star-sun"),
]


def factual_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []

    def add(
        rid: str, prompt: str, answer: Any, accepted: list[Any], match: str, group: str, cat: str
    ) -> None:
        record: dict[str, Any] = {"id": f"fact-{rid}", "prompt": prompt, "answer": answer}
        if accepted:
            record["accepted"] = accepted
        if match != "exact" and not isinstance(answer, int):
            record["match"] = match
        record.update({"group": group, "task": "factual", "_category": cat})
        records.append(record)

    capital_of = {country: capital for country, capital, _ in CAPITALS}
    for country, capital, accepted in CAPITALS:
        group = f"country-{slug(country.removeprefix('the '))}"
        add(
            f"capital-{slug(country)}",
            f"What is the capital of {country}? {FEW_WORDS}",
            capital,
            accepted,
            "contains",
            group,
            "capital",
        )
    for country, accepted in REVERSE_CAPITALS:
        group = f"country-{slug(country)}"
        add(
            f"capital-of-{slug(country)}",
            f"{capital_of[country]} is the capital of which country? {FEW_WORDS}",
            country,
            accepted,
            "contains",
            group,
            "capital-reverse",
        )
    element_of = {symbol: element for element, symbol in SYMBOLS}
    for element, symbol in SYMBOLS:
        add(
            f"symbol-{element}",
            f"What is the chemical symbol of {element}? {FEW_WORDS}",
            symbol,
            [],
            "contains",
            f"element-{element}",
            "symbol",
        )
    for symbol in REVERSE_SYMBOLS:
        element = element_of[symbol]
        add(
            f"element-{slug(symbol)}",
            f"Which chemical element has the symbol {symbol}? {FEW_WORDS}",
            element,
            [],
            "contains",
            f"element-{element}",
            "symbol-reverse",
        )
    for title, author, accepted in BOOKS:
        add(
            f"author-{slug(title)}",
            f'Who wrote the book "{title}"? {FEW_WORDS}',
            author,
            accepted,
            "contains",
            f"author-{slug(author)}",
            "author",
        )
    per_group = Counter(group for *_, group in COUNTS)
    used: Counter[str] = Counter()
    for question, number, numbers, group in COUNTS:
        used[group] += 1
        rid = f"count-{group}" if per_group[group] == 1 else f"count-{group}-{used[group]}"
        add(rid, f"{question} {ONLY_NUMBER}", number, numbers, "numeric", f"count-{group}", "count")
    for word, opposite, accepted in OPPOSITES:
        add(
            f"opposite-{word}",
            f'What is the opposite of "{word}"? {ONE_WORD}',
            opposite,
            accepted,
            "contains",
            f"opposite-{'-'.join(sorted((word, opposite)))}",
            "opposite",
        )
    for singular, plural, accepted in PLURALS:
        add(
            f"plural-{singular}",
            f'What is the plural of "{singular}"? {ONE_WORD}',
            plural,
            accepted,
            "contains",
            f"plural-{singular}",
            "plural",
        )
    for country, language, accepted in LANGUAGES:
        group = f"country-{slug(country.removeprefix('the '))}"
        add(
            f"language-{slug(country)}",
            f"What is the main language spoken in {country}? {FEW_WORDS}",
            language,
            accepted,
            "contains",
            group,
            "language",
        )
    for country, currency, accepted in CURRENCIES:
        group = f"country-{slug(country.removeprefix('the '))}"
        add(
            f"currency-{slug(country)}",
            f"What is the currency of {country} called? {FEW_WORDS}",
            currency,
            accepted,
            "contains",
            group,
            "currency",
        )
    for animal, young, accepted in YOUNG:
        add(
            f"young-{animal}",
            f"What is a baby {animal} called? {ONE_WORD}",
            young,
            accepted,
            "contains",
            f"young-{animal}",
            "young",
        )
    for question, answer, accepted, group in MISC:
        add(
            f"misc-{group}-{slug(answer)}",
            f"{question} {FEW_WORDS}",
            answer,
            accepted,
            "contains",
            f"misc-{group}",
            "misc",
        )
    return records


# --- arithmetic ---------------------------------------------------------------------------------
TEMPLATES = [
    "What is {a} {sym} {b}? Answer with only the number.",
    "Compute {a} {word} {b}. Reply with just the number.",
    "What is {a} {sym} {b}? Give only the result.",
    "Calculate {a} {sym} {b} and answer with only the number.",
]
OPS = {"add": ("+", "plus"), "sub": ("-", "minus"), "mul": ("*", "times")}

# (band, operation, how many, operand generator). Easy bands are over-represented: the embedded
# model fails most multi-digit problems.
BANDS: list[tuple[str, str, int, Any]] = [
    ("add-1d", "add", 30, lambda r: (r.randint(1, 9), r.randint(1, 9))),
    ("add-round", "add", 22, lambda r: (10 * r.randint(1, 9), 10 * r.randint(1, 9))),
    ("add-hundreds", "add", 12, lambda r: (100 * r.randint(1, 8), 100 * r.randint(1, 8))),
    ("add-double", "add", 14, lambda r: (lambda n: (n, n))(r.randint(11, 50))),
    ("add-2d1d", "add", 18, lambda r: (r.randint(11, 89), r.randint(2, 9))),
    ("add-2d-nocarry", "add", 16, lambda r: _no_carry(r)),
    ("add-2d-carry", "add", 18, lambda r: _carry(r)),
    ("add-3d", "add", 14, lambda r: (r.randint(100, 899), r.randint(100, 899))),
    ("sub-1d", "sub", 22, lambda r: (lambda a: (a, r.randint(0, a)))(r.randint(2, 9))),
    ("sub-round", "sub", 14, lambda r: (lambda a: (10 * a, 10 * r.randint(1, a)))(r.randint(2, 9))),
    ("sub-2d-noborrow", "sub", 14, lambda r: _no_borrow(r)),
    ("sub-2d-borrow", "sub", 14, lambda r: _borrow(r)),
    ("sub-3d", "sub", 8, lambda r: (lambda a: (a, r.randint(100, a - 1)))(r.randint(200, 999))),
    ("sub-negative", "sub", 10, lambda r: (lambda a: (a, a + r.randint(1, 60)))(r.randint(1, 40))),
    ("mul-1d", "mul", 28, lambda r: (r.randint(2, 9), r.randint(2, 9))),
    ("mul-by-1-or-10", "mul", 16, lambda r: (r.randint(2, 99), r.choice([1, 10]))),
    ("mul-2d1d", "mul", 12, lambda r: (r.randint(11, 49), r.randint(2, 9))),
    ("mul-2d2d", "mul", 8, lambda r: (r.randint(11, 49), r.randint(11, 49))),
    ("mul-3d1d", "mul", 4, lambda r: (r.randint(101, 499), r.randint(2, 9))),
]
REPEATS = 28  # problems asked a second time (another phrasing, or swapped operands)


def _no_carry(r: random.Random) -> tuple[int, int]:
    tens = r.randint(1, 8)
    units = r.randint(0, 9)
    return 10 * tens + units, 10 * r.randint(1, 9 - tens) + r.randint(0, 9 - units)


def _carry(r: random.Random) -> tuple[int, int]:
    while True:
        a, b = r.randint(11, 89), r.randint(11, 89)
        if a % 10 + b % 10 >= 10:
            return a, b


def _no_borrow(r: random.Random) -> tuple[int, int]:
    while True:
        a, b = r.randint(21, 99), r.randint(10, 89)
        if a > b and a % 10 >= b % 10:
            return a, b


def _borrow(r: random.Random) -> tuple[int, int]:
    while True:
        a, b = r.randint(21, 99), r.randint(11, 89)
        if a > b and a % 10 < b % 10:
            return a, b


def _value(op: str, a: int, b: int) -> int:
    return a + b if op == "add" else a - b if op == "sub" else a * b


def arithmetic_records(rng: random.Random) -> list[dict[str, Any]]:
    problems: list[tuple[str, str, int, int]] = []
    seen: set[tuple[str, int, int]] = set()
    for band, op, count, make in BANDS:
        made = 0
        while made < count:
            a, b = make(rng)
            key = (op, *sorted((a, b))) if op in ("add", "mul") else (op, a, b)
            if key in seen:
                continue
            seen.add(key)
            problems.append((band, op, a, b))
            made += 1
    records: list[dict[str, Any]] = []

    def add(band: str, op: str, a: int, b: int, template: int, group: str) -> None:
        sym, word = OPS[op]
        records.append(
            {
                "id": f"arith-{op}-{a}-{b}-t{template}",
                "prompt": TEMPLATES[template].format(a=a, b=b, sym=sym, word=word),
                "answer": _value(op, a, b),
                "group": group,
                "task": "arithmetic",
                "_category": band,
            }
        )

    templates = [rng.choices(range(len(TEMPLATES)), weights=[4, 2, 1, 1])[0] for _ in problems]
    for (band, op, a, b), template in zip(problems, templates, strict=True):
        key = (a, b) if op == "sub" else tuple(sorted((a, b)))
        add(band, op, a, b, template, f"arith-{op}-{key[0]}-{key[1]}")
    for index in sorted(rng.sample(range(len(problems)), REPEATS)):
        band, op, a, b = problems[index]
        group = records[index]["group"]
        if op != "sub" and a != b and rng.random() < 0.5:
            add(band, op, b, a, templates[index], group)
        else:
            other = rng.choice([t for t in range(len(TEMPLATES)) if t != templates[index]])
            add(band, op, a, b, other, group)
    return records


# --- splits -------------------------------------------------------------------------------------
def assign_splits(records: list[dict[str, Any]], rng: random.Random) -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["group"]].append(record)
    order = sorted(groups)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable: largest first, random among equals
    counts: Counter[tuple[str, str, str]] = Counter()
    for name in order:
        members = groups[name]
        task, category = members[0]["task"], members[0]["_category"]

        def load(split: str, task: str = task, category: str = category) -> tuple[int, int, float]:
            return counts[(split, task, category)], counts[(split, task, "*")], rng.random()

        split = min(("dev", "test"), key=load)
        for record in members:
            record["split"] = split
            counts[(split, record["task"], record["_category"])] += 1
            counts[(split, record["task"], "*")] += 1


FIELD_ORDER = ["id", "prompt", "answer", "accepted", "match", "split", "group", "task"]


def build() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    records = arithmetic_records(rng) + factual_records()
    assign_splits(records, rng)
    return [{key: record[key] for key in FIELD_ORDER if key in record} for record in records]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE / "qa_labelled.jsonl"
    records = build()
    with out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    from corevital.validation.labels import load_labelled

    loaded = load_labelled(out)
    tally = Counter((r.task, r.split) for r in loaded)
    print(
        f"wrote {len(loaded)} records to {out}: "
        + ", ".join(f"{t}/{s} {n}" for (t, s), n in sorted(tally.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
