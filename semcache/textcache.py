"""``@per_text``: remember a pure function of one text, bounded by the characters it keeps.

The guards read each text once and remember what they read (its words, its
numbers, its requests), because a lookup checks up to four candidates and a
cached query meets many lookups. ``functools.lru_cache(maxsize=8192)`` bounded
the *entries* only: texts reach the guards at up to 100k characters, and the
word set of one such text is ~1.9 MB (measured with tracemalloc), so 8,192 of
them, sent by one tenant as rewordings of its own long entries, could hold
~15 GB, and even the keys alone ~800 MB per cache. This cache (a
:class:`semcache.lru.CountingLRU` weighing keys by ``len``) is bounded by the
characters of its keys (:data:`CHARS` per function: ~4 MB of text and at most
~80 MB of what was read from it) and keeps no text over :data:`LARGEST`, so
one text never takes more than a sixteenth of it. Long texts must still be
remembered: a lookup checks up to four candidates, and reading a 100k-
character pair afresh for each made the guards' work per lookup 187 -> 1,064 ms
(measured with the cache capped at 16k characters). A call costs ~1 µs more
than ``lru_cache``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from semcache.lru import CountingLRU

T = TypeVar("T")

CHARS = 4_000_000
"""Characters of the texts one function keeps at most (each text counted once)."""
LARGEST = CHARS // 16
"""Longer texts are never kept (the diff rule compares none over 100k characters)."""


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    currsize: int
    chars: int


class _PerText:
    def __init__(self, fn: Callable[[str], T], chars: int, largest: int):
        self.fn, self.largest = fn, largest
        self._memo: CountingLRU[str, T] = CountingLRU(chars, weigh=len)
        functools.update_wrapper(self, fn)

    def __call__(self, text: str) -> T:
        if len(text) > self.largest:
            return self.fn(text)
        value = self._memo.get(text)
        if value is None:  # the functions decorated never return None
            value = self.fn(text)  # outside the memo's lock: a slow text never holds up another thread
            self._memo.put(text, value)
        return value

    def cache_clear(self) -> None:
        self._memo.clear()
        self._memo.hits = self._memo.misses = 0

    def cache_info(self) -> CacheInfo:
        memo = self._memo
        return CacheInfo(memo.hits, memo.misses, len(memo), memo.weight)


def per_text(fn: Callable[[str], T] | None = None, *, chars: int = CHARS, largest: int = LARGEST):
    """Decorate a pure function of one ``str`` that never returns None: ``@per_text`` or
    ``@per_text(chars=..., largest=...)``."""
    if fn is None:
        return lambda f: _PerText(f, chars, largest)
    return _PerText(fn, chars, largest)
