"""Names one or two letters apart at their front: ``pnpm`` / ``npm``, ``SFTP`` / ``FTP``, ``TFSA`` / ``FSA``.

A tool, format or product whose name is another's with a letter or two in
front is another thing, and neither the embedder nor the cross-encoder reads
it: the model served "How do I install packages with pnpm?" for "... with
npm?" at p 0.79. The diff rule (:mod:`semcache.decide.diffrule`) therefore
refuses a pair where one text has a word that is a word of the other text
with one or two letters in front, when **neither is an English word** (the
verifier's WordPiece vocabulary, :func:`semcache.decide.guards.english_words`):
names, acronyms and identifiers, which the model sees as word pieces.

Why so narrow, measured on the calibration and test pairs: with only the
longer word required to be a non-word, it refused 8 rewordings there to catch
2 other questions, on "mail" / "Gmail" in a Gmail FAQ, "load" / "upload", and
words run together ("ihave", "uhelp"). An English word with a letter in front
(``gzip`` / ``zip``, ``Preact`` / ``React``) is left to the model, which
refuses the ones in ``tests/semcache/test_default_policy_verifier.py``; so is
an ending (``reactjs`` / ``react``, ``GDPR`` / ``GDP``), which is how English
makes a word's forms; a misspelling inside a word is :mod:`semcache.verifier.typos`'
to read. A word each text has is never a difference.

Left out, measured by a review: acronyms that are WordPiece words ("SQL" /
"MySQL", "OS" / "iOS") stay the model's; in text that is not English every
word is a non-word, so prefix grammar ("macht" / "gemacht") is refused too:
a miss, never a wrong answer. Without the vocabulary the rule is off (it
would be the wide rule above).

Cost: a set difference, then up to two slices and set lookups per word that
only one text has. Word sets are remembered per text (:mod:`semcache.textcache`,
bounded by characters).
"""

from __future__ import annotations

import re

from semcache.decide.guards import english_words
from semcache.textcache import per_text

_LETTERS_RE = re.compile(r"[a-z]+")
MAX_FRONT = 2
"""Letters a name may have in front of the other."""
MIN_BASE = 2
"""The shorter name's letters at least: a lone letter is no name."""


@per_text
def _words(text: str) -> frozenset[str]:
    return frozenset(_LETTERS_RE.findall(text.lower()))


def front_extended(a: str, b: str) -> str | None:
    """``"npm/pnpm"`` when a word of one text is a word of the other with one or two letters in
    front, neither is an English word, and each appears on its own side only; else None."""
    english = english_words()
    if not english:  # every word would be a non-word: the wide rule that refuses rewordings
        return None
    words_a, words_b = _words(a), _words(b)
    if words_a == words_b:
        return None
    only_a, only_b = words_a - words_b, words_b - words_a
    found = [f"{base}/{word}"
             for longer, shorter in ((only_a, only_b), (only_b, only_a)) for word in longer if word not in english
             for base in (word[cut:] for cut in range(1, MAX_FRONT + 1))
             if len(base) >= MIN_BASE and base in shorter and base not in english]
    return min(found) if found else None  # the same reason in every process (sets iterate by hash seed)
