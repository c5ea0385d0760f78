"""Misspelt words the other text spells right, read as that word before the cross-encoder sees a pair.

WordPiece cuts a misspelt word into pieces the model rarely saw together
("pamyent" -> ``pa ##my ##ent``), so a rewording with one slip of the keyboard
scored far below the same rewording spelt right: "check allowed payment
methods" / "check allowed pamyent methods" 0.15, "who was the last supper and
mona lisa painter?" / "... paitner?" 0.64. :func:`fold` gives the model the
other text's word instead.

The rule (the actions guard reads request words the same way,
:func:`semcache.decide.guards.english_words`): a word of one text that is not an
English word of the model's vocabulary (~22k), 4 to :data:`MAX_WORD` letters,
and is one swapped pair of neighbouring letters, one dropped or one added letter
away from exactly one word of the other text, is replaced by that word. Never
one replaced letter, and never a word the vocabulary knows: "chances" /
"changes" are two words, not a slip.

Only the model's input changes; the guards, the diff rule's atoms, the cosine
and the pair memo's key read the texts as written, so a name that is one letter
from another ("carsn" / "carson") can make the model read one person, but the
entities and numbers the guards check stay as written.

Measured on the calibration pairs (both orders, shipped 2% budgets, same
cut-off): 983 -> 1,012 other pairs served, none wrong, the same 15 traps.
Cost: set lookups per word, ~2 x its letters; texts are cut to
``MAX_CHARS`` before (``test_typos.py`` bounds a hostile pair).
"""

from __future__ import annotations

import re

from semcache.decide.guards import english_words

MIN_WORD = 4
MAX_WORD = 21
"""Longer "words" are never read as slips (a 2,000-letter token would cost 2,000 lookups for nothing)."""
HEAD_WORDS = 64
"""Only a text's first words are read: the model sees at most its ``max_len`` (64) tokens of the
pair. Bounds the work on a hostile pair: two 2,000-character texts of made-up words took 15 ms
read whole, ~2 ms read this far (``test_typos.py``)."""
_WORD_RE = re.compile(r"[A-Za-z]+")


def _dropped(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _swapped(word: str) -> set[str]:
    return {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}


def _head(text: str) -> int:
    """Where ``text``'s first :data:`HEAD_WORDS` words end."""
    end = 0
    for n, m in enumerate(_WORD_RE.finditer(text), 1):
        end = m.end()
        if n == HEAD_WORDS:
            break
    return end


def _fold_into(text: str, other: str) -> str:
    """``text`` with each slip of a word of ``other`` written as that word (in their first words)."""
    theirs = {m.group(0).lower() for m in _WORD_RE.finditer(other, 0, _head(other))}
    theirs = {w for w in theirs if MIN_WORD - 1 <= len(w) <= MAX_WORD}
    if not theirs:
        return text
    english = english_words()
    if not english:  # without the vocabulary no word is taken for a slip
        return text
    added: dict[str, set[str]] = {}  # their word with one letter dropped -> their word (ours added one)
    for w in theirs:
        for v in _dropped(w):
            added.setdefault(v, set()).add(w)

    def read(m: re.Match) -> str:
        word = m.group(0)
        lower = word.lower()
        if not MIN_WORD <= len(lower) <= MAX_WORD or lower in theirs or lower in english:
            return word
        found = ((_swapped(lower) | _dropped(lower)) & theirs) | added.get(lower, set())
        return found.pop() if len(found) == 1 else word

    cut = _head(text)
    return _WORD_RE.sub(read, text[:cut]) + text[cut:]


def fold(query: str, cached: str) -> tuple[str, str]:
    """Both texts with their slips of the other's words written as those words."""
    return _fold_into(query, cached), _fold_into(cached, query)
