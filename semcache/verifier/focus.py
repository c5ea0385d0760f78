"""What the cross-encoder reads for a long pair: the changed spans, not the shared head.

The model reads at most ``max_len`` tokens of the pair (64), cut longest
first. Two long prompts that differ only in their question (a document, then
"can I cancel?" vs "can't I cancel?") would reach it as two copies of the
document's opening, identical, and it would call them the same. So when the
pair is longer than the model can read, it gets the changed spans of
:func:`semcache.decide.diffrule.text_diff` instead, each with its few tokens of
context, joined by " ... " in order: exactly the words that decide whether
the cached answer still fits. Short pairs, and pairs the diff cannot bound
(which the diff rule serves only as exact repeats anyway), are read as they
are.
"""

from __future__ import annotations

from semcache.decide.diffrule import text_diff

LONG_CHARS = 240
"""A pair whose texts together exceed this many characters (~60 tokens) is read as its changed spans."""
JOIN = " ... "


def focus(query: str, cached: str) -> tuple[str, str]:
    """``(query, cached)`` as the cross-encoder should read them."""
    if len(query) + len(cached) <= LONG_CHARS:
        return query, cached
    diff = text_diff(query, cached)
    if not diff.bounded or not diff.spans:
        return query, cached
    return JOIN.join(s.query for s in diff.spans), JOIN.join(s.cached for s in diff.spans)
