"""Misspelt words the other text spells right, read as that word before the cross-encoder sees a pair.

WordPiece cuts a misspelt word into pieces the model rarely saw together
("pamyent" -> ``pa ##my ##ent``), so a rewording with one slip of the keyboard
scored far below the same rewording spelt right: "check allowed payment
methods" / "check allowed pamyent methods" 0.15, "who was the last supper and
mona lisa painter?" / "... paitner?" 0.64. :func:`fold` gives the model the
other text's word instead.

The rule: a word of one text that is not an English word of the model's
vocabulary (~22k, :func:`semcache.decide.guards.english_words`), 4 to
:data:`MAX_WORD` letters, written without capitals (a capitalised word inside
a text, an acronym or a camel-cased name is left alone), is read as the one
English word of the other text it is a slip of (:func:`_slip`): two
neighbouring letters swapped, a doubled letter typed once or a letter typed
twice, or a plural "s", never at the first letter and never one replaced letter.

Why so narrow: a word one letter away from another is very often another word.
A first version that took any swapped, dropped or added letter made the shipped
default serve "methanol" for "ethanol", "GDPR" for "GDP", "SFTP" for "FTP",
"gzip" for "zip" and "Ben Jonson" for "Ben Johnson" (model p 0.82-0.99, each
refused before; ``test_typos.py`` keeps them). On the calibration pairs the
narrow rule keeps what the wide one gained: both orders, shipped 2% budgets,
same cut-off, 983 -> 1,008 other pairs served (wide: 1,012), none wrong, the
same 15 traps; every pair it changes there is a rewording.

Only the model's input changes; the guards, the diff rule's atoms, the cosine
and the pair memo's key read the texts as written.
Cost: set lookups per word, ~2 x its letters; texts are cut to
``MAX_CHARS`` before (``test_typos.py`` bounds a hostile pair).
"""

from __future__ import annotations

import re

from semcache.decide.guards import _dropped, _swapped, english_words  # the actions guard's slips

MIN_WORD = 4
MAX_WORD = 21
"""Longer "words" are never read as slips (a 2,000-letter token would cost 2,000 lookups for nothing)."""
HEAD_WORDS = 64
"""Only a text's first words are read: the model sees at most its ``max_len`` (64) tokens of the
pair. Bounds the work on a hostile pair: two 2,000-character texts of made-up words took 15 ms
read whole, ~2 ms read this far (``test_typos.py``)."""
_WORD_RE = re.compile(r"[A-Za-z]+")


def _head_words(text: str) -> tuple[int, set[str]]:
    """Where ``text``'s first :data:`HEAD_WORDS` words end, and those words in lower case."""
    end, words = 0, set()
    for n, m in enumerate(_WORD_RE.finditer(text), 1):
        end = m.end()
        words.add(m.group(0).lower())
        if n == HEAD_WORDS:
            break
    return end, words


def _fold_into(text: str, cut: int, theirs: set[str], english: frozenset[str]) -> str:
    """``text`` (its words before ``cut``) with each slip of an English word of ``theirs`` written as that word."""
    targets = {w for w in theirs if w in english and MIN_WORD - 1 <= len(w) <= MAX_WORD}
    if not targets:
        return text
    added: dict[str, set[str]] = {}  # a target with one letter dropped -> the target (ours added one)
    for w in targets:
        for v in _dropped(w):
            added.setdefault(v, set()).add(w)

    def read(m: re.Match) -> str:
        word = m.group(0)
        lower = word.lower()
        if (not MIN_WORD <= len(lower) <= MAX_WORD or lower in theirs or lower in english
                or _named(word, m.start(), text)):
            return word
        found = ((_swapped(lower) | _dropped(lower)) & targets) | added.get(lower, set())
        found = {w for w in found if _slip(lower, w)}
        return found.pop() if len(found) == 1 else word

    return _WORD_RE.sub(read, text[:cut]) + text[cut:]


def _named(word: str, start: int, text: str) -> bool:
    """A capital inside the word (GDPR, iPhone), or a capitalised word inside the text (Jonson):
    a name or an acronym, whose neighbours one letter away are other names (GDP, Johnson)."""
    return any(c.isupper() for c in word[1:]) or (word[0].isupper() and bool(text[:start].strip()))


def _slip(ours: str, theirs: str) -> bool:
    """Whether ``ours`` -> ``theirs`` is a slip of the keys inside a word: the first letter stays
    (methanol / ethanol, atypical / typical, gzip / zip are other words); a letter comes or goes
    only as a doubled letter typed once or a letter typed twice (adress, pasword, acount), or as
    a plural "s" at the end (spreadsheets / spreadsheet), never another letter (Jonson / Johnson
    are two writers)."""
    if ours[0] != theirs[0]:
        return False
    if len(ours) == len(theirs):
        return True  # two neighbours swapped (pamyent)
    longer, shorter = (ours, theirs) if len(ours) > len(theirs) else (theirs, ours)
    if longer[:-1] == shorter:
        return longer[-1] == "s"
    i = next(i for i, (a, b) in enumerate(zip(longer, shorter)) if a != b)  # the extra letter
    return longer[i] == longer[i - 1] or longer[i] == longer[i + 1]


def fold(query: str, cached: str) -> tuple[str, str]:
    """Both texts with their slips of the other's words written as those words."""
    english = english_words()
    if not english:  # without the vocabulary no word is taken for a slip
        return query, cached
    (query_cut, query_words), (cached_cut, cached_words) = _head_words(query), _head_words(cached)
    return (_fold_into(query, query_cut, cached_words, english),
            _fold_into(cached, cached_cut, query_words, english))
