"""A bounded, thread-safe LRU mapping that counts its hits and misses: :class:`CountingLRU`.

Used where a pure function of a text is worth remembering across requests:
the embedder's vectors (:class:`gpu_embed.lru.EmbeddingLRU`), the
cross-encoder's pair scores (:class:`semcache.verifier.cross_encoder.PairMemo`)
and what the guards read from a text (:mod:`semcache.textcache`, bounded by the
characters of its keys through ``weigh``). A dictionary lookup under a lock is
~1000x cheaper than a model run; the counts feed ``/metrics``.
``functools.lru_cache`` cannot be bounded per instance or by size, counted by
callers or fed values computed elsewhere (in batches).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class CountingLRU(Generic[K, V]):
    """At most ``capacity`` items, least recently used out first; ``capacity=0`` remembers nothing.

    With ``weigh``, ``capacity`` bounds the sum of ``weigh(key)`` over the keys instead (e.g.
    ``len``: the characters of the texts kept); an item heavier than ``capacity`` is not kept."""

    def __init__(self, capacity: int, *, weigh: Callable[[K], int] | None = None):
        self.capacity = max(0, int(capacity))
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.weight = 0
        """What the kept keys weigh: their number, or the sum of ``weigh`` over them."""
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        w = self._weigh(key) if self._weigh is not None else 1
        if w > self.capacity:
            return
        with self._lock:
            if key not in self._items:
                self.weight += w
            self._items[key] = value
            self._items.move_to_end(key)
            while self.weight > self.capacity:
                old, _ = self._items.popitem(last=False)
                self.weight -= self._weigh(old) if self._weigh is not None else 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0
