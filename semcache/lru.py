"""A bounded, thread-safe LRU mapping that counts its hits and misses: :class:`CountingLRU`.

Used where a pure function of a text is worth remembering across requests:
the embedder's vectors (:class:`gpu_embed.lru.EmbeddingLRU`) and the
cross-encoder's pair scores (:class:`semcache.verifier.cross_encoder.PairMemo`).
A dictionary lookup under a lock is ~1000x cheaper than a model run; the
counts feed ``/metrics``. ``functools.lru_cache`` cannot be bounded per
instance, counted by callers or fed values computed elsewhere (in batches).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class CountingLRU(Generic[K, V]):
    """At most ``capacity`` items, least recently used out first; ``capacity=0`` remembers nothing."""

    def __init__(self, capacity: int):
        self.capacity = max(0, int(capacity))
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
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
        if not self.capacity:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
