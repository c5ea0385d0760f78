"""Exact-text LRU of recent embeddings: :class:`EmbeddingLRU`.

Repeat queries are common (retries, popular questions), and a dictionary look
up is ~1000x cheaper than a model call. Keys are the exact text; rows are
stored read-only so no caller can corrupt a cached vector.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from semcache.lru import CountingLRU


class EmbeddingLRU(CountingLRU[str, np.ndarray]):
    """A thread-safe bounded mapping text -> unit vector; ``capacity=0`` disables it."""

    def put(self, text: str, row: np.ndarray) -> None:
        if not self.capacity:
            return
        row = np.array(row, dtype=np.float32)  # own copy, detached from the batch
        row.setflags(write=False)
        super().put(text, row)


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
