"""The small seams of semcache: ``Embedder``, ``VectorIndex`` and ``Store``.

Implementations are swappable behind these structural protocols (an embedder
need not import semcache to satisfy ``Embedder``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from semcache.entries.entry import CacheEntry


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    ``identity`` names model, backend and precision (e.g.
    ``all-MiniLM-L6-v2/onnx/int8``); it is part of every cache key so vectors
    from different models or precisions are never compared.
    """

    @property
    def dim(self) -> int: ...

    @property
    def identity(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dim)``, dtype float32, unit rows."""
        ...


class VectorIndex(Protocol):
    """A nearest-neighbour index over unit vectors, scored by cosine similarity.

    Scores are cosine similarities in [-1, 1], higher is closer, everywhere.
    Implementations are synchronous and thread-safe; callers run large
    searches off the event loop.
    """

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None: ...

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]: ...

    def delete(self, id: str) -> bool: ...

    def __len__(self) -> int: ...

    def __contains__(self, id: object) -> bool: ...


class Store(Protocol):
    """Durable home of cache entries (documents, vectors, metadata).

    The in-memory index is rebuilt from ``scan()`` on start. ``record_hits``
    may be buffered by the implementation (recency/frequency are advisory).
    """

    async def put(self, entry: CacheEntry) -> None: ...

    async def get(self, id: str) -> CacheEntry | None: ...

    async def update(self, id: str, change: Callable[[CacheEntry], CacheEntry | None]) -> CacheEntry | None:
        """Apply ``change`` to the stored entry atomically (no other writer in between) and store
        its result; ``change`` may run more than once (optimistic retries) and returns None to
        write nothing. Returns what was written, or None (no entry, or nothing to write)."""
        ...

    async def delete(self, ids: Sequence[str]) -> int: ...

    def scan(self) -> AsyncIterator[CacheEntry]: ...

    async def record_hit(self, id: str, at: float) -> None: ...

    async def close(self) -> None: ...


class EntryListener(Protocol):
    """Told when an entry joins or leaves a cache's index (IC-Cache's example bank follows it).

    Called for entries rebuilt from the store on start, stored here, or
    followed from other processes; and for every removal (eviction, expiry,
    invalidation, feedback). Must be quick and must not raise.
    """

    def entry_added(self, entry: CacheEntry) -> None: ...

    def entry_removed(self, id: str) -> None: ...
