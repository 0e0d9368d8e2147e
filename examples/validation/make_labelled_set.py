"""Generate ``qa_labelled.jsonl``: the labelled prompts shipped for measuring detection quality.

About 2,370 records (about 1,185 per split), written as the original 654 records followed by the
extension. The original two tasks of about 320 records each:

* ``arithmetic``: addition, subtraction and multiplication with 1- to 3-digit operands, from trivial
  (``20 + 30``, ``7 * 10``) to hard for a small model (``47 * 38``, ``23 - 57``); compared
  numerically. Some problems are asked twice (another phrasing, or the operands swapped); both
  records share a ``group``.
* ``factual``: short questions with one unambiguous answer (capitals, chemical symbols, authors of
  famous books, counts and units, opposites, plurals, languages, currencies, young animals and a
  few science facts), with accepted variants; names are matched with ``contains`` (the model tends
  to answer in a sentence: "The capital of Kenya is Nairobi."), counts numerically. Questions about
  one country, element or author share a ``group``.

The extension (added later, about 1,720 records; the original records are unchanged, with the
same ids, prompts, answers, groups and splits). Every family is generated from its own seeded
generator or from hand-checked tables; numbers are compared numerically, words with ``contains``:

* ``arithmetic`` (about 250 more): "the sum / difference / product of", word problems, doubling,
  halving, exact division and squares. A problem that is the same fact as an original one
  (``double 37`` and ``37 + 37``, ``56 / 7`` and ``7 * 8``) joins its group.
* ``comparison``: "Which number is larger, 417 or 471?" with 1- to 4-digit numbers, close digit
  permutations, decimals (``9.9`` or ``9.11``) and negatives; a third of the pairs are asked in both
  orders (same group). Only "larger" is asked: the answer is one of the prompt's numbers, and the
  numeric checker takes the first number of the output, which reads "471 is larger than 417"
  right but would read "26 is a larger number than 94" as the answer 26 to "which is smaller".
* ``sequence``: the number right after / before n (same group), the next or a missing term of an
  arithmetic progression, doubling sequences.
* ``calendar``: the day or month after / before another, k days or months later or earlier (the
  same fact shares a group), the nth month, a month's number, the days in a month.
* ``conversion``: units (hours/minutes, meters/centimeters, dozens...) both ways, number words to
  digits and back, Roman numerals.
* ``spelling``: a word's length, how often a letter occurs in it, its first or last letter (one
  group per word; single-letter answers "a", "i" and "s" are never asked, see UNSAFE_LETTERS).
* ``words``: past tenses (regular and irregular), comparatives and superlatives.
* ``factual`` (about 660 more): capitals of more countries and U.S. states, continents,
  currencies and languages of countries (in the country's group), the country of a city or
  landmark, abbreviations, female counterparts, colors, animal sounds, planets, famous people,
  more books, plurals and opposites (an opposite asked the other way round joins its group).

Answers that are positions ("what number month is October?") are matched with ``contains`` and
accept "10", "10th", "tenth" and "ten", since the numeric checker does not read ordinal words.
:func:`check_extension` rejects a duplicate id or prompt, a record whose own answer (bare or in a
sentence) is not recognised, and a ``contains`` answer that the prompt already contains.

Splits: every group goes wholly to ``dev`` or ``test``; groups are assigned greedily (largest
first, in a seeded random order) to the split with fewer records of the same task and category, so
both splits get about half of every kind of item. An added record whose group is an original one
goes to that group's split; the other added groups are assigned the same way, from a separate
seeded generator. Deterministic: running the script again rewrites the same file.

With SmolLM2-135M-Instruct (greedy, 24 new tokens, chat template), samples of the added families
failed about: arithmetic 80%, comparison 85%, sequence 90%, calendar 85-90%, conversion 85-90%,
spelling 50%, words 70%, factual 50% (about 460 prompts in all): an estimated 62% for the whole file.

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


# --- the extension: more families, added after the original 654 records -------------------------
# Everything below only adds records: the original ones (built above, with the original random
# stream) keep their ids, prompts, answers, groups and splits. Each family draws from its own
# seeded generator, so changing one family does not reshuffle the others.
ONLY_LETTER = "Answer with only the letter."

# Single letters that ``contains`` cannot judge: "a" is an article (normalised away), "i" is a
# pronoun, and a quoted 's' is taken for a possessive ("is 's'." normalises to "is").
UNSAFE_LETTERS = frozenset("ais")

_CARDINAL_WORDS = """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
fifteen sixteen seventeen eighteen nineteen twenty"""
_ORDINAL_WORDS = """zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth
thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"""
_CARDINALS = _CARDINAL_WORDS.split()
_ORDINALS = _ORDINAL_WORDS.split()


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``11th``, ``23rd``..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def position_variants(n: int) -> list[str]:
    """Accepted ways of saying position ``n`` (1..29): ``11th``, ``eleventh``, ``eleven``."""
    if n <= 20:
        words = [_ORDINALS[n], _CARDINALS[n]]
    else:
        words = [f"twenty-{_ORDINALS[n - 20]}", f"twenty-{_CARDINALS[n - 20]}"]
    return [ordinal(n), *words]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 6)


def _record(
    rid: str,
    prompt: str,
    answer: str | int | float,
    group: str,
    task: str,
    category: str,
    accepted: list[Any] | None = None,
) -> dict[str, Any]:
    """A new record: string answers are matched with ``contains``, numbers numerically."""
    record: dict[str, Any] = {"id": rid, "prompt": prompt, "answer": answer}
    if accepted:
        record["accepted"] = accepted
    if isinstance(answer, str):
        record["match"] = "contains"
    record.update({"group": group, "task": task, "_category": category})
    return record


def _position_record(rid: str, prompt: str, n: int, group: str, task: str, category: str) -> dict[str, Any]:
    """A question whose answer is a position: the model says "11", "11th" or "the eleventh" alike.

    Matched with ``contains`` (``numeric`` reads no ordinal words, so "the fourth planet" would fail).
    """
    return _record(rid, prompt, str(n), group, task, category, position_variants(n))


# --- more arithmetic ------------------------------------------------------------------------------
NAMES = ["Tom", "Anna", "Sam", "Maria", "Ben", "Lucy", "Omar", "Nina"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "coins", "stamps"]


def _arith_group(op: str, a: int, b: int) -> str:
    """The original records' group of a problem, so a problem asked again joins it."""
    x, y = (a, b) if op == "sub" else sorted((a, b))
    return f"arith-{op}-{x}-{y}"


def more_arithmetic_records() -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-arithmetic")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(rid: str, prompt: str, answer: int, group: str, category: str) -> bool:
        if rid in seen:
            return False
        seen.add(rid)
        records.append(_record(f"arith-{rid}", prompt, answer, group, "arithmetic", category))
        return True

    def repeat(count: int, make: Any) -> None:
        made = 0
        while made < count:
            made += bool(make())

    # "the sum / difference / product of" phrasings
    def sum_of(lo: int, hi: int, lo2: int, hi2: int) -> Any:
        def make() -> bool:
            a, b = rng.randint(lo, hi), rng.randint(lo2, hi2)
            prompt = f"What is the sum of {a} and {b}? {ONLY_NUMBER}"
            return add(f"sum-{a}-{b}", prompt, a + b, _arith_group("add", a, b), "sum-of")

        return make

    repeat(8, sum_of(2, 9, 2, 9))
    repeat(10, sum_of(12, 89, 12, 89))
    repeat(6, sum_of(101, 899, 12, 99))

    def difference(lo: int, hi: int) -> bool:
        a, b = sorted(rng.sample(range(lo, hi), 2), reverse=True)
        prompt = f"What is the difference between {a} and {b}? {ONLY_NUMBER}"
        return add(f"diff-{a}-{b}", prompt, a - b, _arith_group("sub", a, b), "difference-of")

    repeat(12, lambda: difference(11, 100))
    repeat(6, lambda: difference(101, 1000))

    def product(lo: int, hi: int, lo2: int, hi2: int) -> bool:
        a, b = rng.randint(lo, hi), rng.randint(lo2, hi2)
        prompt = f"What is the product of {a} and {b}? {ONLY_NUMBER}"
        return add(f"prod-{a}-{b}", prompt, a * b, _arith_group("mul", a, b), "product-of")

    repeat(10, lambda: product(2, 9, 2, 9))
    repeat(8, lambda: product(11, 49, 2, 9))
    repeat(4, lambda: product(11, 30, 11, 30))

    # word problems
    def story_add(hi: int) -> bool:
        a, b = rng.randint(2, hi), rng.randint(2, hi)
        name, items = rng.choice(NAMES), rng.choice(ITEMS)
        prompt = (
            f"{name} has {a} {items} and gets {b} more. How many {items} does {name} have now? {ONLY_NUMBER}"
        )
        return add(f"story-add-{a}-{b}", prompt, a + b, _arith_group("add", a, b), "story-add")

    repeat(15, lambda: story_add(9))
    repeat(6, lambda: story_add(60))

    def story_sub(hi: int) -> bool:
        a = rng.randint(5, hi)
        b = rng.randint(1, a - 1)
        name, items = rng.choice(NAMES), rng.choice(ITEMS)
        prompt = (
            f"{name} has {a} {items} and gives {b} away. How many {items} does {name} have left? "
            f"{ONLY_NUMBER}"
        )
        return add(f"story-sub-{a}-{b}", prompt, a - b, _arith_group("sub", a, b), "story-sub")

    repeat(15, lambda: story_sub(12))
    repeat(6, lambda: story_sub(90))

    def story_mul(hi: int) -> bool:
        a, b = rng.randint(2, hi), rng.randint(2, 9)
        items = rng.choice(ITEMS)
        question = f"How many {items} are there in all? {ONLY_NUMBER}"
        prompt = f"There are {a} boxes with {b} {items} in each box. {question}"
        return add(f"story-mul-{a}-{b}", prompt, a * b, _arith_group("mul", a, b), "story-mul")

    repeat(10, lambda: story_mul(9))
    repeat(5, lambda: story_mul(25))

    # doubling and halving (the same facts as n + n)
    def double(lo: int, hi: int) -> bool:
        n = rng.randint(lo, hi)
        word = rng.choice(["double", "twice"])
        prompt = f"What is {word} {n}? {ONLY_NUMBER}"
        return add(f"double-{n}", prompt, 2 * n, _arith_group("add", n, n), "double")

    repeat(15, lambda: double(2, 25))
    repeat(12, lambda: double(13, 99))
    repeat(6, lambda: double(100, 500))

    def half(lo: int, hi: int) -> bool:
        n = rng.randint(lo, hi)
        prompt = f"What is half of {2 * n}? {ONLY_NUMBER}"
        return add(f"half-{2 * n}", prompt, n, _arith_group("add", n, n), "half")

    repeat(15, lambda: half(2, 25))
    repeat(12, lambda: half(13, 99))
    repeat(6, lambda: half(100, 500))

    # exact division (the same facts as the products)
    def divide(qlo: int, qhi: int, dlo: int, dhi: int) -> bool:
        q, d = rng.randint(qlo, qhi), rng.randint(dlo, dhi)
        prompt = f"What is {q * d} divided by {d}? {ONLY_NUMBER}"
        return add(f"div-{q * d}-{d}", prompt, q, _arith_group("mul", q, d), "divide")

    repeat(30, lambda: divide(2, 9, 2, 9))
    repeat(10, lambda: divide(11, 40, 2, 9))

    # squares
    for n in [*range(2, 16), 20, 25, 30, 50, 100]:
        add(f"square-{n}", f"What is {n} squared? {ONLY_NUMBER}", n * n, _arith_group("mul", n, n), "square")
    return records


# --- number comparison ------------------------------------------------------------------------------
# Only "which is larger": the answer is one of the two numbers in the prompt, so the numeric checker
# takes the first number of the output ("471 is larger than 417" -> 471). With "which is smaller" a
# model that writes "26 is a larger number than 94" would be judged correct, and with three numbers
# "The largest of 19, 16 and 42 is 42" would be judged wrong (19 comes first): both left out.
def comparison_records() -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-comparison")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()

    def ask(values: list[Any], category: str) -> bool:
        texts = [str(v) for v in values]
        rid = f"cmp-larger-{texts[0]}-{texts[1]}"
        if texts[0] == texts[1] or rid in seen:
            return False
        seen.add(rid)
        word = rng.choice(["larger", "larger", "greater", "bigger"])
        prompt = f"Which number is {word}, {texts[0]} or {texts[1]}? {ONLY_NUMBER}"
        group = "cmp-" + "-".join(sorted(texts))
        records.append(_record(rid, prompt, _number(max(values)), group, "comparison", category))
        return True

    def pairs(count: int, make: Any, category: str) -> None:
        made = 0
        while made < count:
            values = make()
            if ask(values, category):
                made += 1
                # a third of the pairs are asked in both orders (a model that picks the first or the
                # larger-looking number is caught either way); both share a group
                if made < count and rng.random() < 0.33:
                    made += ask(list(reversed(values)), category)

    pairs(20, lambda: rng.sample(range(1, 10), 2), "1-digit")
    pairs(24, lambda: rng.sample(range(10, 100), 2), "2-digit")

    def swapped_digits() -> list[int]:
        digits = rng.sample(range(1, 10), 3)
        order = rng.choice([[0, 2, 1], [1, 0, 2]])
        a = int("".join(str(d) for d in digits))
        return [a, int("".join(str(digits[i]) for i in order))]

    pairs(22, swapped_digits, "3-digit-close")
    pairs(16, lambda: rng.sample(range(100, 1000), 2), "3-digit")
    pairs(12, lambda: rng.sample(range(1000, 10000), 2), "4-digit")
    pairs(16, lambda: [rng.randint(10, 999), rng.randint(1000, 9999)][:: rng.choice([1, -1])], "mixed-length")

    def decimals() -> list[float]:
        whole, tenth = rng.randint(0, 12), rng.randint(1, 8)
        hundredths = rng.randint(tenth * 10 - 9, tenth * 10 + 9)  # 9.9 against 9.11 .. 9.89
        if hundredths % 10 == 0:
            hundredths += 1
        values = [round(whole + tenth / 10, 1), round(whole + hundredths / 100, 2)]
        return values[:: rng.choice([1, -1])]

    pairs(20, decimals, "decimal")
    pairs(12, lambda: [-n for n in rng.sample(range(1, 40), 2)], "negative")
    return records


# --- sequences ----------------------------------------------------------------------------------------
def sequence_records() -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-sequence")
    records: list[dict[str, Any]] = []

    # successor / predecessor: "after n" and "before n + 1" are the same fact (one group)
    starts = set(rng.sample(range(1, 9), 4)) | set(rng.sample(range(10, 99), 8))
    starts |= {9, 19, 99, 399, 999, 1999}
    starts |= set(rng.sample(range(100, 999), 6)) | set(rng.sample(range(1000, 9999), 5))
    for n in sorted(starts):
        category = "1-digit" if n < 9 else "2-digit" if n < 99 else "3-digit" if n < 999 else "4-digit"
        if n % 10 == 9:
            category = "carry"
        group = f"seq-next-{n}"
        which = rng.random()
        if which < 0.65:
            prompt = f"What number comes right after {n}? {ONLY_NUMBER}"
            records.append(_record(f"seq-after-{n}", prompt, n + 1, group, "sequence", f"after-{category}"))
        if which > 0.35:
            prompt = f"What number comes right before {n + 1}? {ONLY_NUMBER}"
            records.append(_record(f"seq-before-{n + 1}", prompt, n, group, "sequence", f"before-{category}"))

    # arithmetic progressions: the next term, or a missing one
    steps = [1, 1, 1, 2, 2, 5, 10, 10, 100, 3, 4, 6, 7, 11, 25, -1, -2, -5, -10]
    seen: set[tuple[int, int]] = set()
    made = 0
    while made < 42:
        step = rng.choice(steps)
        start = rng.randint(1, 20) if abs(step) < 10 else abs(step) * rng.randint(1, 9)
        if step < 0:
            start += -step * 5 + rng.randint(0, 30)
        if (start, step) in seen:
            continue
        seen.add((start, step))
        terms = [start + i * step for i in range(5)]
        category = "easy" if step in (1, 2, 5, 10, 100) else "descending" if step < 0 else "other-step"
        group = f"seq-ap-{start}-{step}"
        shown = ", ".join(map(str, terms[:4]))
        if rng.random() < 0.75:
            prompt = f"What is the next number in the sequence {shown}? {ONLY_NUMBER}"
            records.append(_record(f"seq-next-{start}-{step}", prompt, terms[4], group, "sequence", category))
        else:
            hole = rng.randint(1, 3)
            shown = ", ".join("__" if i == hole else str(t) for i, t in enumerate(terms))
            prompt = f"What number is missing in the sequence {shown}? {ONLY_NUMBER}"
            records.append(
                _record(f"seq-missing-{start}-{step}", prompt, terms[hole], group, "sequence", "missing")
            )
        made += 1

    # doubling sequences
    for start in [1, 3, 10]:
        terms = [start * 2**i for i in range(5)]
        shown = ", ".join(map(str, terms[:4]))
        prompt = f"What is the next number in the sequence {shown}? {ONLY_NUMBER}"
        records.append(
            _record(f"seq-double-{start}", prompt, terms[4], f"seq-gp-{start}", "sequence", "doubling")
        )
    return records


# --- days of the week and months ------------------------------------------------------------------
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def calendar_records() -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-calendar")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(rid: str, prompt: str, answer: str, group: str, category: str) -> bool:
        if rid in seen:
            return False
        seen.add(rid)
        records.append(_record(f"cal-{rid}", prompt, answer, group, "calendar", category))
        return True

    def cycle_group(kind: str, names: list[str], start: int, shift: int) -> str:
        """One group per (start, forward shift): "3 days after Monday" = "3 days before Thursday"."""
        return f"cal-{kind}-{slug(names[start])}-{shift % len(names)}"

    def neighbours(kind: str, names: list[str], noun: str) -> None:
        for i, name in enumerate(names):
            nxt = names[(i + 1) % len(names)]
            group = cycle_group(kind, names, i, 1)
            which = rng.random()
            if which < 0.7:
                prompt = f"What {noun} comes right after {name}? {ONE_WORD}"
                add(f"{kind}-after-{slug(name)}", prompt, nxt, group, f"{kind}-after")
            if which > 0.3:
                prompt = f"What {noun} comes right before {nxt}? {ONE_WORD}"
                add(f"{kind}-before-{slug(nxt)}", prompt, name, group, f"{kind}-before")

    neighbours("day", DAYS, "day of the week")
    neighbours("month", MONTHS, "month")

    def shifts(count: int, kind: str, names: list[str], choices: list[int], forward: bool) -> None:
        made = 0
        while made < count:
            start, k = rng.randrange(len(names)), rng.choice(choices)
            end = (start + k) % len(names) if forward else (start - k) % len(names)
            if kind == "day":
                when = f"will it be in {k} days" if forward else f"was it {k} days ago"
                prompt = f"If today is {names[start]}, what day of the week {when}? {ONE_WORD}"
            else:
                where = "after" if forward else "before"
                prompt = f"Which month comes {k} months {where} {names[start]}? {ONE_WORD}"
            group = cycle_group(kind, names, start if forward else end, k)
            rid = f"{kind}-{'plus' if forward else 'minus'}-{k}-{slug(names[start])}"
            made += add(rid, prompt, names[end], group, f"{kind}-{'plus' if forward else 'minus'}")

    shifts(9, "day", DAYS, [2, 3, 4, 5, 6, 8, 9, 10], True)
    shifts(5, "day", DAYS, [2, 3, 4, 5, 6, 8, 9, 10], False)
    shifts(6, "month", MONTHS, [2, 3, 4, 5, 6, 8, 9], True)
    shifts(4, "month", MONTHS, [2, 3, 4, 5, 6], False)

    for n, month in enumerate(MONTHS, start=1):
        group = f"cal-month-{slug(month)}"
        add(
            f"month-nth-{n}",
            f"What is the {ordinal(n)} month of the year? {ONE_WORD}",
            month,
            group,
            "month-nth",
        )
        if n > 1:
            prompt = f"Counting January as month 1, what number month is {month}? {ONLY_NUMBER}"
            records.append(
                _position_record(
                    f"cal-month-number-{slug(month)}", prompt, n, group, "calendar", "month-number"
                )
            )
        days_group = f"cal-days-{slug(month)}"
        if month == "February":
            for days, when in ((29, "a leap year"), (28, "a year that is not a leap year")):
                prompt = f"How many days are there in February in {when}? {ONLY_NUMBER}"
                records.append(
                    _record(f"cal-days-february-{days}", prompt, days, days_group, "calendar", "month-days")
                )
        else:
            prompt = f"How many days are there in {month}? {ONLY_NUMBER}"
            records.append(
                _record(
                    f"cal-days-{slug(month)}", prompt, MONTH_DAYS[n - 1], days_group, "calendar", "month-days"
                )
            )
    return records


# --- unit conversions and Roman numerals ------------------------------------------------------------
# (unit, its plural, the smaller unit's plural, how many of the smaller in one of the unit).
CONVERSIONS: list[tuple[str, str, str, int]] = [
    ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60),
    ("day", "days", "hours", 24),
    ("week", "weeks", "days", 7),
    ("year", "years", "months", 12),
    ("meter", "meters", "centimeters", 100),
    ("kilometer", "kilometers", "meters", 1000),
    ("kilogram", "kilograms", "grams", 1000),
    ("centimeter", "centimeters", "millimeters", 10),
    ("liter", "liters", "milliliters", 1000),
    ("foot", "feet", "inches", 12),
    ("yard", "yards", "feet", 3),
]
ROMAN = [
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
]
ROMAN_NUMBERS = [2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 50, 100, 14, 19, 24, 40, 90, 44, 1990, 2024]


def roman(n: int) -> str:
    out = []
    for value, numeral in ROMAN:
        while n >= value:
            out.append(numeral)
            n -= value
    return "".join(out)


def number_words(n: int) -> str:
    """English words for 1..999 without "and": 42 -> "forty-two", 312 -> "three hundred twelve"."""
    tens = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    hundreds, rest = divmod(n, 100)
    if rest < 20:
        words = _CARDINALS[rest] if rest else ""
    else:
        words = tens[rest // 10 - 2] + (f"-{_CARDINALS[rest % 10]}" if rest % 10 else "")
    if hundreds:
        words = f"{_CARDINALS[hundreds]} hundred" + (f" {words}" if words else "")
    return words


def _qty(value: float) -> str:
    return str(_number(value))


def conversion_records() -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-conversion")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(rid: str, prompt: str, answer: float, group: str, category: str) -> bool:
        if rid in seen:
            return False
        seen.add(rid)
        records.append(_record(f"conv-{rid}", prompt, _number(answer), group, "conversion", category))
        return True

    # each unit converted both ways: n units to the smaller unit (n from 2 to 10), and back (another n)
    amounts = [*range(2, 31), 0.5, 1.5, 2.5, 3.5]
    for unit, units, small, factor in CONVERSIONS:
        n = rng.randint(2, 10)
        prompt = f"How many {small} are in {n} {units}? {ONLY_NUMBER}"
        add(f"{unit}-to-{small}-{n}", prompt, n * factor, f"conv-{unit}-{small}-{n}", f"{unit}-forward")
        m = rng.choice([a for a in amounts if a != n])
        prompt = f"How many {units} are in {_qty(m * factor)} {small}? {ONLY_NUMBER}"
        add(
            f"{small}-to-{unit}-{_qty(m * factor)}",
            prompt,
            m,
            f"conv-{unit}-{small}-{_qty(m)}",
            f"{unit}-reverse",
        )
    for n in rng.sample([*range(2, 13), 15, 20, 24, 30, 50, 100], 6):
        prompt = f"How many eggs are in {n} dozen eggs? {ONLY_NUMBER}"
        add(f"dozen-{n}", prompt, 12 * n, f"conv-dozen-{n}", "dozen")
    for n in rng.sample(range(2, 10), 2):
        add(
            f"hour-to-second-{n}",
            f"How many seconds are in {n} hours? {ONLY_NUMBER}",
            3600 * n,
            f"conv-hour-second-{n}",
            "two-step",
        )
        add(
            f"day-to-minute-{n}",
            f"How many minutes are in {n} days? {ONLY_NUMBER}",
            1440 * n,
            f"conv-day-minute-{n}",
            "two-step",
        )
    # number words <-> digits (the same number asked both ways shares a group)
    two_digit = rng.sample([n for n in range(13, 100) if n % 10], 18)
    three_digit = rng.sample([n for n in range(101, 1000) if n % 100 > 12], 10)
    for index, n in enumerate(two_digit + three_digit):
        words, group = number_words(n), f"conv-words-{n}"
        if index % 3 != 1:
            prompt = f'Write the number "{words}" using digits. {ONLY_NUMBER}'
            add(f"words-to-digits-{n}", prompt, n, group, "words-to-digits")
        if index % 3 != 2:
            prompt = f"How is the number {n} written in words? {FEW_WORDS}"
            accepted = [words.replace(" hundred ", " hundred and ")] if n > 100 else []
            records.append(
                _record(
                    f"conv-digits-to-words-{n}",
                    prompt,
                    words,
                    group,
                    "conversion",
                    "digits-to-words",
                    accepted,
                )
            )
    for n in ROMAN_NUMBERS:
        prompt = f"What number does the Roman numeral {roman(n)} stand for? {ONLY_NUMBER}"
        add(f"roman-{roman(n).lower()}", prompt, n, f"conv-roman-{n}", "roman" if n < 40 else "roman-large")
    return records


# --- spelling: letters of short words ---------------------------------------------------------------
_WORD_LIST = """
cat dog sun tree house apple banana orange yellow purple pencil window garden rabbit turtle butter
letter coffee cookie bottle kitten puppy mirror pepper summer winter balloon elephant giraffe umbrella
strawberry cheese teeth bookkeeper committee success address baggage tomorrow chocolate computer
keyboard library mountain river school teacher bicycle doctor engine flower guitar hammer island jacket
kettle lemon monkey needle octopus pizza question rocket sister ticket unicorn village wizard yogurt
zebra grass basketball football moon book street door bell happy jelly little parrot tunnel bubble
cherry table chair paper water bread flour sugar honey money phone radio piano violin drum candle pillow
blanket carpet kitchen basket bucket castle dragon forest desert ocean planet rainbow thunder volcano
penguin dolphin tiger horse goat chicken duck frog beetle butterfly carrot potato tomato onion garlic
melon peach grape button pocket wallet helmet ladder mitten muffin noodle sandwich teapot tractor
trumpet wagon yacht zipper jungle meadow valley puzzle mystery ribbon marble pebble saddle anchor
dinosaur eagle feather glove harbor jigsaw koala lantern magnet nest orbit parcel quilt rattle shadow
tablet tulip vase walnut whistle yarn zoo acorn falcon gravel lizard napkin otter pirate raven sponge
velvet
"""
WORDS = list(dict.fromkeys(_WORD_LIST.split()))


def spelling_records() -> list[dict[str, Any]]:
    """Per word (one group): its length, how often a letter occurs, its first or last letter.

    First and last letters are single-letter answers: words whose letter would be "a", "i" or "s"
    (see UNSAFE_LETTERS) are not asked.
    """
    rng = random.Random(f"{SEED}-spelling")
    records: list[dict[str, Any]] = []
    for word in WORDS:

        def add(kind: str, prompt: str, answer: str | int, category: str, word: str = word) -> None:
            records.append(
                _record(f"spell-{kind}-{word}", prompt, answer, f"spell-{word}", "spelling", category)
            )

        counts = Counter(word)
        if rng.random() < 0.15:
            add("length", f'How many letters are in the word "{word}"? {ONLY_NUMBER}', len(word), "length")
        if rng.random() < 0.5:
            repeated = sorted(c for c, k in counts.items() if k > 1)
            letter = rng.choice(repeated if repeated and rng.random() < 0.5 else sorted(counts))
            prompt = f'How many times does the letter "{letter}" appear in the word "{word}"? {ONLY_NUMBER}'
            category = "letter-count-repeated" if counts[letter] > 1 else "letter-count-once"
            add(f"count-{letter}", prompt, counts[letter], category)
        edge = rng.random()
        if edge < 0.5 and word[0] not in UNSAFE_LETTERS:
            prompt = f'What is the first letter of the word "{word}"? {ONLY_LETTER}'
            add("first", prompt, word[0].upper(), "first-letter")
        elif edge > 0.75 and word[-1] not in UNSAFE_LETTERS:
            prompt = f'What is the last letter of the word "{word}"? {ONLY_LETTER}'
            add("last", prompt, word[-1].upper(), "last-letter")
    return records


# --- word forms: past tenses, comparatives and superlatives -----------------------------------------
# (verb, past tense, accepted). Verbs with two common past tenses (dream, learn, dive...) are left out.
PAST_TENSES: list[tuple[str, str, list[str]]] = [
    ("go", "went", []),
    ("eat", "ate", []),
    ("see", "saw", []),
    ("run", "ran", []),
    ("swim", "swam", []),
    ("write", "wrote", []),
    ("take", "took", []),
    ("give", "gave", []),
    ("buy", "bought", []),
    ("think", "thought", []),
    ("bring", "brought", []),
    ("catch", "caught", []),
    ("teach", "taught", []),
    ("sleep", "slept", []),
    ("drink", "drank", []),
    ("sing", "sang", []),
    ("begin", "began", []),
    ("fly", "flew", []),
    ("know", "knew", []),
    ("throw", "threw", []),
    ("speak", "spoke", []),
    ("break", "broke", []),
    ("choose", "chose", []),
    ("drive", "drove", []),
    ("ride", "rode", []),
    ("freeze", "froze", []),
    ("steal", "stole", []),
    ("forget", "forgot", []),
    ("sit", "sat", []),
    ("win", "won", []),
    ("feel", "felt", []),
    ("keep", "kept", []),
    ("lose", "lost", []),
    ("meet", "met", []),
    ("pay", "paid", []),
    ("sell", "sold", []),
    ("tell", "told", []),
    ("stand", "stood", []),
    ("hold", "held", []),
    ("find", "found", []),
    ("build", "built", []),
    ("send", "sent", []),
    ("spend", "spent", []),
    ("fall", "fell", []),
    ("grow", "grew", []),
    ("draw", "drew", []),
    ("wear", "wore", []),
    ("come", "came", []),
    ("get", "got", []),
    ("make", "made", []),
    ("do", "did", []),
    ("hear", "heard", []),
    ("shake", "shook", []),
    ("hide", "hid", []),
    ("blow", "blew", []),
    ("fight", "fought", []),
    ("sweep", "swept", []),
    ("forgive", "forgave", []),
    ("feed", "fed", []),
    ("strike", "struck", []),
    ("wake", "woke", []),
    ("walk", "walked", []),
    ("play", "played", []),
    ("jump", "jumped", []),
    ("cry", "cried", []),
    ("stop", "stopped", []),
    ("try", "tried", []),
    ("carry", "carried", []),
    ("plan", "planned", []),
    ("study", "studied", []),
    ("hope", "hoped", []),
    ("clap", "clapped", []),
    ("dance", "danced", []),
    ("smile", "smiled", []),
    ("visit", "visited", []),
    ("open", "opened", []),
    ("wait", "waited", []),
    ("listen", "listened", []),
    ("travel", "traveled", ["travelled"]),
    ("cook", "cooked", []),
    ("paint", "painted", []),
    ("help", "helped", []),
    ("call", "called", []),
    ("ask", "asked", []),
    ("look", "looked", []),
    ("talk", "talked", []),
    ("work", "worked", []),
    ("climb", "climbed", []),
    ("kick", "kicked", []),
    ("laugh", "laughed", []),
    ("move", "moved", []),
    ("live", "lived", []),
    ("love", "loved", []),
    ("close", "closed", []),
    ("arrive", "arrived", []),
    ("stay", "stayed", []),
    ("enjoy", "enjoyed", []),
    ("drop", "dropped", []),
    ("shop", "shopped", []),
    ("hurry", "hurried", []),
    ("worry", "worried", []),
    ("reply", "replied", []),
]
# (adjective, comparative, superlative, accepted comparatives, accepted superlatives).
COMPARISONS: list[tuple[str, str, str, list[str], list[str]]] = [
    ("big", "bigger", "biggest", [], []),
    ("small", "smaller", "smallest", [], []),
    ("tall", "taller", "tallest", [], []),
    ("fast", "faster", "fastest", [], []),
    ("happy", "happier", "happiest", [], []),
    ("easy", "easier", "easiest", [], []),
    ("heavy", "heavier", "heaviest", [], []),
    ("funny", "funnier", "funniest", [], []),
    ("good", "better", "best", [], []),
    ("bad", "worse", "worst", [], []),
    ("far", "farther", "farthest", ["further"], ["furthest"]),
    ("hot", "hotter", "hottest", [], []),
    ("thin", "thinner", "thinnest", [], []),
    ("wet", "wetter", "wettest", [], []),
    ("young", "younger", "youngest", [], []),
    ("old", "older", "oldest", ["elder"], ["eldest"]),
    ("strong", "stronger", "strongest", [], []),
    ("large", "larger", "largest", [], []),
    ("nice", "nicer", "nicest", [], []),
    ("busy", "busier", "busiest", [], []),
    ("early", "earlier", "earliest", [], []),
    ("dry", "drier", "driest", ["dryer"], []),
    ("cheap", "cheaper", "cheapest", [], []),
    ("clean", "cleaner", "cleanest", [], []),
    ("dark", "darker", "darkest", [], []),
    ("deep", "deeper", "deepest", [], []),
    ("high", "higher", "highest", [], []),
    ("long", "longer", "longest", [], []),
    ("loud", "louder", "loudest", [], []),
    ("rich", "richer", "richest", [], []),
    ("short", "shorter", "shortest", [], []),
    ("warm", "warmer", "warmest", [], []),
    ("safe", "safer", "safest", [], []),
    ("wise", "wiser", "wisest", [], []),
    ("sad", "sadder", "saddest", [], []),
    ("fat", "fatter", "fattest", [], []),
    ("pretty", "prettier", "prettiest", [], []),
    ("lazy", "lazier", "laziest", [], []),
    ("beautiful", "more beautiful", "most beautiful", [], []),
    ("expensive", "more expensive", "most expensive", [], []),
    ("important", "more important", "most important", [], []),
    ("dangerous", "more dangerous", "most dangerous", [], []),
    ("difficult", "more difficult", "most difficult", [], []),
    ("famous", "more famous", "most famous", [], []),
    ("careful", "more careful", "most careful", [], []),
]


def words_records() -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-words")
    records: list[dict[str, Any]] = []
    for verb, past, accepted in PAST_TENSES:
        prompt = f'What is the past tense of the verb "{verb}"? {ONE_WORD}'
        category = "past-regular" if past.endswith("ed") else "past-irregular"
        records.append(
            _record(f"words-past-{verb}", prompt, past, f"words-{verb}", "words", category, accepted)
        )
    for adjective, comparative, superlative, more, most in COMPARISONS:
        instruction = ONE_WORD if " " not in comparative else FEW_WORDS
        which = rng.random()  # the comparative, the superlative or both (one group per adjective)
        if which < 0.7:
            prompt = f'What is the comparative form of the adjective "{adjective}"? {instruction}'
            records.append(
                _record(
                    f"words-comparative-{adjective}",
                    prompt,
                    comparative,
                    f"words-{adjective}",
                    "words",
                    "comparative",
                    more,
                )
            )
        if which > 0.3:
            prompt = f'What is the superlative form of the adjective "{adjective}"? {instruction}'
            records.append(
                _record(
                    f"words-superlative-{adjective}",
                    prompt,
                    superlative,
                    f"words-{adjective}",
                    "words",
                    "superlative",
                    most,
                )
            )
    return records


# --- more factual questions (each line checked by hand) ---------------------------------------------
# Capitals of more countries; same exclusions as CAPITALS (capital named like the country, disputed,
# split or recently moved: Indonesia, Myanmar, Tanzania, Ivory Coast, Benin, Burundi, Sudan...).
MORE_CAPITALS: list[tuple[str, str, list[str]]] = [
    ("Iceland", "Reykjavik", []),
    ("Estonia", "Tallinn", []),
    ("Latvia", "Riga", []),
    ("Slovenia", "Ljubljana", []),
    ("Albania", "Tirana", ["Tirane"]),
    ("North Macedonia", "Skopje", []),
    ("Bosnia and Herzegovina", "Sarajevo", []),
    ("Montenegro", "Podgorica", []),
    ("Belarus", "Minsk", []),
    ("Moldova", "Chisinau", ["Kishinev"]),
    ("Liechtenstein", "Vaduz", []),
    ("Malta", "Valletta", ["Valetta"]),
    ("Cyprus", "Nicosia", []),
    ("Azerbaijan", "Baku", []),
    ("Kyrgyzstan", "Bishkek", []),
    ("Tajikistan", "Dushanbe", []),
    ("Turkmenistan", "Ashgabat", ["Ashkhabad"]),
    ("Laos", "Vientiane", []),
    ("Bhutan", "Thimphu", []),
    ("the Maldives", "Male", []),
    ("Brunei", "Bandar Seri Begawan", []),
    ("Oman", "Muscat", []),
    ("Bahrain", "Manama", []),
    ("Uganda", "Kampala", []),
    ("Rwanda", "Kigali", []),
    ("Zambia", "Lusaka", []),
    ("Malawi", "Lilongwe", []),
    ("Angola", "Luanda", []),
    ("Mozambique", "Maputo", []),
    ("Madagascar", "Antananarivo", []),
    ("Cameroon", "Yaounde", []),
    ("Gabon", "Libreville", []),
    ("the Democratic Republic of the Congo", "Kinshasa", []),
    ("Mali", "Bamako", []),
    ("Niger", "Niamey", []),
    ("Chad", "N'Djamena", ["Ndjamena"]),
    ("Burkina Faso", "Ouagadougou", []),
    ("Mauritania", "Nouakchott", []),
    ("Liberia", "Monrovia", []),
    ("Sierra Leone", "Freetown", []),
    ("Togo", "Lome", []),
    ("Eritrea", "Asmara", ["Asmera"]),
    ("Somalia", "Mogadishu", []),
    ("South Sudan", "Juba", []),
    ("Libya", "Tripoli", []),
    ("Namibia", "Windhoek", []),
    ("Botswana", "Gaborone", []),
    ("Lesotho", "Maseru", []),
    ("Paraguay", "Asuncion", []),
    ("Suriname", "Paramaribo", []),
    ("Guyana", "Georgetown", []),
    ("Honduras", "Tegucigalpa", []),
    ("Nicaragua", "Managua", []),
    ("Belize", "Belmopan", []),
    ("the Dominican Republic", "Santo Domingo", []),
    ("Haiti", "Port-au-Prince", []),
    ("the Bahamas", "Nassau", []),
    ("Trinidad and Tobago", "Port of Spain", []),
    ("Fiji", "Suva", []),
    ("Papua New Guinea", "Port Moresby", []),
]
# Capital -> country for more well-known capitals (same group as the country).
MORE_REVERSE_CAPITALS: list[tuple[str, list[str]]] = [
    ("Portugal", []),
    ("Ireland", ["Republic of Ireland"]),
    ("Austria", []),
    ("Hungary", []),
    ("Sweden", []),
    ("Norway", []),
    ("Denmark", []),
    ("Finland", []),
    ("Poland", []),
    ("the Czech Republic", ["Czechia"]),
    ("Ukraine", []),
    ("Iceland", []),
    ("Thailand", []),
    ("Vietnam", ["Viet Nam"]),
    ("India", []),
    ("Iran", []),
    ("Cuba", []),
    ("Chile", []),
    ("Colombia", []),
    ("Nigeria", []),
    ("Ethiopia", []),
    ("Morocco", []),
]
# (country, continent). Transcontinental countries, and those often placed in a region instead
# (Middle East, Central America, Caribbean, Oceania), are left out.
CONTINENTS: list[tuple[str, str]] = [
    *[
        (c, "Europe")
        for c in [
            "France",
            "Germany",
            "Italy",
            "Spain",
            "Portugal",
            "Poland",
            "Sweden",
            "Norway",
            "Finland",
            "Greece",
            "Austria",
            "Hungary",
            "Ireland",
            "Belgium",
            "Switzerland",
            "Denmark",
            "Romania",
            "Ukraine",
            "the Czech Republic",
            "Iceland",
        ]
    ],
    *[
        (c, "Asia")
        for c in [
            "Japan",
            "China",
            "India",
            "Thailand",
            "Vietnam",
            "Mongolia",
            "Nepal",
            "Pakistan",
            "Bangladesh",
            "South Korea",
            "North Korea",
            "the Philippines",
            "Malaysia",
            "Cambodia",
            "Laos",
            "Uzbekistan",
        ]
    ],
    *[
        (c, "Africa")
        for c in [
            "Nigeria",
            "Kenya",
            "Ethiopia",
            "Ghana",
            "Senegal",
            "Zimbabwe",
            "Morocco",
            "Algeria",
            "Tunisia",
            "Uganda",
            "Zambia",
            "Angola",
            "Madagascar",
            "Mali",
            "Namibia",
            "Botswana",
            "Cameroon",
            "Somalia",
        ]
    ],
    *[
        (c, "South America")
        for c in [
            "Brazil",
            "Argentina",
            "Chile",
            "Peru",
            "Colombia",
            "Venezuela",
            "Ecuador",
            "Uruguay",
            "Paraguay",
            "Bolivia",
        ]
    ],
    *[(c, "North America") for c in ["Canada", "the United States", "Mexico"]],
]
MORE_CURRENCIES: list[tuple[str, str, list[str]]] = [
    ("Norway", "krone", ["kroner", "Norwegian krone"]),
    ("Denmark", "krone", ["kroner", "Danish krone"]),
    ("Iceland", "krona", ["kronur", "Icelandic krona"]),
    ("Hungary", "forint", ["forints"]),
    ("the Czech Republic", "koruna", ["korunas", "crown", "crowns"]),
    ("Romania", "leu", ["lei"]),
    ("Ukraine", "hryvnia", ["hryvnias", "hryvnya", "hryvna"]),
    ("France", "euro", ["euros"]),
    ("Italy", "euro", ["euros"]),
    ("Spain", "euro", ["euros"]),
    ("Canada", "dollar", ["dollars"]),
    ("Australia", "dollar", ["dollars"]),
    ("New Zealand", "dollar", ["dollars"]),
    ("Argentina", "peso", ["pesos"]),
    ("Chile", "peso", ["pesos"]),
    ("Colombia", "peso", ["pesos"]),
    ("the Philippines", "peso", ["pesos", "piso"]),
    ("Peru", "sol", ["soles", "nuevo sol"]),
    ("Egypt", "pound", ["pounds", "Egyptian pound"]),
    ("Nigeria", "naira", []),
    ("Kenya", "shilling", ["shillings"]),
    ("Ghana", "cedi", ["cedis"]),
    ("Ethiopia", "birr", []),
    ("Morocco", "dirham", ["dirhams"]),
    ("the United Arab Emirates", "dirham", ["dirhams"]),
    ("Saudi Arabia", "riyal", ["riyals", "rial"]),
    ("Qatar", "riyal", ["riyals", "rial"]),
    ("Pakistan", "rupee", ["rupees"]),
    ("Bangladesh", "taka", []),
    ("Indonesia", "rupiah", []),
    ("Malaysia", "ringgit", []),
]
MORE_LANGUAGES: list[tuple[str, str, list[str]]] = [
    ("Spain", "Spanish", ["Castilian"]),
    ("France", "French", []),
    ("China", "Chinese", ["Mandarin", "Mandarin Chinese", "Standard Chinese", "Putonghua"]),
    ("Argentina", "Spanish", []),
    ("Chile", "Spanish", []),
    ("Colombia", "Spanish", []),
    ("Peru", "Spanish", []),
    ("Venezuela", "Spanish", []),
    ("Uruguay", "Spanish", []),
    ("Cuba", "Spanish", []),
    ("Austria", "German", []),
    ("Hungary", "Hungarian", ["Magyar"]),
    ("Denmark", "Danish", []),
    ("Finland", "Finnish", []),
    ("Czechia", "Czech", []),  # "the Czech Republic" would give the answer away
    ("Slovakia", "Slovak", ["Slovakian"]),
    ("Romania", "Romanian", []),
    ("Bulgaria", "Bulgarian", []),
    ("Serbia", "Serbian", []),
    ("Croatia", "Croatian", []),
    ("Ukraine", "Ukrainian", []),
    ("Lithuania", "Lithuanian", []),
    ("Latvia", "Latvian", []),
    ("Estonia", "Estonian", []),
    ("Albania", "Albanian", []),
    ("Armenia", "Armenian", []),
    ("Iceland", "Icelandic", []),
    ("Israel", "Hebrew", []),
    ("Saudi Arabia", "Arabic", []),
    ("Indonesia", "Indonesian", ["Bahasa Indonesia", "Bahasa"]),
    ("Bangladesh", "Bengali", ["Bangla"]),
    ("Nepal", "Nepali", ["Nepalese"]),
    ("Mongolia", "Mongolian", []),
    ("Cambodia", "Khmer", ["Cambodian"]),
    ("Laos", "Lao", ["Laotian"]),
    ("the United States", "English", []),
    ("the United Kingdom", "English", []),
    ("Australia", "English", []),
    ("New Zealand", "English", []),
]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
# (question, answer, accepted, group).
MORE_MISC: list[tuple[str, str, list[str], str]] = [
    ("Which planet is the smallest in our solar system?", "Mercury", [], "planet-smallest"),
    ("Which planet is the hottest in our solar system?", "Venus", [], "planet-hottest"),
    ("Which planet is farthest from the Sun?", "Neptune", [], "planet-order-neptune"),
    ("Which planet do we live on?", "Earth", ["the Earth"], "planet-order-earth"),
    ("What is the natural satellite of Earth called?", "Moon", ["the Moon", "Luna"], "moon"),
    ("What is the name of the galaxy we live in?", "Milky Way", [], "galaxy"),
    ("What color do you get by mixing red and yellow?", "orange", [], "color-mix-red-yellow"),
    ("What color do you get by mixing red and blue?", "purple", ["violet"], "color-mix-red-blue"),
    ("What color do you get by mixing red and white?", "pink", [], "color-mix-red-white"),
    ("What color do you get by mixing black and white?", "gray", ["grey"], "color-mix-black-white"),
    ("What is the largest continent by area?", "Asia", [], "continent-largest"),
    ("What is the smallest continent by area?", "Australia", ["Oceania"], "continent-smallest"),
    ("What is the longest river in Africa?", "Nile", ["Nile River"], "river-africa"),
    (
        "What is the largest country in the world by area?",
        "Russia",
        ["Russian Federation"],
        "country-largest",
    ),
    ("Which ocean lies between Africa and Australia?", "Indian Ocean", ["Indian"], "ocean-indian"),
    ("Which ocean lies between Europe and North America?", "Atlantic", ["Atlantic Ocean"], "ocean-atlantic"),
    ("What is the tallest animal in the world?", "giraffe", ["giraffes"], "animal-tallest"),
    (
        "What is the largest land animal?",
        "elephant",
        ["elephants", "African elephant"],
        "animal-largest-land",
    ),
    ("What is the largest bird in the world?", "ostrich", ["ostriches"], "bird-largest"),
    ("Which animal is known as the king of the jungle?", "lion", ["lions"], "animal-lion"),
    ("What does a caterpillar turn into?", "butterfly", ["butterflies", "moth", "moths"], "caterpillar"),
    ("Which organ pumps blood around the body?", "heart", [], "organ-heart"),
    ("Which organs do humans use to breathe?", "lungs", ["lung"], "organ-lungs"),
    ("Which gas do humans need to breathe in to stay alive?", "oxygen", ["O2"], "gas-oxygen"),
    ("What is the chemical formula of table salt?", "NaCl", [], "formula-salt"),
    ("What is the center of an atom called?", "nucleus", [], "atom-nucleus"),
    ("What sweet food do bees make?", "honey", [], "bees-honey"),
    ("What is frozen water called?", "ice", [], "water-ice"),
]
# (question, answer, group): numbers never appear in the question.
MORE_COUNTS: list[tuple[str, int, str]] = [
    ("How many sides does a pentagon have?", 5, "sides-pentagon"),
    ("How many sides does a heptagon have?", 7, "sides-heptagon"),
    ("How many sides does a decagon have?", 10, "sides-decagon"),
    ("How many sides does a square have?", 4, "sides-square"),
    ("How many faces does a cube have?", 6, "cube-faces"),
    ("How many corners does a cube have?", 8, "cube-corners"),
    ("How many edges does a cube have?", 12, "cube-edges"),
    ("How many zeros are there in a thousand?", 3, "zeros-thousand"),
    ("How many zeros are there in a million?", 6, "zeros-million"),
    ("How many zeros are there in a billion?", 9, "zeros-billion"),
    ("How many letters are in the English alphabet?", 26, "alphabet-letters"),
    ("How many years are in a century?", 100, "years-century"),
    ("How many years are in a decade?", 10, "years-decade"),
    ("How many years are in a millennium?", 1000, "years-millennium"),
    ("How many teeth does an adult human normally have, including wisdom teeth?", 32, "teeth-adult"),
    ("How many legs does a dog have?", 4, "legs-dog"),
    ("How many legs does a bird have?", 2, "legs-bird"),
    ("How many wheels does a bicycle have?", 2, "wheels-bicycle"),
    ("How many wheels does a tricycle have?", 3, "wheels-tricycle"),
    ("How many players does a basketball team have on the court?", 5, "players-basketball"),
    ("How many weeks are in a year?", 52, "weeks-year"),
    ("How many strings does a standard guitar have?", 6, "strings-guitar"),
    ("How many arms does an octopus have?", 8, "arms-octopus"),
    ("How many colors are in a rainbow?", 7, "colors-rainbow"),
]


# (subject, color, accepted): "What color is {subject}?"
COLORS: list[tuple[str, str, list[str]]] = [
    ("a ripe banana", "yellow", []),
    ("grass", "green", []),
    ("fresh snow", "white", []),
    ("the sky on a clear, sunny day", "blue", []),
    ("a ripe tomato", "red", []),
    ("coal", "black", []),
    ("milk", "white", []),
    ("a ripe lemon", "yellow", []),
    ("a carrot", "orange", []),
    ("milk chocolate", "brown", []),
    ("human blood", "red", []),
    ("the fur of a polar bear", "white", []),
    ("a crow", "black", []),
    ("an emerald", "green", []),
    ("a ruby", "red", []),
    ("a flamingo", "pink", []),
    ("a lime", "green", []),
    ("a pumpkin", "orange", []),
]
# (animal, sound, accepted): "What sound does a {animal} make?"
SOUNDS: list[tuple[str, str, list[str]]] = [
    ("cow", "moo", ["moos", "mooing"]),
    ("dog", "bark", ["barks", "barking", "woof"]),
    ("cat", "meow", ["meows", "meowing", "miaow", "mew", "purr"]),
    ("duck", "quack", ["quacks", "quacking"]),
    ("sheep", "baa", ["baas", "bleat", "bleats"]),
    ("lion", "roar", ["roars", "roaring"]),
    ("snake", "hiss", ["hisses", "hissing"]),
    ("pig", "oink", ["oinks", "grunt", "grunts"]),
    ("horse", "neigh", ["neighs", "whinny", "whinnies"]),
    ("owl", "hoot", ["hoots", "hooting"]),
    ("bee", "buzz", ["buzzes", "buzzing"]),
    ("frog", "croak", ["croaks", "croaking", "ribbit"]),
    ("mouse", "squeak", ["squeaks", "squeaking"]),
    ("donkey", "bray", ["brays", "hee-haw"]),
    ("wolf", "howl", ["howls", "howling"]),
]
# (question, answer, accepted, group): animals and people, one fact each.
ANIMALS_AND_PEOPLE: list[tuple[str, str, list[str], str]] = [
    ("Which animal has a long trunk?", "elephant", ["elephants"], "animal-largest-land"),
    (
        "Which African animal looks like a horse with black and white stripes?",
        "zebra",
        ["zebras"],
        "animal-zebra",
    ),
    ("Which bird cannot fly and lives in Antarctica?", "penguin", ["penguins"], "animal-penguin"),
    ("Which animal is known for its very long neck?", "giraffe", ["giraffes"], "animal-tallest"),
    ("Which insect makes honey?", "bee", ["bees", "honeybee", "honeybees", "honey bee"], "bees-honey"),
    ("Which animal spins webs to catch insects?", "spider", ["spiders"], "animal-spider"),
    ("What is the largest living cat species?", "tiger", ["tigers"], "animal-tiger"),
    ("Which animal is called man's best friend?", "dog", ["dogs"], "animal-dog"),
    ("Which farm animal gives us wool?", "sheep", [], "animal-sheep"),
    ("Which sea creature has a hard shell and claws and walks sideways?", "crab", ["crabs"], "animal-crab"),
    ("What is the largest fish in the world?", "whale shark", [], "animal-whale-shark"),
    (
        "Which animal carries its babies in a pouch and hops?",
        "kangaroo",
        ["kangaroos", "wallaby", "wallabies"],
        "animal-kangaroo",
    ),
    (
        "Who was the first President of the United States?",
        "George Washington",
        ["Washington"],
        "us-president",
    ),
    ("Who was the first person to travel into space?", "Yuri Gagarin", ["Gagarin"], "space-first"),
    ("Who discovered penicillin?", "Alexander Fleming", ["Fleming"], "penicillin"),
    ("Who formulated the law of universal gravitation?", "Isaac Newton", ["Newton"], "newton"),
    ("Who painted The Starry Night?", "Vincent van Gogh", ["van Gogh"], "starry-night"),
    (
        "Who painted the ceiling of the Sistine Chapel?",
        "Michelangelo",
        ["Michelangelo Buonarroti"],
        "sistine",
    ),
    ("Who painted The Last Supper?", "Leonardo da Vinci", ["Leonardo", "da Vinci"], "mona-lisa"),
    ("Who composed the Moonlight Sonata?", "Ludwig van Beethoven", ["Beethoven"], "beethoven"),
    ("Who composed the opera The Magic Flute?", "Wolfgang Amadeus Mozart", ["Mozart"], "mozart"),
    ("Who was the first woman to win a Nobel Prize?", "Marie Curie", ["Curie"], "curie"),
    (
        "Who created the detective Sherlock Holmes?",
        "Arthur Conan Doyle",
        ["Conan Doyle", "Doyle"],
        "sherlock",
    ),
    (
        "Who was the British Prime Minister for most of the Second World War?",
        "Winston Churchill",
        ["Churchill"],
        "churchill",
    ),
    (
        "Who led India's non-violent struggle for independence from British rule?",
        "Mahatma Gandhi",
        ["Gandhi", "Mohandas Gandhi"],
        "gandhi",
    ),
    ("Who led the first expedition to reach the South Pole?", "Roald Amundsen", ["Amundsen"], "south-pole"),
    (
        "Who invented the printing press with movable type in Europe?",
        "Johannes Gutenberg",
        ["Gutenberg"],
        "gutenberg",
    ),
    ("In Greek mythology, who is the king of the gods?", "Zeus", [], "zeus"),
    ("In Greek mythology, who is the god of the sea?", "Poseidon", [], "poseidon"),
]
# More (title, author, accepted); an author's books share the group of BOOKS.
MORE_BOOKS: list[tuple[str, str, list[str]]] = [
    ("Macbeth", "William Shakespeare", ["Shakespeare"]),
    ("Othello", "William Shakespeare", ["Shakespeare"]),
    ("Great Expectations", "Charles Dickens", ["Dickens"]),
    ("A Christmas Carol", "Charles Dickens", ["Dickens"]),
    ("Emma", "Jane Austen", ["Austen"]),
    ("Sense and Sensibility", "Jane Austen", ["Austen"]),
    ("Anna Karenina", "Leo Tolstoy", ["Tolstoy"]),
    ("The Adventures of Tom Sawyer", "Mark Twain", ["Twain", "Samuel Clemens"]),
    ("The Lord of the Rings", "J. R. R. Tolkien", ["Tolkien"]),
    ("Wuthering Heights", "Emily Bronte", []),
    ("The Iliad", "Homer", []),
    ("The Time Machine", "H. G. Wells", ["Wells", "HG Wells"]),
    ("The War of the Worlds", "H. G. Wells", ["Wells", "HG Wells"]),
    ("Twenty Thousand Leagues Under the Seas", "Jules Verne", ["Verne"]),
    ("Peter Pan", "J. M. Barrie", ["Barrie"]),
    ("Winnie-the-Pooh", "A. A. Milne", ["Milne"]),
    ("The Divine Comedy", "Dante Alighieri", ["Dante"]),
    ("The Three Musketeers", "Alexandre Dumas", ["Dumas"]),
    ("The Count of Monte Cristo", "Alexandre Dumas", ["Dumas"]),
    ("Matilda", "Roald Dahl", ["Dahl"]),
    ("The Cat in the Hat", "Dr. Seuss", ["Seuss", "Theodor Geisel"]),
    ("The Little Prince", "Antoine de Saint-Exupery", ["Saint-Exupery"]),
    ("The Grapes of Wrath", "John Steinbeck", ["Steinbeck"]),
    ("Madame Bovary", "Gustave Flaubert", ["Flaubert"]),
    ("The Brothers Karamazov", "Fyodor Dostoevsky", ["Dostoevsky", "Dostoyevsky"]),
    ("The Call of the Wild", "Jack London", []),
    ("Heart of Darkness", "Joseph Conrad", ["Conrad"]),
    ("Lord of the Flies", "William Golding", ["Golding"]),
    ("Ulysses", "James Joyce", ["Joyce"]),
    ("The Metamorphosis", "Franz Kafka", ["Kafka"]),
]
MORE_PLURALS: list[tuple[str, str, list[str]]] = [
    ("box", "boxes", []),
    ("dish", "dishes", []),
    ("church", "churches", []),
    ("fox", "foxes", []),
    ("glass", "glasses", []),
    ("toy", "toys", []),
    ("key", "keys", []),
    ("lady", "ladies", []),
    ("story", "stories", []),
    ("watch", "watches", []),
    ("brush", "brushes", []),
    ("party", "parties", []),
    ("tomato", "tomatoes", []),
    ("echo", "echoes", []),
    ("country", "countries", []),
    ("calf", "calves", []),
    ("loaf", "loaves", []),
    ("thief", "thieves", []),
    ("shelf", "shelves", []),
    ("elf", "elves", []),
    ("scarf", "scarves", ["scarfs"]),
    ("index", "indices", ["indexes"]),
    ("vertex", "vertices", ["vertexes"]),
    ("matrix", "matrices", ["matrixes"]),
    ("alumnus", "alumni", []),
    ("stimulus", "stimuli", []),
    ("axis", "axes", []),
    ("oasis", "oases", []),
    ("hypothesis", "hypotheses", []),
    ("diagnosis", "diagnoses", []),
    ("appendix", "appendices", ["appendixes"]),
    ("dwarf", "dwarves", ["dwarfs"]),
    ("bench", "benches", []),
    ("kiss", "kisses", []),
    ("dress", "dresses", []),
    ("tax", "taxes", []),
    ("family", "families", []),
    ("army", "armies", []),
    ("monkey", "monkeys", []),
    ("boy", "boys", []),
    ("chair", "chairs", []),
    ("horse", "horses", []),
    ("house", "houses", []),
    ("bird", "birds", []),
    ("flower", "flowers", []),
    ("window", "windows", []),
    ("berry", "berries", []),
    ("bush", "bushes", []),
]
# More opposites (pairs not in OPPOSITES).
MORE_OPPOSITES: list[tuple[str, str, list[str]]] = [
    ("big", "small", ["little", "tiny"]),
    ("tall", "short", []),
    ("open", "closed", ["close", "shut"]),
    ("inside", "outside", []),
    ("left", "right", []),
    ("young", "old", ["elderly"]),
    ("good", "bad", ["evil"]),
    ("love", "hate", []),
    ("soft", "hard", []),
    ("thick", "thin", []),
    ("laugh", "cry", []),
    ("begin", "end", ["finish"]),
    ("entrance", "exit", []),
    ("noisy", "quiet", ["silent"]),
    ("clean", "dirty", []),
    ("wide", "narrow", []),
    ("deep", "shallow", []),
    ("smooth", "rough", []),
    ("give", "take", ["receive"]),
    ("increase", "decrease", []),
    ("awake", "asleep", []),
    ("float", "sink", []),
    ("sunrise", "sunset", []),
    ("summer", "winter", []),
    ("floor", "ceiling", []),
    ("king", "queen", []),
    ("brother", "sister", []),
    ("boy", "girl", []),
    ("male", "female", []),
    ("first", "last", []),
    ("top", "bottom", []),
    ("include", "exclude", []),
    ("success", "failure", []),
    ("always", "never", []),
    ("everything", "nothing", []),
    ("sharp", "blunt", ["dull"]),
    ("borrow", "lend", []),
    ("husband", "wife", []),
    ("found", "lost", []),
    ("accept", "reject", ["refuse"]),
]


# (city, country, accepted): "In which country is the city of {city}?" Cities whose name is shared by
# a well-known city elsewhere (Perth, Birmingham, Guadalajara, Alexandria...) are left out.
_USA = ["United States of America", "USA", "US", "America"]
_UK = ["UK", "Britain", "Great Britain"]
CITIES: list[tuple[str, str, list[str]]] = [
    ("Barcelona", "Spain", []),
    ("Seville", "Spain", []),
    ("Munich", "Germany", []),
    ("Hamburg", "Germany", []),
    ("Milan", "Italy", []),
    ("Venice", "Italy", []),
    ("Florence", "Italy", []),
    ("Osaka", "Japan", []),
    ("Kyoto", "Japan", []),
    ("Toronto", "Canada", []),
    ("Vancouver", "Canada", []),
    ("Sydney", "Australia", []),
    ("Melbourne", "Australia", []),
    ("Rio de Janeiro", "Brazil", []),
    ("Sao Paulo", "Brazil", []),
    ("Mumbai", "India", []),
    ("Kolkata", "India", []),
    ("Chennai", "India", []),
    ("Shanghai", "China", []),
    ("Istanbul", "Turkey", ["Turkiye"]),
    ("Saint Petersburg", "Russia", []),
    ("Marseille", "France", []),
    ("Lyon", "France", []),
    ("Chicago", "the United States", _USA),
    ("Los Angeles", "the United States", _USA),
    ("Glasgow", "the United Kingdom", [*_UK, "Scotland"]),
    ("Edinburgh", "the United Kingdom", [*_UK, "Scotland"]),
    ("Krakow", "Poland", []),
    ("Porto", "Portugal", []),
    ("Casablanca", "Morocco", []),
    ("Cape Town", "South Africa", []),
    ("Johannesburg", "South Africa", []),
    ("Lagos", "Nigeria", []),
    ("Karachi", "Pakistan", []),
    ("Ho Chi Minh City", "Vietnam", ["Viet Nam"]),
    ("Auckland", "New Zealand", []),
    ("Dubai", "the United Arab Emirates", ["UAE"]),
    ("Geneva", "Switzerland", []),
    ("Zurich", "Switzerland", []),
    ("Salzburg", "Austria", []),
    ("Gothenburg", "Sweden", []),
    ("Busan", "South Korea", ["Korea"]),
    ("Monterrey", "Mexico", []),
    ("Medellin", "Colombia", []),
    ("Marrakesh", "Morocco", []),
    ("Cusco", "Peru", []),
    ("Antwerp", "Belgium", []),
    ("Rotterdam", "the Netherlands", ["Holland"]),
    ("Bordeaux", "France", []),
    ("Frankfurt", "Germany", []),
    ("Cologne", "Germany", []),
    ("Bangalore", "India", []),
    ("Yokohama", "Japan", []),
    ("Montreal", "Canada", []),
    ("Brisbane", "Australia", []),
    ("Bilbao", "Spain", []),
    ("Liverpool", "the United Kingdom", [*_UK, "England"]),
    ("Houston", "the United States", _USA),
    ("Seattle", "the United States", _USA),
    ("Guangzhou", "China", []),
]
# (landmark, country, accepted): "In which country is {landmark}?"
LANDMARKS: list[tuple[str, str, list[str]]] = [
    ("the Eiffel Tower", "France", []),
    ("the Colosseum", "Italy", []),
    ("the Great Wall", "China", []),
    ("the Taj Mahal", "India", []),
    ("the Statue of Liberty", "the United States", _USA),
    ("Big Ben", "the United Kingdom", [*_UK, "England"]),
    ("Machu Picchu", "Peru", []),
    ("the Great Pyramid of Giza", "Egypt", []),
    ("the Sydney Opera House", "Australia", []),
    ("the Christ the Redeemer statue", "Brazil", []),
    ("the Acropolis", "Greece", []),
    ("Petra", "Jordan", []),
    ("Angkor Wat", "Cambodia", []),
    ("Mount Fuji", "Japan", []),
    ("Stonehenge", "the United Kingdom", [*_UK, "England"]),
    ("the Kremlin", "Russia", []),
    ("the Sagrada Familia", "Spain", []),
    ("the Leaning Tower of Pisa", "Italy", []),
    ("Neuschwanstein Castle", "Germany", []),
    ("Chichen Itza", "Mexico", []),
    ("the CN Tower", "Canada", []),
    ("the Golden Gate Bridge", "the United States", _USA),
    ("the Burj Khalifa", "the United Arab Emirates", ["UAE"]),
    ("Table Mountain", "South Africa", []),
    ("the Hagia Sophia", "Turkey", ["Turkiye"]),
    ("the Brandenburg Gate", "Germany", []),
    ("the Alhambra", "Spain", []),
    ("Mount Kilimanjaro", "Tanzania", []),
    ("the Louvre museum", "France", []),
    ("the Parthenon", "Greece", []),
    ("Uluru", "Australia", []),
    ("the Forbidden City", "China", []),
]
# (abbreviation, what it stands for, accepted).
ABBREVIATIONS: list[tuple[str, str, list[str]]] = [
    ("USA", "United States of America", ["United States"]),
    ("UK", "United Kingdom", []),
    ("UN", "United Nations", []),
    ("EU", "European Union", []),
    ("NASA", "National Aeronautics and Space Administration", []),
    ("DNA", "deoxyribonucleic acid", []),
    ("CEO", "chief executive officer", []),
    ("FBI", "Federal Bureau of Investigation", []),
    ("NATO", "North Atlantic Treaty Organization", ["North Atlantic Treaty Organisation"]),
    ("WHO", "World Health Organization", ["World Health Organisation"]),
    ("ATM", "automated teller machine", ["automatic teller machine"]),
    ("GPS", "Global Positioning System", []),
    ("CPU", "central processing unit", []),
    ("PDF", "Portable Document Format", []),
    ("URL", "Uniform Resource Locator", ["Universal Resource Locator"]),
    ("HTML", "HyperText Markup Language", []),
    ("USB", "Universal Serial Bus", []),
    ("RAM", "random access memory", []),
    ("AI", "artificial intelligence", []),
    ("ASAP", "as soon as possible", []),
    ("FAQ", "frequently asked questions", ["frequently asked question"]),
    ("DIY", "do it yourself", []),
    ("VIP", "very important person", []),
    ("UFO", "unidentified flying object", []),
    ("LOL", "laughing out loud", ["laugh out loud"]),
    ("BBC", "British Broadcasting Corporation", []),
    ("NBA", "National Basketball Association", []),
    ("CD", "compact disc", ["compact disk"]),
    ("TV", "television", []),
    ("IQ", "intelligence quotient", []),
    ("PIN", "personal identification number", []),
    ("kg", "kilogram", ["kilograms", "kilogramme"]),
    ("km", "kilometer", ["kilometers", "kilometre", "kilometres"]),
]
# (male, female, accepted): "What is the female counterpart of "{male}"?" (pairs in MORE_OPPOSITES left out).
FEMALES: list[tuple[str, str, list[str]]] = [
    ("actor", "actress", []),
    ("prince", "princess", []),
    ("waiter", "waitress", []),
    ("lion", "lioness", []),
    ("duke", "duchess", []),
    ("emperor", "empress", []),
    ("host", "hostess", []),
    ("god", "goddess", []),
    ("nephew", "niece", []),
    ("uncle", "aunt", []),
    ("son", "daughter", []),
    ("father", "mother", []),
    ("gentleman", "lady", []),
    ("hero", "heroine", []),
    ("groom", "bride", []),
    ("monk", "nun", []),
    ("wizard", "witch", []),
    ("bull", "cow", []),
    ("rooster", "hen", []),
    ("stallion", "mare", []),
    ("landlord", "landlady", []),
    ("tiger", "tigress", []),
    ("headmaster", "headmistress", []),
    ("policeman", "policewoman", []),
    ("fiance", "fiancee", []),
    ("grandfather", "grandmother", []),
]
# (U.S. state, capital, accepted).
STATE_CAPITALS: list[tuple[str, str, list[str]]] = [
    ("California", "Sacramento", []),
    ("Texas", "Austin", []),
    ("New York", "Albany", []),
    ("Florida", "Tallahassee", []),
    ("Illinois", "Springfield", []),
    ("Pennsylvania", "Harrisburg", []),
    ("Ohio", "Columbus", []),
    ("Georgia", "Atlanta", []),
    ("Massachusetts", "Boston", []),
    ("Washington", "Olympia", []),
    ("Colorado", "Denver", []),
    ("Arizona", "Phoenix", []),
    ("Nevada", "Carson City", []),
    ("Oregon", "Salem", []),
    ("Michigan", "Lansing", []),
    ("Hawaii", "Honolulu", []),
    ("Alaska", "Juneau", []),
    ("Louisiana", "Baton Rouge", []),
    ("Tennessee", "Nashville", []),
    ("Virginia", "Richmond", []),
    ("Utah", "Salt Lake City", []),
    ("Minnesota", "Saint Paul", ["St. Paul"]),
]
# The other direction of OPPOSITES pairs (same group as the original question).
REVERSED_OPPOSITES: list[tuple[str, str, list[str]]] = [
    ("cold", "hot", ["warm"]),
    ("down", "up", []),
    ("white", "black", []),
    ("late", "early", []),
    ("south", "north", []),
    ("west", "east", []),
    ("sell", "buy", []),
    ("pull", "push", []),
    ("empty", "full", []),
    ("false", "true", []),
    ("dead", "alive", ["living"]),
    ("dry", "wet", []),
    ("slow", "fast", ["quick"]),
    ("weak", "strong", []),
    ("poor", "rich", ["wealthy"]),
    ("sad", "happy", []),
    ("after", "before", []),
    ("below", "above", []),
    ("night", "day", []),
    ("forget", "remember", []),
]


def _country_group(country: str) -> str:
    country = {"Czechia": "Czech Republic"}.get(country, country)
    return f"country-{slug(country.removeprefix('the '))}"


def more_factual_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []

    def add(rid: str, prompt: str, answer: str | int, accepted: list[str], group: str, category: str) -> None:
        records.append(_record(f"fact-{rid}", prompt, answer, group, "factual", category, accepted))

    for country, capital, accepted in MORE_CAPITALS:
        prompt = f"What is the capital of {country}? {FEW_WORDS}"
        add(f"capital-{slug(country)}", prompt, capital, accepted, _country_group(country), "capital")
    capital_of = {country: capital for country, capital, _ in CAPITALS + MORE_CAPITALS}
    for country, accepted in MORE_REVERSE_CAPITALS:
        prompt = f"{capital_of[country]} is the capital of which country? {FEW_WORDS}"
        add(
            f"capital-of-{slug(country)}",
            prompt,
            country,
            accepted,
            _country_group(country),
            "capital-reverse",
        )
    for country, continent in CONTINENTS:
        prompt = f"On which continent is {country}? {FEW_WORDS}"
        add(f"continent-{slug(country)}", prompt, continent, [], _country_group(country), "continent")
    for country, currency, accepted in MORE_CURRENCIES:
        prompt = f"What is the currency of {country} called? {FEW_WORDS}"
        add(f"currency-{slug(country)}", prompt, currency, accepted, _country_group(country), "currency")
    for country, language, accepted in MORE_LANGUAGES:
        prompt = f"What is the main language spoken in {country}? {FEW_WORDS}"
        add(f"language-{slug(country)}", prompt, language, accepted, _country_group(country), "language")
    for n, planet in enumerate(PLANETS, start=1):
        # "Which planet is closest to the Sun?" (Mercury) is in MISC: the same fact, the same group
        group = "misc-planet-closest" if n == 1 else f"misc-planet-order-{slug(planet)}"
        prompt = f"Which planet is the {_ORDINALS[n]} planet from the Sun? {FEW_WORDS}"
        add(f"planet-{n}", prompt, planet, [], group, "planet-order")
        if n > 1:
            prompt = f"Counting outward from the Sun, what number planet is {planet}? {ONLY_NUMBER}"
            records.append(
                _position_record(
                    f"fact-planet-number-{slug(planet)}", prompt, n, group, "factual", "planet-number"
                )
            )
    for question, answer, accepted, group in MORE_MISC:
        add(
            f"misc-{group}-{slug(answer)}",
            f"{question} {FEW_WORDS}",
            answer,
            accepted,
            f"misc-{group}",
            "misc",
        )
    for subject, color, accepted in COLORS:
        add(
            f"color-{slug(subject)}",
            f"What color is {subject}? {ONE_WORD}",
            color,
            accepted,
            f"color-{slug(subject)}",
            "color",
        )
    for animal, sound, accepted in SOUNDS:
        prompt = f"What sound does a {animal} make? {ONE_WORD}"
        add(f"sound-{animal}", prompt, sound, accepted, f"sound-{animal}", "animal-sound")
    for question, answer, accepted, group in ANIMALS_AND_PEOPLE:
        add(
            f"who-{group}-{slug(answer)}",
            f"{question} {FEW_WORDS}",
            answer,
            accepted,
            f"misc-{group}",
            "who-what",
        )
    for title, author, accepted in MORE_BOOKS:
        prompt = f'Who wrote the book "{title}"? {FEW_WORDS}'
        add(f"author-{slug(title)}", prompt, author, accepted, f"author-{slug(author)}", "author")
    for singular, plural, accepted in MORE_PLURALS:
        prompt = f'What is the plural of "{singular}"? {ONE_WORD}'
        add(f"plural-{singular}", prompt, plural, accepted, f"plural-{singular}", "plural")
    for word, opposite, accepted in MORE_OPPOSITES:
        prompt = f'What is the opposite of "{word}"? {ONE_WORD}'
        group = f"opposite-{'-'.join(sorted((word, opposite)))}"
        add(f"opposite-{word}", prompt, opposite, accepted, group, "opposite")
    for word, opposite, accepted in REVERSED_OPPOSITES:
        prompt = f'What is the opposite of "{word}"? {ONE_WORD}'
        group = f"opposite-{'-'.join(sorted((word, opposite)))}"
        add(f"opposite-{word}", prompt, opposite, accepted, group, "opposite")
    for city, country, accepted in CITIES:
        prompt = f"In which country is the city of {city}? {FEW_WORDS}"
        add(f"city-{slug(city)}", prompt, country, accepted, f"city-{slug(city)}", "city-country")
    for landmark, country, accepted in LANDMARKS:
        prompt = f"In which country is {landmark}? {FEW_WORDS}"
        name = slug(landmark.removeprefix("the "))
        add(f"landmark-{name}", prompt, country, accepted, f"landmark-{name}", "landmark-country")
    for abbreviation, meaning, accepted in ABBREVIATIONS:
        prompt = f'What does the abbreviation "{abbreviation}" stand for? {FEW_WORDS}'
        name = slug(abbreviation)
        add(f"abbreviation-{name}", prompt, meaning, accepted, f"abbreviation-{name}", "abbreviation")
    for male, female, accepted in FEMALES:
        prompt = f'What is the female counterpart of "{male}"? {ONE_WORD}'
        add(f"female-{male}", prompt, female, accepted, f"female-{male}", "female")
    for state, capital, accepted in STATE_CAPITALS:
        prompt = f"What is the capital of the U.S. state of {state}? {FEW_WORDS}"
        add(
            f"state-capital-{slug(state)}",
            prompt,
            capital,
            accepted,
            f"us-state-{slug(state)}",
            "state-capital",
        )
    for question, number, group in MORE_COUNTS:
        add(f"count-{group}", f"{question} {ONLY_NUMBER}", number, [], f"count-{group}", "count")
    return records


def extension_records() -> list[dict[str, Any]]:
    return (
        more_arithmetic_records()
        + comparison_records()
        + sequence_records()
        + calendar_records()
        + conversion_records()
        + spelling_records()
        + words_records()
        + more_factual_records()
    )


def assign_extension_splits(
    records: list[dict[str, Any]], original: list[dict[str, Any]], rng: random.Random
) -> None:
    """Splits for the added records, by group: a group the original records already use keeps its
    split; the other groups are assigned as in :func:`assign_splits` (largest first, each to the split
    with fewer records of its task and category, counting the original records of the task too)."""
    fixed = {record["group"]: record["split"] for record in original}
    counts: Counter[tuple[str, str, str]] = Counter()
    for record in original:
        counts[(record["split"], record["task"], "*")] += 1
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["group"]].append(record)

    def put(members: list[dict[str, Any]], split: str) -> None:
        for record in members:
            record["split"] = split
            counts[(split, record["task"], record["_category"])] += 1
            counts[(split, record["task"], "*")] += 1

    free = []
    for name in sorted(groups):
        if name in fixed:
            put(groups[name], fixed[name])
        else:
            free.append(name)
    rng.shuffle(free)
    free.sort(key=lambda g: -len(groups[g]))
    for name in free:
        members = groups[name]
        task, category = members[0]["task"], members[0]["_category"]

        def load(split: str, task: str = task, category: str = category) -> tuple[int, int, float]:
            return counts[(split, task, category)], counts[(split, task, "*")], rng.random()

        put(members, min(("dev", "test"), key=load))


def check_extension(original: list[dict[str, Any]], added: list[dict[str, Any]]) -> None:
    """Fail loudly on a duplicate id or prompt, or an added record the checker cannot judge: its own
    answer (bare, or in a sentence) must be accepted, and a ``contains`` answer must not already
    occur in the prompt (an output that echoes the question would count as correct)."""
    from corevital.validation.answer_text import normalize_answer
    from corevital.validation.answers import check_answer
    from corevital.validation.labels import LabelledRecord

    ids = Counter(record["id"] for record in original + added)
    prompts = Counter(record["prompt"] for record in original + added)
    duplicates = [key for key, n in (ids + prompts).items() if n > 1]
    if duplicates:
        raise ValueError(f"duplicate ids or prompts: {duplicates[:5]}")
    for data in added:
        record = LabelledRecord.model_validate({k: v for k, v in data.items() if not k.startswith("_")})
        variants = [record.answer, *(record.accepted or [])]
        for output in (str(record.answer), f"I think that the answer to this is {record.answer}."):
            if not check_answer(output, record):
                raise ValueError(f"{record.id}: the correct answer {output!r} is not recognised")
        if record.mode == "contains":
            prompt = f" {normalize_answer(record.prompt_text)} "
            echoed = [v for v in variants if f" {normalize_answer(str(v))} " in prompt]
            if echoed:
                raise ValueError(f"{record.id}: the prompt already contains the answer {echoed[0]!r}")


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
    added = extension_records()
    assign_extension_splits(added, records, random.Random(f"{SEED}-splits"))
    check_extension(records, added)
    return [{key: record[key] for key in FIELD_ORDER if key in record} for record in records + added]


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
