"""Cheap false-hit guards, run on a candidate before it is served.

Embeddings of "sort ascending" and "sort descending", or of "2FA on" and
"2FA off", are nearly identical, yet the answers are opposite. Each guard
compares one kind of token between the new query and the cached one and
rejects the hit when they disagree. They are per-category switches
(:class:`semcache.config.policy.Guards`) and each reports its own name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from semcache.config.policy import Guards
from semcache.decide.numbers import numbers_in, spelled_on_one_side_only, without_a_lone_one
from semcache.textcache import per_text

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SIGN_UP_RE = re.compile(r"\bsign[\s-]+up\b", re.IGNORECASE)  # "Sign Up", "sign-up": one request word

_NEGATORS = frozenset({
    "not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "cannot",
    "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt", "cant",
    "couldnt", "shouldnt", "hasnt", "havent", "hadnt", "mustnt", "aint", "unable",
})
# Pairs whose members swap the meaning of an otherwise identical question.
_ANTONYMS = [
    ("enable", "disable"), ("include", "exclude"), ("ascending", "descending"), ("asc", "desc"),
    ("increase", "decrease"), ("add", "remove"), ("allow", "deny"), ("allow", "block"),
    ("accept", "reject"), ("min", "max"), ("minimum", "maximum"), ("before", "after"),
    ("above", "below"), ("first", "last"), ("encrypt", "decrypt"), ("encode", "decode"),
    ("upload", "download"), ("import", "export"), ("buy", "sell"), ("install", "uninstall"),
    ("lock", "unlock"), ("start", "stop"), ("open", "close"), ("on", "off"), ("up", "down"),
    ("push", "pull"), ("true", "false"), ("yes", "no"), ("input", "output"),
    ("left", "right"), ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"),
    ("longest", "shortest"), ("best", "worst"), ("more", "less"), ("most", "least"),
    ("increment", "decrement"), ("inner", "outer"), ("public", "private"), ("positive", "negative"),
    ("subscribe", "unsubscribe"), ("connect", "disconnect"), ("show", "hide"), ("create", "delete"),
    ("insert", "delete"), ("append", "prepend"), ("lowercase", "uppercase"), ("sync", "async"),
    ("synchronous", "asynchronous"), ("mutable", "immutable"), ("deposit", "withdraw"),
    ("cheap", "expensive"), ("fast", "slow"), ("hot", "cold"), ("north", "south"), ("east", "west"),
    ("men", "women"), ("male", "female"), ("boy", "girl"), ("pros", "cons"), ("advantages", "disadvantages"),
]
_PAIR_ORDER = frozenset(_ANTONYMS)
# Requests on one account, order, subscription or file, each with the words that ask for it
# (verbs and their nouns). Not opposites, so the antonym list misses them, and in a question
# they are one word among many shared ones: the cross-encoder served "deleting freemium account"
# for "edit info on freemium account" (p 0.80) and "cancel" for "pause my subscription" (p 0.85).
# Polysemous words ("make", "move", "return", "open", "correct") are left out.
_ACTIONS: dict[str, tuple[str, ...]] = {
    "delete": ("delete", "remove", "erase", "cancel", "terminate", "deletion", "removal", "cancellation",
               "termination", "canceled", "cancelled", "canceling", "cancelling"),
    "edit": ("edit", "change", "modify", "update", "alter", "modification", "modified", "modifying"),
    "create": ("create", "register", "signup", "creation", "registration"),
    "track": ("track", "trace", "tracking"),
    "renew": ("renew", "extend", "renewal"),
    "upgrade": ("upgrade",),
    "downgrade": ("downgrade",),
    "recover": ("recover", "restore", "retrieve", "reset", "resets", "recovery", "restoration", "resetting"),
    "transfer": ("transfer", "transfers", "migrate", "migration", "transferred", "transferring"),
    "pause": ("pause", "suspend", "freeze", "suspension", "froze", "frozen", "freezing"),
    "resume": ("resume", "reactivate", "unpause", "unfreeze", "reactivation"),
    "refund": ("refund", "reimburse", "reimbursement"),
    "exchange": ("exchange", "replace", "swap", "swaps", "replacement", "swapped", "swapping"),
    "pay": ("pay", "paid", "pays", "paying"),  # not "payment": "update my payment method" names an object
    "copy": ("copy", "duplicate", "copies", "copied", "copying"),
    "rename": ("rename",),
    "merge": ("merge", "combine"),
    "print": ("print",),
    "archive": ("archive",),
}


_AS_LISTED = frozenset({"pay", "paid", "pays", "reset", "resets", "swap", "swaps", "signup", "transfer", "transfers"})


def _inflected(word: str) -> tuple[str, ...]:
    """A base verb with -s, -ed and -ing as regular verbs take them; other forms are listed above."""
    if word in _AS_LISTED or word.endswith(("ed", "ing", "ion", "al", "ment", "ies", "y", "en", "ze")):
        return (word, word + "s") if word.endswith(("ion", "al", "ment")) else (word,)
    stem = word[:-1] if word.endswith("e") else word
    return word, word + "s", stem + "ed", stem + "ing"


_ACTION_OF = {form: action for action, words in _ACTIONS.items() for w in words for form in _inflected(w)}

# Misspelt request words. Typed support questions are full of them ("deleet", "acncel", "edlete"
# in Bitext's held-out groups), and the cross-encoder reads "what do I have to do to deleet a
# premium account?" as the same request as "edit premium account" (p 0.82-0.96). A word that is
# not an English word (not a whole word of the verifier's WordPiece vocabulary), five letters or
# more, is read as the request word it is one slip from: two neighbouring letters swapped, one
# letter dropped or one added. Not one letter replaced: "chances" / "changes" and "remotes" /
# "removes" are words too, and a slip that two requests share is no request.
_SLIP_MIN = 5
_VOCAB = Path(__file__).parents[1] / "verifier" / "cross_encoder" / "tokenizer.json"


def _dropped(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _swapped(word: str) -> set[str]:
    return {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)} - {word}


def _slip_index() -> dict[str, str]:
    out: dict[str, str | None] = {}
    for form, action in _ACTION_OF.items():
        if len(form) >= _SLIP_MIN:
            for slip in _dropped(form) | _swapped(form):
                out[slip] = action if out.get(slip, action) == action else None
    return {slip: action for slip, action in out.items() if action is not None and slip not in _ACTION_OF}


_SLIP_OF = _slip_index()
_ENDS = frozenset((form[0], form[-1]) for form in _ACTION_OF)


def _may_have_one_letter_added(word: str) -> bool:
    """A cheap test before building ``word``'s variants: a request word with one letter added keeps
    its first and last letters, unless the added letter is one of them (a hostile 16 kB text of
    made-up words spent ~15 ms here building variants of every word)."""
    return (word[0], word[-1]) in _ENDS or word[1:] in _ACTION_OF or word[:-1] in _ACTION_OF
_SLIP_MAX = max(map(len, _ACTION_OF)) + 1


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Whole lower-case words of the shipped WordPiece vocabulary (~22k); empty if it is missing."""
    try:
        vocab = json.loads(_VOCAB.read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, ValueError, KeyError):
        return frozenset()
    return frozenset(w for w in vocab if w.isalpha() and w.islower())


english_words()  # read here (~20 ms), not inside the first lookup that meets a misspelt word


def _action_of(word: str) -> str | None:
    """The request ``word`` names, reading a non-word one slip from a request word as that word."""
    action = _ACTION_OF.get(word)
    if action is not None or not _SLIP_MIN <= len(word) <= _SLIP_MAX:  # bounded: a 40 kB "word" is no slip
        return action
    english = english_words()
    if not english or word in english:  # without the vocabulary, no word is taken for a slip
        return None
    action = _SLIP_OF.get(word)  # one letter dropped, or two swapped
    if action is None and _may_have_one_letter_added(word):
        found = {_ACTION_OF[w] for w in _dropped(word) if w in _ACTION_OF}
        action = found.pop() if len(found) == 1 else None
    return action


_OPPOSITES: dict[str, set[str]] = {}
for _x, _y in _ANTONYMS:
    _OPPOSITES.setdefault(_x, set()).add(_y)
    _OPPOSITES.setdefault(_y, set()).add(_x)
_STEMS = ("ing", "ed", "es", "s", "d")
_IDENT_RE = re.compile(
    r"`([^`]+)`"                                   # quoted code
    r"|\b([A-Za-z_][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+)\b"   # snake_case
    r"|\b([a-z]+[A-Z][A-Za-z0-9]*)\b"              # camelCase
    r"|\b([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)(?:\(\))?"  # dotted.names
    r"|\b([A-Za-z_]\w*)\(\)"                       # call()
)
_ENTITY_RE = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-zA-Z0-9&-]+(?:\s+[A-Z][a-zA-Z0-9&-]+)*)")


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """Which guard rejected a candidate and why; ``passed`` when none did."""

    passed: bool
    guard: str | None = None
    detail: str = ""
    overruled: bool = False
    """Passed only because ``guard``, which refused, is one the verifier may overrule (it must now)."""

    @property
    def reason(self) -> str:
        if self.overruled:
            return f"guard: {self.guard} differ ({self.detail}), left to the verifier"
        return "guards passed" if self.passed else f"guard: {self.guard} differ ({self.detail})"


PASSED = GuardVerdict(True)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("’", "'"))


def _stem(word: str) -> str:
    for suffix in _STEMS:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@per_text
def _negation_profile(text: str) -> tuple[int, frozenset[str]]:
    words = [w.replace("'", "") for w in _words(text)]
    negations = sum(1 for w in words if w in _NEGATORS)
    return negations % 2, frozenset(_stem(w) for w in words) | frozenset(words)


def negation_conflict(a: str, b: str, *, parity: bool = True) -> str | None:
    """Describe a negation or antonym mismatch between two texts, or None (antonyms only
    without ``parity``)."""
    parity_a, words_a = _negation_profile(a)
    parity_b, words_b = _negation_profile(b)
    if parity and parity_a != parity_b:
        return "negation"
    # Only words of the antonym vocabulary present in one text can conflict.
    for x in words_a & _OPPOSITES.keys():
        if x in words_b:
            continue
        for y in _OPPOSITES[x]:
            if y in words_b and y not in words_a:
                return f"{x}/{y}" if (x, y) in _PAIR_ORDER else f"{y}/{x}"
    return _prefixed(a, words_a, words_b) or _prefixed(b, words_b, words_a)


# Prefixes that negate the word they make: "atypical", "unsafe", "illegal", "nonprofit".
_NEGATING_PREFIXES = ("non", "dis", "un", "in", "im", "il", "ir", "a")
_NEGATING_PREFIX_RE = re.compile("|".join(_NEGATING_PREFIXES))  # at most one fits a word: they start apart


@per_text
def _prefixed_words(text: str) -> tuple[tuple[str, str], ...]:
    """``(base, word)`` for each word of ``text`` (6+ letters) that is a negating prefix and a base
    of 4+ letters. Per text and cached, like its negation profile: a candidate's check then costs
    a set lookup per such word (a hostile 16 kB pair: ~17 ms on the event loop when each check
    scanned every word)."""
    found = []
    for word in _negation_profile(text)[1]:
        m = _NEGATING_PREFIX_RE.match(word) if len(word) >= 6 else None
        if m and len(word) - m.end() >= 4:
            found.append((word[m.end():], word))
    return tuple(found)


def _prefixed(text: str, words: frozenset[str], other: frozenset[str]) -> str | None:
    """``"base/prefixed"`` where ``text`` has a word the other text has without its negating prefix
    ("typical" / "atypical", "safe" / "unsafe", "legal" / "illegal"). The model served "is chest
    pain an atypical symptom" for "... a typical symptom" at p 0.79. A word of another meaning
    ("inform" / "form", "around" / "round") is refused too: a different question either way."""
    for base, word in _prefixed_words(text):
        if base in other and base not in words and word not in other:
            return f"{base}/{word}"
    return None


@per_text
def actions_in(text: str) -> frozenset[str]:
    """The requests (:data:`_ACTIONS`: delete, edit, pause, renew, track, ...) a text names."""
    found = (_action_of(w) for w in _words(_SIGN_UP_RE.sub("signup", text)))
    return frozenset(a for a in found if a is not None)


def action_conflict(a: str, b: str) -> str | None:
    """``"x/y"`` when each text names a request the other does not ("edit" / "delete"), else None.
    A text naming no request, or one more than the other, is not a conflict: only one replaced."""
    in_a, in_b = actions_in(a), actions_in(b)
    only_a, only_b = in_a - in_b, in_b - in_a
    return f"{min(only_a)}/{min(only_b)}" if only_a and only_b else None


@per_text
def identifiers_in(text: str) -> frozenset[str]:
    """Code identifiers: `quoted`, snake_case, camelCase, dotted.names, calls()."""
    found = set()
    for groups in _IDENT_RE.findall(text):
        for g in groups:
            if g:
                found.add(g.strip())
    return frozenset(found)


@per_text
def entities_in(text: str) -> frozenset[str]:
    """Capitalised names not at the start of a sentence, lower-cased."""
    return frozenset(m.lower() for m in _ENTITY_RE.findall(text) if m.lower() not in {"i", "i'm", "i've"})


def overrulable(verdict: GuardVerdict, query: str, cached_query: str) -> bool:
    """Whether a verifier allowed to overrule ``verdict.guard`` (``verifier.overrule``) may overrule this
    refusal. Of the negation guard only a negation word one text has and the other lacks ("I don't
    know how to cancel" / "help me cancel"), in texts with no antonym pair: the cross-encoder told
    those apart, but scored "lock" / "unlock my screen rotation" 0.96 (``evaluation/traps.jsonl``).
    Of the numbers guard only a number one text spells out and the other does not state at all
    ("the first mail" / "the oldest mail", "my two accounts" / "my accounts"); never a number in
    digits, nor two texts that state different numbers."""
    if verdict.guard == "numbers":
        return spelled_on_one_side_only(query, cached_query)
    if verdict.guard != "negation":
        return True
    return verdict.detail == "negation" and negation_conflict(query, cached_query, parity=False) is None


def check(guards: Guards, query: str, cached_query: str) -> GuardVerdict:
    """Run the enabled guards; the first disagreement rejects the candidate."""
    if query == cached_query:
        return PASSED
    if guards.numbers:
        a, b = numbers_in(query), numbers_in(cached_query)
        if a != b:
            a, b = without_a_lone_one(a, b, query, cached_query), without_a_lone_one(b, a, cached_query, query)
        if a != b:
            return GuardVerdict(False, "numbers", f"{sorted(a ^ b)[:4]}")
    if guards.negation:
        conflict = negation_conflict(query, cached_query)
        if conflict:
            return GuardVerdict(False, "negation", conflict)
    if guards.actions:
        conflict = action_conflict(query, cached_query)
        if conflict:
            return GuardVerdict(False, "actions", conflict)
    if guards.identifiers:
        a, b = identifiers_in(query), identifiers_in(cached_query)
        if a != b:
            return GuardVerdict(False, "identifiers", f"{sorted(a ^ b)[:4]}")
    if guards.entities:
        a, b = entities_in(query), entities_in(cached_query)
        if a != b:
            return GuardVerdict(False, "entities", f"{sorted(a ^ b)[:4]}")
    return PASSED
