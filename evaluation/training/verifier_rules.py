"""Rewrites of a question that keep or change its meaning: hard pairs for the verifier.

Each rule takes a question and a seeded ``random.Random`` and returns the
rewritten question, or ``None`` when it does not apply. Negative rules
change what is asked (negation, antonym, number, date, unit, entity, scope
word) so a cached answer would be wrong; positive rules change only the form
(case, punctuation, filler words, contractions, a typo).

:func:`swap_word` makes the negatives the rules above cannot: one content word
replaced by a word of another group's question ("cancel my order" -> "track my
order"), and :func:`dress` puts a form change on either side of any pair, so a
model cannot learn that filler words or a lower-cased question mean "same".
Without both, a model trained here served "hi, how do I renew my subscription?
please" the answer of "How do I cancel my subscription?" (p 0.94).
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Callable

Rule = Callable[[str, random.Random], "str | None"]

_ANTONYMS = [
    ("enable", "disable"), ("enabled", "disabled"), ("turn on", "turn off"), ("switch on", "switch off"),
    ("open", "close"), ("opened", "closed"), ("add", "remove"), ("increase", "decrease"), ("buy", "sell"),
    ("start", "stop"), ("upload", "download"), ("log in", "log out"), ("login", "logout"), ("sign in", "sign out"),
    ("subscribe", "unsubscribe"), ("include", "exclude"), ("allow", "block"), ("maximum", "minimum"),
    ("max", "min"), ("before", "after"), ("above", "below"), ("import", "export"), ("encrypt", "decrypt"),
    ("show", "hide"), ("lock", "unlock"), ("win", "lose"), ("push", "pull"), ("more", "less"),
    ("best", "worst"), ("cheapest", "most expensive"), ("ascending", "descending"), ("true", "false"),
    ("hot", "cold"), ("old", "new"), ("create", "delete"), ("cancel", "place"), ("accept", "reject"),
    ("connect", "disconnect"), ("install", "uninstall"), ("advantages", "disadvantages"), ("pros", "cons"),
    ("positive", "negative"), ("legal", "illegal"), ("possible", "impossible"), ("safe", "dangerous"),
    ("good", "bad"), ("higher", "lower"), ("larger", "smaller"), ("faster", "slower"), ("north", "south"),
    ("east", "west"), ("male", "female"), ("men", "women"), ("born", "die"), ("start", "end"),
    ("import", "export"), ("send", "receive"), ("get", "give"), ("save", "spend"), ("join", "leave"),
]
_SCOPE = [("all", "some"), ("every", "any"), ("first", "last"), ("always", "never"), ("most", "least"),
          ("only", "also"), ("each", "one"), ("both", "either"), ("many", "few"), ("oldest", "youngest"),
          ("largest", "smallest"), ("highest", "lowest"), ("earliest", "latest")]
_AUX = ["can", "could", "should", "would", "will", "is", "are", "was", "were", "do", "does", "did", "have", "has"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_UNITS = [("km", "miles"), ("kilometers", "miles"), ("celsius", "fahrenheit"), ("kg", "pounds"),
          ("kilograms", "pounds"), ("MB", "GB"), ("hours", "minutes"), ("days", "weeks"), ("weeks", "months"),
          ("dollars", "euros"), ("USD", "EUR"), ("meters", "feet"), ("liters", "gallons"), ("inches", "cm"),
          ("seconds", "milliseconds"), ("years", "months"), ("percent", "points")]
_ENTITIES = [
    ["France", "Germany", "Italy", "Spain", "Japan", "China", "India", "Canada", "Brazil", "Mexico",
     "Australia", "Russia", "Egypt", "the US", "the UK", "Sweden", "Nigeria", "Kenya", "Peru", "Norway"],
    ["Paris", "London", "Berlin", "Tokyo", "New York", "Chicago", "Rome", "Madrid", "Toronto", "Sydney",
     "Mumbai", "Beijing", "Boston", "Seattle", "Dublin", "Cairo"],
    ["Python", "Java", "JavaScript", "C++", "Rust", "Go", "Ruby", "PHP", "Swift", "Kotlin", "TypeScript"],
    ["Google", "Apple", "Microsoft", "Amazon", "Facebook", "Netflix", "Tesla", "IBM", "Intel", "Samsung",
     "Twitter", "Gmail", "YouTube", "Spotify", "Uber", "PayPal", "GitHub", "Excel", "Windows", "Linux"],
    ["English", "Spanish", "French", "German", "Chinese", "Japanese", "Hindi", "Arabic", "Russian"],
    ["Obama", "Lincoln", "Einstein", "Newton", "Shakespeare", "Trump", "Gandhi", "Napoleon", "Darwin"],
]
_FILLER_PRE = ["please tell me ", "hey, ", "quick question: ", "can you tell me ", "i was wondering, ",
               "hi! ", "so, ", "help: ", "question - "]
_FILLER_POST = [" please", " thanks", " thank you!", " ?", " asap", ", thanks in advance"]
_CONTRACTIONS = [("do not", "don't"), ("can not", "can't"), ("cannot", "can't"), ("what is", "what's"),
                 ("i am", "i'm"), ("it is", "it's"), ("is not", "isn't"), ("does not", "doesn't"),
                 ("i would", "i'd"), ("how is", "how's"), ("i have", "i've"), ("where is", "where's")]
_STOP = frozenset("""
a an the i me my mine you your we our us it its is are was were be been being am do does did done can could
should would will shall may might must have has had how what when where why who whom whose which to of in on
for with at by from about into onto as and or but if so not no yes there here this that these those then than
please thanks thank hi hey hello help need want like know tell get got some any just also very really way
try trying tried ask asking see look looking find show make use able possible let give something anything
someone somebody thing things assistance assist support helping problem issue question info information
""".split())
"""Words :func:`swap_word` never removes or inserts: function words and the filler of requests
("I need assistance trying to ..."), where a swap rarely changes what is asked."""
_CONTENT = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_NUM = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


def _swap_words(text: str, pairs: list[tuple[str, str]], rng: random.Random) -> str | None:
    """Replace one word (or phrase) of ``pairs`` found in ``text`` by its partner, keeping case."""
    found = []
    for x, y in pairs:
        for src, dst in ((x, y), (y, x)):
            for m in re.finditer(rf"\b{re.escape(src)}\b", text, re.IGNORECASE):
                found.append((m, dst))
    if not found:
        return None
    m, dst = rng.choice(found)
    word = m.group(0)
    if word[:1].isupper():
        dst = dst[:1].upper() + dst[1:]
    return text[:m.start()] + dst + text[m.end():]


def negate(text: str, rng: random.Random) -> str | None:
    """Insert (or remove) a negation after the first auxiliary verb."""
    m = re.search(r"\b(" + "|".join(_AUX) + r")(n't| not)?\b", text, re.IGNORECASE)
    if not m:
        return None
    if m.group(2):
        return text[:m.end(1)] + text[m.end():]
    return text[:m.end()] + (" not" if rng.random() < 0.6 or m.group(1).lower() == "can" else "n't") + text[m.end():]


def antonym(text: str, rng: random.Random) -> str | None:
    return _swap_words(text, _ANTONYMS, rng)


def scope(text: str, rng: random.Random) -> str | None:
    return _swap_words(text, _SCOPE, rng)


def change_number(text: str, rng: random.Random) -> str | None:
    """Change one number: another value of the same form (an integer stays an integer)."""
    found = list(_NUM.finditer(text))
    if not found:
        return None
    m = rng.choice(found)
    old = m.group(0)
    if "." in old:
        new = f"{float(old) * rng.choice([0.5, 1.5, 2, 3]):.{len(old.split('.')[1])}f}"
    else:
        v = int(old)
        new = str(rng.choice([v + 1, v + 2, v * 2, max(0, v - 1), v + 10, v * 3]))
    if new == old:
        new = str(int(float(old)) + 7)
    return text[:m.start()] + new + text[m.end():]


def change_date(text: str, rng: random.Random) -> str | None:
    m = _YEAR.search(text)
    if m:
        year = int(m.group(0)) + rng.choice([-3, -2, -1, 1, 2, 5])
        return text[:m.start()] + str(year) + text[m.end():]
    for names in (_MONTHS, _DAYS):
        for name in names:
            hit = re.search(rf"\b{name}\b", text, re.IGNORECASE)
            if hit:
                other = rng.choice([n for n in names if n != name])
                return text[:hit.start()] + other + text[hit.end():]
    return None


def change_unit(text: str, rng: random.Random) -> str | None:
    return _swap_words(text, _UNITS, rng)


def change_entity(text: str, rng: random.Random) -> str | None:
    """Replace a known entity by another of its kind, or a capitalised name by one from the lists."""
    for names in _ENTITIES:
        for name in names:
            hit = re.search(rf"\b{re.escape(name)}(?!\w)", text, re.IGNORECASE)
            if hit:
                other = rng.choice([n for n in names if n != name])
                return text[:hit.start()] + other + text[hit.end():]
    caps = [m for m in re.finditer(r"(?<!^)\b[A-Z][a-z]{2,}\b", text)]
    if not caps:
        return None
    m = rng.choice(caps)
    return text[:m.start()] + rng.choice(rng.choice(_ENTITIES)) + text[m.end():]


def recase(text: str, rng: random.Random) -> str:
    return rng.choice([text.lower(), text.upper(), text[:1].upper() + text[1:], text.title()])


def repunctuate(text: str, rng: random.Random) -> str:
    stripped = re.sub(r"[?!.,;:]+", "", text).strip()
    return rng.choice([stripped, stripped + "?", stripped + "??", stripped + ".", text.replace(",", "")])


def filler(text: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_FILLER_PRE) + text[:1].lower() + text[1:]
    return text.rstrip() + rng.choice(_FILLER_POST)


def contract(text: str, rng: random.Random) -> str | None:
    return _swap_words(text, _CONTRACTIONS, rng)


def typo(text: str, rng: random.Random) -> str | None:
    """Swap two adjacent letters inside one long word (a keyboard slip)."""
    words = [m for m in re.finditer(r"[A-Za-z]{6,}", text)]
    if not words:
        return None
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 2)
    return text[:m.start()] + w[:i] + w[i + 1] + w[i] + w[i + 2:] + text[m.end():]


def dress(text: str, rng: random.Random) -> str:
    """``text`` with one change of form only (case, punctuation, filler words or a contraction)."""
    kind = rng.choice((recase, repunctuate, filler, filler, contract))
    return kind(text, rng) or filler(text, rng)


def _near(a: str, b: str) -> bool:
    """Whether two words are spellings of one another (a typo, an inflection): not a swap."""
    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.75


def _context(text: str, m: re.Match) -> set[tuple[str, str]]:
    """The words either side of match ``m`` in ``text``: ``{("L", left), ("R", right)}``."""
    left = re.findall(r"[A-Za-z'-]+", text[:m.start()])
    right = re.findall(r"[A-Za-z'-]+", text[m.end():])
    out = set()
    if left:
        out.add(("L", left[-1].lower()))
    if right:
        out.add(("R", right[0].lower()))
    return out


def _slots(donor: str) -> dict[str, set[tuple[str, str]]]:
    """Each content word of ``donor`` (lower case) with the words either side of it."""
    out: dict[str, set[tuple[str, str]]] = {}
    for m in _CONTENT.finditer(donor):
        out.setdefault(m.group(0).lower(), set()).update(_context(donor, m))
    return out


def swap_word(text: str, donor: str, rng: random.Random, own_words: frozenset[str] = frozenset(),
              removable: frozenset[str] | None = None, insertable: frozenset[str] | None = None,
              in_context: bool = False) -> str | None:
    """``text`` with one content word replaced by a content word of ``donor`` (another group's question).

    The inserted word is one ``text``'s own group never uses (``own_words``, lower case) and no
    spelling of the word it replaces, so the result asks something else; ``None`` when no such
    pair of words exists. ``removable`` / ``insertable`` narrow the two words further (to the
    words that tell two intents apart, where intents are known). With ``in_context`` and no
    ``removable``, the new word must also have the old one's left or right neighbour in
    ``donor``, so the result reads like a question someone asks. Capitalisation follows the
    replaced word."""
    mine = {m.group(0).lower() for m in _CONTENT.finditer(text)}
    olds = [m for m in _CONTENT.finditer(text)
            if m.group(0).lower() not in _STOP and (removable is None or m.group(0).lower() in removable)]
    news = sorted({w.lower() for w in _CONTENT.findall(donor)} - _STOP - mine - own_words)
    if insertable is not None:
        news = [w for w in news if w in insertable]
    choices = [(m, w) for m in olds for w in news if not _near(m.group(0).lower(), w)]
    if in_context and removable is None:
        # Without intents to tell the words apart, the new word must stand in the donor where the
        # old one stands in the text (the same word before or after it): "the largest peak" ->
        # "the highest peak", never "kanye wests first amitabh", a question nobody asks.
        slots = _slots(donor)
        choices = [(m, w) for m, w in choices if _context(text, m) & slots.get(w, set())]
    if not choices:
        return None
    m, new = rng.choice(choices)
    if m.group(0)[:1].isupper():
        new = new[:1].upper() + new[1:]
    return text[:m.start()] + new + text[m.end():]


NEGATIVE_RULES: list[tuple[str, Rule]] = [
    ("negation", negate), ("antonym", antonym), ("antonym", antonym), ("numbers", change_number),
    ("dates", change_date), ("units", change_unit), ("entities", change_entity), ("scope", scope),
]
POSITIVE_RULES: list[tuple[str, Rule]] = [
    ("case", recase), ("punctuation", repunctuate), ("filler", filler), ("filler", filler),
    ("contraction", contract), ("typo", typo),
]
