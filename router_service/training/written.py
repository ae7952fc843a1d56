"""Prompts written for this project, labelled by design: "a small model is enough" or "needs the strong one".

Why: every public label in ../shared/data comes from benchmarks (correctness on multiple
choice, maths, code) or from judges who prefer the bigger model's answer even to
"thanks!". Neither says that a greeting, a lookup or a one-line rewrite needs no strong
model. These templates say it, and say the opposite for proofs, algorithms, debugging,
multi-constraint planning and extraction into a schema, so the scorer learns the task
type as well as benchmark difficulty.

Written from scratch for this project (never copied or paraphrased from any eval or
sanity file); deterministic for a seed; see router_service/models/README.md.
"""

from __future__ import annotations

import random

__all__ = ["written_prompts"]

WEAK, STRONG = 0.0, 1.0

COUNTRIES = [
    "France", "Japan", "Kenya", "Peru", "Canada", "Norway", "Egypt", "Vietnam", "Chile", "Poland", "Ghana",
    "Portugal", "Thailand", "Morocco", "Ireland", "Argentina", "Finland", "Nepal", "Cuba", "Austria",
]
ANIMALS = ["spider", "octopus", "horse", "penguin", "bee", "crab", "cat", "snail", "frog", "owl", "ant", "goat"]
ELEMENTS = ["gold", "iron", "sodium", "helium", "silver", "potassium", "oxygen", "lead", "copper", "neon"]
WORDS = ["ephemeral", "ubiquitous", "candid", "meticulous", "serene", "frugal", "vivid", "tenacious", "aloof"]
SENTENCES = [
    "me and him goes to the market every sundays",
    "send me the file now",
    "the meeting have been moved to thursday",
    "I need the report, where is it",
    "their going too the beach tomorow",
    "we was late because the bus dont come",
]
LANGUAGES = ["Spanish", "German", "Italian", "French", "Portuguese", "Dutch", "Swedish", "Turkish"]
PHRASES = ["good night", "where is the station", "I am hungry", "see you soon", "happy birthday", "how much is it"]
TOPICS = ["penguins", "coffee", "Mondays", "cats", "pizza", "the ocean", "gardening", "bicycles", "rain"]
GREETINGS = [
    "hi", "hello!", "hey there", "good evening", "yo, what's up?", "hey, how's your day going?",
    "Hola, ¿qué tal?", "Bonjour !", "Hallo, wie geht's?", "Ciao!", "hiya :)", "Good afternoon, hope you're well.",
    "Olá, tudo certo?", "こんにちは", "Привет!", "hey hey", "morning!", "Hi, nice to meet you.",
]
THANKS = [
    "thanks!", "thank you so much", "thx", "great, that helped a lot", "ok cool", "perfect, thanks",
    "Merci beaucoup !", "Danke schön!", "gracias!", "awesome, appreciate it", "ok got it", "that works, ty",
    "bye!", "see you tomorrow", "good night!", "talk later", "cheers, have a good one", "Tschüss!",
]
SMALL_TALK = [
    "what's your favourite colour?", "do you like music?", "I'm bored, say something fun",
    "is it weird that I talk to my plants?", "I just got a puppy!!", "what should I name my goldfish?",
    "lol that's funny", "I had pancakes for breakfast today", "do you ever get tired?",
    "tell me something nice", "rainy day here, feeling lazy", "my team won the match yesterday!",
]

PROOFS = [
    "the sum of the first n odd numbers is n squared",
    "every tree with n vertices has exactly n - 1 edges",
    "there are infinitely many composite numbers of the form 2^n + 1... or disprove it",
    "a graph is bipartite if and only if it has no odd cycle",
    "the harmonic series diverges",
    "every finite integral domain is a field",
    "n^5 - n is divisible by 30 for every integer n",
    "among any n + 1 integers two differ by a multiple of n",
    "the number of subsets of an n-element set is 2^n, by induction and by a bijection",
    "a continuous function on a closed interval attains its maximum",
    "log base 2 of 3 is irrational",
    "the Cantor set is uncountable but has measure zero",
]
ALGORITHMS = [
    "an LRU cache with O(1) get and put", "Dijkstra's shortest paths with a binary heap",
    "a trie that supports insert, delete and prefix counting", "union-find with path compression and union by rank",
    "a token-bucket rate limiter that is safe under concurrency", "consistent hashing with virtual nodes",
    "topological sort that reports a cycle when there is one", "an interval tree with overlap queries",
    "the KMP string search with its failure table", "a skip list with expected O(log n) search",
    "a bounded blocking queue with two condition variables", "Raft leader election (terms, votes, timeouts)",
]
LANGS = ["Python", "Rust", "Go", "Java", "C++", "TypeScript", "C#", "Kotlin"]
CODE_ASKS = [
    "Implement {algo} in {lang}, with tests for the edge cases and the time and space complexity of each operation.",
    "Write {algo} in {lang}. Explain the invariants it keeps and prove the complexity bound.",
    "Design and code {algo} in {lang}; then say how you would make it safe for many threads.",
]
BUGS = [
    ("Python", "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n        return total / len(xs)",
     "returns the wrong mean for most lists"),
    ("JavaScript", "for (var i = 0; i < 3; i++) {\n  setTimeout(() => console.log(i), 10);\n}",
     "prints 3 three times instead of 0 1 2"),
    ("Go", "func worker(jobs <-chan int, wg sync.WaitGroup) {\n  defer wg.Done()\n  for j := range jobs { process(j) }\n}",
     "deadlocks: wg.Wait() never returns"),
    ("C", "char *copy(const char *s) {\n  char buf[64];\n  strcpy(buf, s);\n  return buf;\n}",
     "sometimes returns garbage and crashes later"),
    ("Java", "Map<String, Integer> counts = new HashMap<>();\nfor (String w : words) counts.put(w, counts.get(w) + 1);",
     "throws a NullPointerException"),
    ("Rust", "let mut v = vec![1, 2, 3];\nlet first = &v[0];\nv.push(4);\nprintln!(\"{}\", first);",
     "does not compile: cannot borrow `v` as mutable"),
    ("SQL", "SELECT dept, AVG(salary) FROM staff WHERE AVG(salary) > 50000 GROUP BY dept;",
     "fails with an aggregate error"),
    ("Python", "import asyncio\nasync def main():\n    for url in urls:\n        asyncio.create_task(fetch(url))\nasyncio.run(main())",
     "exits before any fetch finishes"),
]
PLANS = [
    "a {days}-day conference for {people} attendees with a budget of ${budget}: two parallel tracks, no session "
    "before 9am, catering for vegans and coeliacs, and a speaker who can only come on the last day",
    "a {days}-day family trip for {people} people on ${budget} in total: one wheelchair user, a toddler who naps "
    "1-3pm, at most 3 hours of driving a day, and one museum everyone agrees on",
    "a {days}-week study schedule for {people} exams with {budget} spare minutes a day: two exams on the same day, "
    "spaced repetition, and a part-time job on weekends",
    "the migration of a {people}-service monolith to Kubernetes in {days} sprints with ${budget} of cloud credit, "
    "zero downtime, a database that cannot be split yet, and a team of four",
]
EXTRACTIONS = [
    ("every person, company and date", "name, type, role, date_iso",
     "On 3 March 2021 Dana Whitfield left Orbital Freight to join Keller & Sons as CFO; two weeks later "
     "her former deputy, Ravi Menon, was named interim CFO at Orbital."),
    ("each medication with dose and frequency", "drug, dose_mg, times_per_day, with_food",
     "Take 500 mg metformin twice daily with meals, lisinopril 10 mg once each morning, and atorvastatin "
     "20 mg at bedtime; stop ibuprofen 400 mg three times a day after Friday."),
    ("every invoice line", "sku, description, quantity, unit_price, currency",
     "INV-2291: 3 x BX-11 steel brackets @ 4.20 EUR; 12 x HN-4 hinges @ 0.85 EUR; 1 x freight (flat) 35 EUR."),
]
MATHS = [
    "How many ways can {n} people sit at a round table if two of them refuse to sit together? Show the reasoning.",
    "Find all integer solutions of x^2 - {n} y^2 = 1 with 0 < x < 1000 and explain the method.",
    "A fair die is rolled until the sum exceeds {n}. What is the expected number of rolls? Derive it.",
    "Compute the eigenvalues and eigenvectors of the {n}x{n} matrix with 2 on the diagonal and -1 beside it.",
    "What is the probability that {n} random points on a circle all lie in some semicircle? Prove it.",
]
ANALYSES = [
    "Compare {a} and {b} for {use}: latency, consistency, failure modes and cost, and recommend one with reasons.",
    "Explain when {a} beats {b} for {use}, with a worked example and the numbers behind it.",
]
PAIRS = [("Kafka", "RabbitMQ"), ("PostgreSQL", "Cassandra"), ("gRPC", "REST"), ("Raft", "Paxos"),
         ("B-trees", "LSM trees"), ("optimistic locking", "pessimistic locking"), ("CRDTs", "operational transforms")]
USES = ["a payments ledger", "a chat app with 10M users", "an IoT telemetry pipeline", "a collaborative editor"]


# Everyday context around a trivial ask: length and politeness say nothing about the task.
PREAMBLES = [
    "Quick question before my meeting starts: ",
    "My friend and I have a bet going, so settle this for us please. ",
    "Sorry if this is a silly one, but I honestly can't remember and it's bugging me. ",
    "I'm helping my nephew with his homework tonight and he asked me this. ",
    "For a pub quiz we're writing for the office party on Friday, ",
    "ok random thought while cooking dinner lol - ",
    "Hi! Hope you're having a good day. I just need a tiny bit of help with something. ",
    "Writing a card for my grandma and I want to get this right. ",
]
TRIVIA = [
    "what's the tallest mountain in the world?", "which planet is closest to the sun?",
    "how many days are in a leap year?", "who painted the Mona Lisa?", "what's the boiling point of water in Celsius?",
    "which ocean is between Africa and Australia?", "what's the longest river in South America?",
    "how many players are on a football team?", "what year did the first moon landing happen?",
    "what is the freezing point of water in Fahrenheit?", "which animal is known as the king of the jungle?",
    "how many continents are there?", "what's the main ingredient in guacamole?", "who wrote Romeo and Juliet?",
]
SMALL_TASKS = [
    "can you put these in alphabetical order: pears, apples, kiwis, bananas, dates?",
    "turn this into a bulleted list: eggs milk bread butter",
    "change 'colour' to the American spelling",
    "what's 15% of 80?", "how many centimetres are in a metre?", "how many ounces are in a pound?",
    "is 17 an odd number?", "can penguins fly?", "is a tomato technically a fruit?", "do fish sleep?",
    "what's half of 250?", "round 3.678 to one decimal place", "how many weeks are in a year?",
    "is it safe to eat raw carrots?", "write 'thank you' in capital letters", "what comes after the letter Q?",
    "make this a bit friendlier: 'Please confirm receipt.'", "how do I spell 'definitely'?",
    "what rhymes with 'cat'?", "give me three words that mean happy",
]

def _weak(r: random.Random) -> list[str]:
    out = list(GREETINGS) + list(THANKS) + list(SMALL_TALK)
    out += [f"What is the capital of {c}?" for c in COUNTRIES]
    out += [f"what language do they speak in {c}" for c in r.sample(COUNTRIES, 8)]
    out += [f"How many legs does a {a} have?" for a in ANIMALS]
    out += [f"What's the chemical symbol for {e}?" for e in ELEMENTS]
    out += [f"What does '{w}' mean?" for w in WORDS]
    out += [f"Give me a synonym for {w}." for w in r.sample(WORDS, 5)]
    out += [f"Fix the grammar: {s}" for s in SENTENCES]
    out += [f"Make this sound more polite: \"{s}\"" for s in r.sample(SENTENCES, 3)]
    out += [f"How do you say '{p}' in {lang}?" for p, lang in zip(PHRASES, r.sample(LANGUAGES, len(PHRASES)), strict=True)]
    out += [f"Tell me a short joke about {t}." for t in TOPICS]
    out += [f"Give me one fun fact about {a}s." for a in r.sample(ANIMALS, 6)]
    out += [f"Sort these alphabetically: {', '.join(r.sample(TOPICS, 5))}" for _ in range(4)]
    for _ in range(16):
        a, b = r.randint(2, 99), r.randint(2, 99)
        out.append(r.choice(["What is {a} + {b}?", "what's {a} times {b}", "{a} minus {b}?", "Is {a} bigger than {b}?"])
                   .format(a=a, b=b))
    out += [f"Is a {a} a mammal?" for a in r.sample(ANIMALS, 6)]
    out += ["Suggest a name for my new cat.", "Write a one-line birthday wish for my aunt.",
            "Recommend a feel-good movie for tonight.", "What day comes after Tuesday?",
            "Spell 'necessary' for me.", "Capitalize this: the quick brown fox", "Convert 2 kilograms to grams.",
            "What's the opposite of 'ancient'?", "Give me a rhyme for 'moon'.", "Which is heavier, a kilo of feathers or a kilo of bricks?"]
    out += [r.choice(PREAMBLES) + ask for ask in TRIVIA + SMALL_TASKS]
    out += [ask[0].upper() + ask[1:] for ask in r.sample(TRIVIA + SMALL_TASKS, 16)]
    return out


def _strong(r: random.Random) -> list[str]:
    out = [f"Prove that {p}." for p in PROOFS]
    out += [r.choice(CODE_ASKS).format(algo=a, lang=r.choice(LANGS)) for a in ALGORITHMS]
    out += [f"This {lang} code {symptom}. Find the bug, explain why it happens and give a corrected version:\n\n{code}"
            for lang, code, symptom in BUGS]
    for plan in PLANS:
        for _ in range(2):
            out.append("Plan " + plan.format(days=r.randint(2, 6), people=r.randint(3, 60), budget=r.randint(8, 90) * 100)
                       + ". Give a schedule, the cost breakdown and what you would cut first if over budget.")
    out += [f"Extract {what} from the text below as a JSON array with fields {fields}. Resolve relative dates.\n\n{text}"
            for what, fields, text in EXTRACTIONS]
    out += [m.format(n=r.randint(5, 12)) for m in MATHS]
    out += [r.choice(ANALYSES).format(a=a, b=b, use=r.choice(USES)) for a, b in PAIRS]
    # Short asks can be hard: brevity says nothing about the task either.
    out += [
        "Prove Fermat's little theorem.", "Derive the Black-Scholes PDE.", "Implement a lock-free stack in C++.",
        "Why does this regex hang: (a+)+$ ?", "Solve x^x = 2 exactly.", "Is P = NP relevant to RSA? Explain.",
        "Write a Prolog sudoku solver.", "Prove the AM-GM inequality.", "Explain Gödel's first incompleteness theorem.",
        "Find the closed form of sum k^3.", "Design a URL shortener for 1B users.", "Explain the CAP theorem with proof.",
    ]
    out += [r.choice(PREAMBLES) + ask[0].lower() + ask[1:] for ask in r.sample(out[: len(PROOFS) + len(ALGORITHMS)], 10)]
    return out


def written_prompts(seed: int = 0) -> tuple[list[str], list[float]]:
    """(prompts, target) with target 0.0 for "a small model is enough" and 1.0 for "needs the strong model"."""
    r = random.Random(seed)
    weak, strong = _weak(r), _strong(r)
    return weak + strong, [WEAK] * len(weak) + [STRONG] * len(strong)
