"""Exact-text LRU of recent embeddings: :class:`EmbeddingLRU`.

Repeat queries are common (retries, popular questions), and a dictionary look
up is ~1000x cheaper than a model call. Keys are the exact text; rows are
stored read-only so no caller can corrupt a cached vector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import numpy as np


class EmbeddingLRU:
    """A thread-safe bounded mapping text -> unit vector; ``capacity=0`` disables it."""

    def __init__(self, capacity: int):
        self.capacity = max(0, int(capacity))
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(text)
            if row is None:
                self.misses += 1
                return None
            self._rows.move_to_end(text)
            self.hits += 1
            return row

    def put(self, text: str, row: np.ndarray) -> None:
        if not self.capacity:
            return
        row = np.array(row, dtype=np.float32)  # own copy, detached from the batch
        row.setflags(write=False)
        with self._lock:
            self._rows[text] = row
            self._rows.move_to_end(text)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


async def embed_with_lru(
    lru: EmbeddingLRU,
    texts: Sequence[str],
    dim: int,
    compute: Callable[[list[str]], Awaitable[np.ndarray]],
) -> np.ndarray:
    """Embed ``texts``, computing only texts neither cached nor repeated in the call."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        row = lru.get(text) if lru.capacity else None
        if row is None:
            missing.setdefault(text, []).append(i)
        else:
            out[i] = row
    if missing:
        unique = list(missing)
        rows = await compute(unique)
        for text, row in zip(unique, rows):
            out[missing[text]] = row
            lru.put(text, row)
    return out
