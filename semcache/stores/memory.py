"""A process-local, non-persistent store: for ephemeral caches, tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from semcache.entries.entry import CacheEntry


class MemoryStore:
    """Entries in a dict; recency/frequency tracked per category. Nothing survives a restart."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def put(self, entry: CacheEntry) -> None:
        self._entries[entry.id] = entry.model_copy()

    async def get(self, id: str) -> CacheEntry | None:
        entry = self._entries.get(id)
        return entry.model_copy() if entry is not None else None

    async def update(self, id: str, change: Callable[[CacheEntry], CacheEntry | None]) -> CacheEntry | None:
        entry = self._entries.get(id)
        if entry is None:
            return None
        new = change(entry.model_copy())  # no await in between: atomic on the event loop
        if new is not None:
            self._entries[id] = new.model_copy()
        return new

    async def delete(self, ids: Sequence[str]) -> int:
        return sum(self._entries.pop(i, None) is not None for i in ids)

    async def scan(self) -> AsyncIterator[CacheEntry]:
        for entry in list(self._entries.values()):
            yield entry.model_copy()

    async def record_hit(self, id: str, at: float, expires_at: float | None = None) -> None:
        entry = self._entries.get(id)
        if entry is not None:
            entry.hit_count += 1
            entry.last_hit_at = at
            if expires_at is not None:
                entry.expires_at = expires_at

    async def eviction_candidates(self, category: str, order: str, limit: int) -> list[str]:
        entries = [e for e in self._entries.values() if e.category == category]
        if order == "lru":
            entries.sort(key=lambda e: e.last_hit_at or e.created_at)
        else:
            entries.sort(key=lambda e: (e.hit_count, e.last_hit_at or e.created_at))
        return [e.id for e in entries[:limit]]

    async def close(self) -> None:
        return None
