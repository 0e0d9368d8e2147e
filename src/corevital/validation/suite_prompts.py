"""The prompt tables of the validation suite (:mod:`corevital.validation.suite_items` builds the items).

Facts with their accepted answers, word-problem templates with the arithmetic they stand for,
open-ended prompts, words to repeat and questions with no true answer, each with the suffixes the
suite adds to them.
"""

from __future__ import annotations

# (question templates, facts: subject -> answer and accepted aliases)
FACTS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
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

# facts a 135M model often gets wrong (the fault kinds draw only on FACTS)
HARD_FACTS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "capital": (
        FACTS["capital"][0],
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
        FACTS["symbol"][0],
        {"tungsten": ("W",), "mercury": ("Hg",), "tin": ("Sn",), "antimony": ("Sb",), "copper": ("Cu",)},
    ),
    "author": (
        FACTS["author"][0],
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

# more capitals, well known and obscure, from every region, so that a labelled model's calibration
# on factual questions is measured on a few hundred runs (countries whose capital's name is a word of
# their own, or whose capital is disputed or split, are left out)
MORE_CAPITALS: dict[str, tuple[str, ...]] = {
    "the United Kingdom": ("London",),
    "Russia": ("Moscow",),
    "China": ("Beijing", "Peking"),
    "India": ("New Delhi", "Delhi"),
    "the United States": ("Washington",),
    "Argentina": ("Buenos Aires",),
    "Sweden": ("Stockholm",),
    "Finland": ("Helsinki",),
    "Denmark": ("Copenhagen",),
    "the Netherlands": ("Amsterdam",),
    "Belgium": ("Brussels", "Bruxelles"),
    "Austria": ("Vienna", "Wien"),
    "Hungary": ("Budapest",),
    "the Czech Republic": ("Prague", "Praha"),
    "Ireland": ("Dublin",),
    "Romania": ("Bucharest",),
    "Bulgaria": ("Sofia",),
    "Serbia": ("Belgrade",),
    "Croatia": ("Zagreb",),
    "Ukraine": ("Kyiv", "Kiev"),
    "Belarus": ("Minsk",),
    "Lithuania": ("Vilnius",),
    "Latvia": ("Riga",),
    "Estonia": ("Tallinn",),
    "Slovakia": ("Bratislava",),
    "Slovenia": ("Ljubljana",),
    "Albania": ("Tirana", "Tirane"),
    "Malta": ("Valletta",),
    "Cyprus": ("Nicosia",),
    "Moldova": ("Chișinău", "Chisinau"),
    "North Macedonia": ("Skopje",),
    "Montenegro": ("Podgorica",),
    "Bosnia and Herzegovina": ("Sarajevo",),
    "Cuba": ("Havana",),
    "Jamaica": ("Kingston",),
    "Haiti": ("Port-au-Prince",),
    "the Dominican Republic": ("Santo Domingo",),
    "Honduras": ("Tegucigalpa",),
    "Nicaragua": ("Managua",),
    "Costa Rica": ("San José", "San Jose"),
    "El Salvador": ("San Salvador",),
    "Colombia": ("Bogotá", "Bogota"),
    "Venezuela": ("Caracas",),
    "Ecuador": ("Quito",),
    "Paraguay": ("Asunción", "Asuncion"),
    "Iran": ("Tehran", "Teheran"),
    "Iraq": ("Baghdad",),
    "Syria": ("Damascus",),
    "Jordan": ("Amman",),
    "Lebanon": ("Beirut",),
    "Saudi Arabia": ("Riyadh",),
    "Qatar": ("Doha",),
    "Oman": ("Muscat",),
    "Armenia": ("Yerevan",),
    "Azerbaijan": ("Baku",),
    "Uzbekistan": ("Tashkent",),
    "Kyrgyzstan": ("Bishkek",),
    "Tajikistan": ("Dushanbe",),
    "Turkmenistan": ("Ashgabat", "Ashkhabad"),
    "Afghanistan": ("Kabul",),
    "Nepal": ("Kathmandu",),
    "Bangladesh": ("Dhaka", "Dacca"),
    "Thailand": ("Bangkok",),
    "Cambodia": ("Phnom Penh",),
    "Laos": ("Vientiane",),
    "Malaysia": ("Kuala Lumpur",),
    "Indonesia": ("Jakarta",),
    "the Philippines": ("Manila",),
    "South Korea": ("Seoul",),
    "North Korea": ("Pyongyang",),
    "Fiji": ("Suva",),
    "Papua New Guinea": ("Port Moresby",),
    "Ethiopia": ("Addis Ababa",),
    "Ghana": ("Accra",),
    "Senegal": ("Dakar",),
    "Mali": ("Bamako",),
    "Niger": ("Niamey",),
    "Sudan": ("Khartoum",),
    "Uganda": ("Kampala",),
    "Rwanda": ("Kigali",),
    "Zimbabwe": ("Harare",),
    "Zambia": ("Lusaka",),
    "Angola": ("Luanda",),
    "Mozambique": ("Maputo",),
    "Madagascar": ("Antananarivo",),
    "Algeria": ("Algiers",),
    "Tunisia": ("Tunis",),
    "Libya": ("Tripoli",),
    "Cameroon": ("Yaoundé", "Yaounde"),
    "Namibia": ("Windhoek",),
    "Botswana": ("Gaborone",),
    "Somalia": ("Mogadishu",),
}

# (template, result formula): three operations
WORD_PROBLEMS: tuple[tuple[str, str], ...] = (
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
EASY_WORD_PROBLEMS: tuple[tuple[str, str], ...] = (
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
TWO_STEP_WORD_PROBLEMS: tuple[tuple[str, str], ...] = (
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

OPEN_ENDED: tuple[tuple[str, str], ...] = (
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
OPEN_SUFFIXES = ("", " Be thorough.")

REPEAT_WORDS = (
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
REPEAT_TEMPLATES = (
    "Write the word {w} 50 times.",
    "Repeat the word '{w}' fifty times, separated by spaces.",
)

UNANSWERABLE: tuple[str, ...] = (
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
UNANSWERABLE_SUFFIXES = ("", " Answer briefly.", " If the question has no true answer, say so.")
