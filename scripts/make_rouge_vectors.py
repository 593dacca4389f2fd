#!/usr/bin/env python3
"""Write the reference vectors that pin cotune-eval's metrics to the Python originals.

Each line of crates/cotune-eval/tests/fixtures/rouge_vectors.jsonl holds one
prediction/reference pair and what the reference implementations say about it:

* ``rouge_l``: precision, recall and F-measure from the ``rouge-score`` package,
  ``rouge_scorer.RougeScorer(['rougeL'])`` with its defaults (no stemmer), called as
  ``score(target=reference, prediction=prediction)``;
* ``normalized_prediction`` / ``normalized_reference`` / ``exact_match``: the SQuAD v1.1
  evaluation script's ``normalize_answer`` and ``exact_match_score`` (copied verbatim below);
* ``exact_match_raw``: equality after ``str.strip()`` (cotune-eval's raw exact match).

The project never needs Python to build, test or run: the fixture is committed and the
Rust test reads it. Run this only to regenerate or extend the vectors:

    python3 -m venv /work/cache/venv-eval
    /work/cache/venv-eval/bin/pip install rouge-score==0.1.2
    /work/cache/venv-eval/bin/python scripts/make_rouge_vectors.py

(keep the virtual environment outside the repository). The output is deterministic: the
random cases come from a fixed-seed ``random.Random``.
"""

import json
import os
import random
import re
import string
import sys
import unicodedata

from rouge_score import rouge_scorer

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "cotune-eval",
    "tests",
    "fixtures",
    "rouge_vectors.jsonl",
)


# --- SQuAD v1.1 evaluate-v1.1.py, verbatim -------------------------------------------
def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def exact_match_score(prediction, ground_truth):
    return (normalize_answer(prediction) == normalize_answer(ground_truth))
# --- end of verbatim copy ---------------------------------------------------------------


NBSP = "\u00a0"
EM_SPACE = "\u2003"
IDEOGRAPHIC_SPACE = "\u3000"
FILE_SEPARATOR = "\u001c"  # whitespace to Python's str.split(), not to Unicode White_Space
LINE_SEPARATOR = "\u2028"
ZERO_WIDTH_SPACE = "\u200b"  # not whitespace anywhere
COMBINING_ACUTE = "\u0301"
KELVIN = "\u212a"  # lower-cases to ASCII 'k'
CAPITAL_I_DOT = "\u0130"  # lower-cases to 'i' + U+0307


def fixed_cases():
    """Hand-picked pairs, grouped by the behaviour they pin down."""
    cases = []

    def add(group, prediction, reference):
        cases.append((group, prediction, reference))

    # Empty and blank inputs.
    add("empty", "", "")
    add("empty", "", "Paris")
    add("empty", "Paris", "")
    add("empty", " ", "")
    add("empty", "   \t\n", "  ")
    add("empty", "", "the")
    add("empty", "a an the", "")
    add("empty", NBSP, "")

    # Punctuation only: no rouge tokens, SQuAD normalises to "".
    add("punctuation", "!!!", "???")
    add("punctuation", "...", "")
    add("punctuation", "-", "Paris")
    add("punctuation", "Paris", ".")
    add("punctuation", string.punctuation, string.punctuation)
    add("punctuation", "'s", "s")
    add("punctuation", "\u2019s", "s")  # right single quote is not in string.punctuation
    add("punctuation", "\u201cquoted\u201d", "quoted")
    add("punctuation", "\u2014", "-")
    add("punctuation", "Paris.", "Paris")
    add("punctuation", "Paris!", "paris?")
    add("punctuation", "U.S.", "US")
    add("punctuation", "U.S.A.", "u s a")
    add("punctuation", "don't", "dont")
    add("punctuation", "don't", "don t")
    add("punctuation", "rock-and-roll", "rock and roll")
    add("punctuation", "snake_case_name", "snake case name")
    add("punctuation", "(a)", "a")
    add("punctuation", "[the] answer", "answer")
    add("punctuation", "e-mail", "email")
    add("punctuation", "C++", "C")
    add("punctuation", "C#", "c")
    add("punctuation", "#1", "1")
    add("punctuation", "50/50", "5050")
    add("punctuation", "~~~the~~~", "")
    add("punctuation", "a.b.c", "abc")

    # Unicode: accents, CJK, emoji, special case mappings, combining marks.
    add("unicode", "café", "cafe")
    add("unicode", "café", "café")
    add("unicode", "Café", "CAFÉ")
    add("unicode", "naïve approach", "naive approach")
    add("unicode", "Zürich", "Zurich")
    add("unicode", "São Paulo", "Sao Paulo")
    add("unicode", "São Paulo", "são paulo")
    add("unicode", "résumé", "resume")
    add("unicode", "Ångström", "angstrom")
    add("unicode", "Kraków, Poland", "Krakow Poland")
    add("unicode", "東京", "東京")
    add("unicode", "東京 Tokyo", "Tokyo")
    add("unicode", "北京是中国的首都", "北京")
    add("unicode", "the東京", "東京")
    add("unicode", "東京the", "the 東京")
    add("unicode", "ソニー", "Sony")
    add("unicode", "서울", "Seoul")
    add("unicode", "🙂", "🙂")
    add("unicode", "I ❤ NY", "I love NY")
    add("unicode", "thumbs 👍 up", "thumbs up")
    add("unicode", "👍the👍", "")
    add("unicode", "🇫🇷 France", "France")
    add("unicode", CAPITAL_I_DOT + "stanbul", "istanbul")
    add("unicode", CAPITAL_I_DOT + "stanbul", "i stanbul")
    add("unicode", "ISTANBUL", "ıstanbul")
    add("unicode", "273 " + KELVIN, "273 k")
    add("unicode", "0 " + KELVIN + "elvin", "0 kelvin")
    add("unicode", "STRASSE", "straße")
    add("unicode", "Straße", "strasse")
    add("unicode", "ΟΔΟΣ", "οδος")
    add("unicode", "ΟΔΟΣ", "οδοσ")
    add("unicode", "ΟΔΟΣ.", "οδος")
    add("unicode", "ΣΑΣ ΣΑΣ", "σας σας")
    add("unicode", "Σ", "σ")
    add("unicode", "a" + COMBINING_ACUTE + " cat", "cat")
    add("unicode", "the" + COMBINING_ACUTE, "")
    add("unicode", "an" + COMBINING_ACUTE + "d", "and")
    add("unicode", "the" + COMBINING_ACUTE + "ory", "theory")
    add("unicode", COMBINING_ACUTE + "a", "a")
    add("unicode", "e" + COMBINING_ACUTE, "é")
    add("unicode", "हिन्दी the answer", "हिन्दी answer")
    add("unicode", "the हिन्दी", "हिन्दी")
    add("unicode", "ि" + "the", "the")
    add("unicode", "Ⓐ the", "Ⓐ")
    add("unicode", "theⒶ", "the")
    add("unicode", "the½", "½")
    add("unicode", "x² + y²", "x2 y2")
    add("unicode", "٣ apples", "3 apples")
    add("unicode", "the٣", "٣")
    add("unicode", "Ⅻ chapters", "xii chapters")
    add("unicode", "theⅫ", "Ⅻ")
    add("unicode", "ＡＢＣ", "abc")
    add("unicode", "ＡＢＣ", "ａｂｃ")
    add("unicode", "ﬁnance", "finance")
    add("unicode", "Ǆ", "ǆ")
    add("unicode", "the ʰ", "ʰ")
    add("unicode", "theʰ", "ʰ")
    add("unicode", "Москва", "москва")
    add("unicode", "the Москва", "Москва")
    add("unicode", "القاهرة", "Cairo")
    add("unicode", "שלום the", "שלום")
    add("unicode", "caf\u00e9 au lait", "cafe\u0301 au lait")
    add("unicode", "\ufeffParis", "Paris")
    add("unicode", "Pa" + ZERO_WIDTH_SPACE + "ris", "Paris")
    add("unicode", "the" + ZERO_WIDTH_SPACE + "cat", "cat")
    add("unicode", "a\u200dthe", "")

    # Unicode whitespace: Python's str.split() splits on more than ASCII space.
    add("whitespace", "New" + NBSP + "York", "New York")
    add("whitespace", "New" + NBSP + "York", "new york")
    add("whitespace", "New" + EM_SPACE + "York", "New York")
    add("whitespace", "New" + IDEOGRAPHIC_SPACE + "York", "new york")
    add("whitespace", "New" + FILE_SEPARATOR + "York", "New York")
    add("whitespace", "the" + FILE_SEPARATOR + "cat", "cat")
    add("whitespace", "New" + LINE_SEPARATOR + "York", "New York")
    add("whitespace", "New\u2029York", "New York")
    add("whitespace", "New\u0085York", "New York")
    add("whitespace", "New\u1680York", "New York")
    add("whitespace", "New\u202fYork", "New York")
    add("whitespace", "New\u205fYork", "New York")
    add("whitespace", "New\u180eYork", "New York")
    add("whitespace", "New\u001fYork", "NewYork")
    add("whitespace", "New\u0000York", "New York")
    add("whitespace", "  Paris  ", "Paris")
    add("whitespace", "\tParis\n", "Paris")
    add("whitespace", NBSP + "Paris" + NBSP, "Paris")
    add("whitespace", FILE_SEPARATOR + "Paris", "Paris")
    add("whitespace", "Paris\r\n", "Paris")
    add("whitespace", "the\u00a0a\u00a0an", "")
    add("whitespace", "multiple   inner    spaces", "multiple inner spaces")
    add("whitespace", "line\nbreak", "line break")

    # Numbers and decimals.
    add("numbers", "3.14", "3.14")
    add("numbers", "3.14", "314")
    add("numbers", "3.14", "3 14")
    add("numbers", "3.14159", "3.14")
    add("numbers", "1,000", "1000")
    add("numbers", "1,000,000", "one million")
    add("numbers", "2.5 million", "2,500,000")
    add("numbers", "-40", "40")
    add("numbers", "−40", "-40")
    add("numbers", "1e6", "1000000")
    add("numbers", "100%", "100 percent")
    add("numbers", "$5.99", "5.99 dollars")
    add("numbers", "1969", "In 1969")
    add("numbers", "July 20, 1969", "20 July 1969")
    add("numbers", "0.5", ".5")
    add("numbers", "007", "7")
    add("numbers", "42", "forty-two")
    add("numbers", "12:30", "1230")
    add("numbers", "3/4", "0.75")
    add("numbers", "v2.0.1", "version 2 0 1")
    add("numbers", "COVID-19", "covid 19")
    add("numbers", "a 1", "1")

    # Repeated words.
    add("repeated", "the the the", "the")
    add("repeated", "a a a cat", "cat")
    add("repeated", "yes yes", "yes")
    add("repeated", "paris paris paris", "paris")
    add("repeated", "paris", "paris paris paris")
    add("repeated", "to be or not to be", "to be")
    add("repeated", "buffalo buffalo buffalo buffalo buffalo", "buffalo buffalo")
    add("repeated", "no no no no", "no")
    add("repeated", "ab ab ab", "ab ba ab")
    add("repeated", "one two one two", "two one two one")

    # Articles as whole words only.
    add("articles", "The Eiffel Tower", "Eiffel Tower")
    add("articles", "an apple", "apple")
    add("articles", "A", "")
    add("articles", "An", "the")
    add("articles", "theory", "ory")
    add("articles", "another", "other")
    add("articles", "atheist", "theist")
    add("articles", "a-team", "ateam")
    add("articles", "the_end", "theend")
    add("articles", "The. The", "")
    add("articles", "the-the", "")
    add("articles", "thethe", "")
    add("articles", "a an the", "")
    add("articles", "A Tale of Two Cities", "tale of two cities")
    add("articles", "The Who", "who")
    add("articles", "The The", "the")
    add("articles", "Anne the a", "anne")
    add("articles", "then", "n")
    add("articles", "a'the'an", "atheian")
    add("articles", "Vitamin A", "vitamin")
    add("articles", "type A blood", "type blood")
    add("articles", "theatre", "atre")

    # Case differences.
    add("case", "PARIS", "paris")
    add("case", "Paris", "pArIs")
    add("case", "NaCl", "NACL")
    add("case", "iPhone", "IPHONE")
    add("case", "McDonald's", "mcdonalds")
    add("case", "THE UNITED STATES", "United States")
    add("case", "dna", "DNA")

    # Long sentences.
    add(
        "long",
        "The quick brown fox jumps over the lazy dog",
        "The quick brown dog jumps on the log.",
    )
    add(
        "long",
        "Photosynthesis is the process by which green plants use sunlight, water and carbon "
        "dioxide to produce glucose and oxygen.",
        "Green plants use light energy to turn carbon dioxide and water into glucose, "
        "releasing oxygen as a by-product; this process is called photosynthesis.",
    )
    add(
        "long",
        "The French Revolution began in 1789 with the storming of the Bastille and ended "
        "with the rise of Napoleon Bonaparte in 1799.",
        "It started in 1789 and is usually said to have ended in 1799 when Napoleon took "
        "power in the coup of 18 Brumaire.",
    )
    add(
        "long",
        "Mitochondria are membrane-bound organelles that generate most of the chemical "
        "energy needed to power the cell's biochemical reactions, stored as ATP.",
        "The mitochondrion is the powerhouse of the cell.",
    )
    add(
        "long",
        "In computer science, a hash table is a data structure that implements an "
        "associative array, a structure that can map keys to values, using a hash "
        "function to compute an index into an array of buckets or slots.",
        "A hash table maps keys to values by computing an index with a hash function.",
    )
    add(
        "long",
        " ".join(["word%d" % i for i in range(120)]),
        " ".join(["word%d" % i for i in range(0, 120, 3)]),
    )
    add(
        "long",
        " ".join(["token"] * 150),
        " ".join(["token", "other"] * 60),
    )

    # Answers like those of a QA benchmark.
    add("qa", "France", "France")
    add("qa", "The United Kingdom", "United Kingdom")
    add("qa", "UK", "United Kingdom")
    add("qa", "the United States of America", "USA")
    add("qa", "United States", "the United States of America")
    add("qa", "People's Republic of China", "China")
    add("qa", "Côte d'Ivoire", "Cote d'Ivoire")
    add("qa", "Ivory Coast", "Côte d’Ivoire")
    add("qa", "The Netherlands", "Netherlands")
    add("qa", "Papua New Guinea", "New Guinea")
    add("qa", "Bosnia and Herzegovina", "Bosnia & Herzegovina")
    add("qa", "H2O", "H₂O")
    add("qa", "H2O", "water")
    add("qa", "Sodium chloride (NaCl)", "NaCl")
    add("qa", "sodium chloride", "Sodium Chloride")
    add("qa", "Au", "gold")
    add("qa", "The atomic number of carbon is 6.", "6")
    add("qa", "carbon dioxide", "CO2")
    add("qa", "CO₂", "CO2")
    add("qa", "Fe2O3", "iron(III) oxide")
    add("qa", "NASA", "National Aeronautics and Space Administration")
    add(
        "qa",
        "National Aeronautics and Space Administration",
        "national aeronautics & space administration",
    )
    add("qa", "DNA (deoxyribonucleic acid)", "deoxyribonucleic acid")
    add("qa", "Deoxyribonucleic Acid", "deoxyribonucleic acid")
    add("qa", "World Health Organization (WHO)", "the World Health Organization")
    add("qa", "WHO", "who")
    add("qa", "laser: light amplification by stimulated emission of radiation", "laser")
    add("qa", "1945", "1945")
    add("qa", "in 1945", "1945")
    add("qa", "The answer is 42.", "42")
    add("qa", "about 8,849 metres", "8849 m")
    add("qa", "299,792,458 m/s", "299792458 metres per second")
    add("qa", "Mount Everest", "Everest")
    add("qa", "Leonardo da Vinci", "da Vinci")
    add("qa", "William Shakespeare", "Shakespeare, William")
    add("qa", "Jupiter", "jupiter.")
    add("qa", "Answer: Paris", "Paris")
    add("qa", "Paris, France", "Paris")
    add("qa", "I don't know", "unknown")
    add("qa", "yes", "no")
    add("qa", "Yes.", "yes")
    return cases


VOCABULARY = (
    "the a an of and to in is was for on with as by at from that this it be are or "
    "paris france london river capital city population water carbon oxygen hydrogen "
    "acid protein cell energy light year war king queen empire revolution treaty "
    "1945 1789 2020 3 42 100 7 ocean mountain island desert north south east west "
    "first second largest smallest oldest newest element planet star moon sun"
).split()

FUZZ_PIECES = [
    "the", "a", "an", "The", "THE", "A", "An", "then", "another", "cat", "Cat",
    "théâtre", "café", "cafe", "東京", "🙂", CAPITAL_I_DOT, KELVIN, "ı", "ß", "SS",
    "Σ", "ΟΔΟΣ", COMBINING_ACUTE, "_", "-", ".", "'", "\u2019", ",", "3.14", "1,000",
    "½", "²", "٣", "Ⅻ", "Ⓐ", "ʰ", "ि", NBSP, " ", " ", " ", "\t", EM_SPACE,
    IDEOGRAPHIC_SPACE, FILE_SEPARATOR, ZERO_WIDTH_SPACE, "\n", LINE_SEPARATOR, "x",
    "42", "ＡＢＣ", "ﬁ", "\u00ad",
]


def random_cases(rng):
    """Fixed-seed cases: word shuffles, drops and insertions, then character-level fuzz."""
    cases = []
    for i in range(150):
        length = rng.randint(1, 14)
        reference = [rng.choice(VOCABULARY) for _ in range(length)]
        prediction = list(reference)
        mode = i % 5
        if mode == 0:
            rng.shuffle(prediction)
        elif mode == 1:
            prediction = [w for w in prediction if rng.random() < 0.6]
        elif mode == 2:
            for _ in range(rng.randint(1, 4)):
                prediction.insert(rng.randint(0, len(prediction)), rng.choice(VOCABULARY))
        elif mode == 3:
            prediction = [w.upper() if rng.random() < 0.3 else w for w in prediction]
            if rng.random() < 0.5:
                prediction[-1] = prediction[-1] + rng.choice([".", "!", "?", ","])
        else:
            rng.shuffle(prediction)
            prediction = prediction[: rng.randint(0, len(prediction))]
        cases.append(("shuffle", " ".join(prediction), " ".join(reference)))

    def fuzz_text():
        pieces = [rng.choice(FUZZ_PIECES) for _ in range(rng.randint(0, 8))]
        glue = rng.choice(["", " ", ""])
        return glue.join(pieces)

    for _ in range(120):
        prediction = fuzz_text()
        if rng.random() < 0.3:
            # A reference that differs only in ways normalisation may or may not forgive.
            reference = prediction.upper() if rng.random() < 0.5 else "The " + prediction + "."
        else:
            reference = fuzz_text()
        cases.append(("fuzz", prediction, reference))
    return cases


def main():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    cases = fixed_cases() + random_cases(random.Random(20240607))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as out:
        for index, (group, prediction, reference) in enumerate(cases):
            score = scorer.score(reference, prediction)["rougeL"]
            record = {
                "id": index,
                "group": group,
                "prediction": prediction,
                "reference": reference,
                "normalized_prediction": normalize_answer(prediction),
                "normalized_reference": normalize_answer(reference),
                "exact_match": int(exact_match_score(prediction, reference)),
                "exact_match_raw": int(prediction.strip() == reference.strip()),
                "rouge_l": {
                    "precision": float(score.precision),
                    "recall": float(score.recall),
                    "fmeasure": float(score.fmeasure),
                },
            }
            out.write(json.dumps(record, ensure_ascii=True) + "\n")
    print(
        "wrote %d vectors to %s (Python %s, Unicode %s)"
        % (len(cases), os.path.normpath(OUT), sys.version.split()[0], unicodedata.unidata_version)
    )


if __name__ == "__main__":
    main()
