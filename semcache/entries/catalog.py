"""The in-memory side of the cache: per-entry metadata beside the vector index.

Holds, for every entry, what a lookup decision needs without touching the
store (partition, TTL, query text for the guards, size for byte quotas), the
exact-repeat map, and per-category counts and bytes for quotas.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from semcache.entries.entry import CacheEntry
from semcache.index import HNSWParams, PartitionedIndex
from semcache.request.keys import text_digest
from semcache.protocols import EntryListener

log = logging.getLogger("semcache.entries.catalog")


@dataclass(slots=True)
class EntryMeta:
    """The in-memory part of an entry."""

    id: str
    tenant: str
    namespace: str
    partition: str
    digest: str
    category: str
    model: str
    policy_version: str
    query: str
    created_at: float
    expires_at: float | None
    size: int
    blocked: frozenset[str] = frozenset()
    """Query digests this entry must not answer (found wrong for them by an audit)."""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class EntryCatalog:
    """Metadata, exact-repeat map, counters and the partitioned vector index."""

    def __init__(self, dim: int, *, hnsw: HNSWParams | None = None, promote_at: int = 2048):
        self.index = PartitionedIndex(dim, hnsw=hnsw, promote_at=promote_at)
        self._meta: dict[str, EntryMeta] = {}
        self._exact: dict[tuple[str, str], str] = {}
        self._texts: dict[str, int] = {}  # text digest -> live entries with that text, any partition
        self._count: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self.listeners: list[EntryListener] = []
        """Followers of the catalog's contents (told of every entry added and removed)."""

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, id: object) -> bool:
        return id in self._meta

    def __iter__(self) -> Iterator[EntryMeta]:
        return iter(list(self._meta.values()))

    def get(self, id: str) -> EntryMeta | None:
        return self._meta.get(id)

    def exact(self, partition: str, digest: str) -> str | None:
        return self._exact.get((partition, digest))

    def has_text(self, digest: str) -> bool:
        """True when some entry (any tenant, category or partition) was asked with this exact text."""
        return digest in self._texts

    def count(self, category: str) -> int:
        return self._count.get(category, 0)

    def bytes(self, category: str) -> int:
        return self._bytes.get(category, 0)

    def add(self, entry: CacheEntry, capacity_hint: int | None = None) -> EntryMeta:
        if entry.id in self._meta:
            self.forget(entry.id)
        self.index.add(entry.partition, entry.id, entry.vector, capacity_hint=capacity_hint)
        return self._register(entry)

    def add_many(self, entries: list[CacheEntry], capacity_hint: int | None = None) -> None:
        """Bulk add of new entries (one index insert per partition)."""
        by_partition: dict[str, list[CacheEntry]] = {}
        for entry in entries:
            if entry.id in self._meta:
                self.forget(entry.id)
            by_partition.setdefault(entry.partition, []).append(entry)
        for partition, group in by_partition.items():
            vectors = np.stack([e.vector for e in group]).astype(np.float32)
            self.index.add_many(partition, [e.id for e in group], vectors, capacity_hint=capacity_hint)
            for entry in group:
                self._register(entry)

    def _register(self, entry: CacheEntry) -> EntryMeta:
        meta = EntryMeta(
            id=entry.id, tenant=entry.tenant, namespace=entry.namespace, partition=entry.partition,
            digest=text_digest(entry.query), category=entry.category, model=entry.model,
            policy_version=entry.policy_version, query=entry.query, created_at=entry.created_at,
            expires_at=entry.expires_at, size=entry.size_bytes, blocked=frozenset(entry.blocked_queries),
        )
        self._meta[meta.id] = meta
        self._exact[(meta.partition, meta.digest)] = meta.id
        self._texts[meta.digest] = self._texts.get(meta.digest, 0) + 1
        self._count[meta.category] = self._count.get(meta.category, 0) + 1
        self._bytes[meta.category] = self._bytes.get(meta.category, 0) + meta.size
        for listener in self.listeners:
            _notify(listener.entry_added, entry)
        return meta

    def forget(self, id: str) -> EntryMeta | None:
        meta = self._meta.pop(id, None)
        if meta is None:
            return None
        self.index.delete(id)
        if self._exact.get((meta.partition, meta.digest)) == id:
            del self._exact[(meta.partition, meta.digest)]
        left = self._texts[meta.digest] - 1
        if left:
            self._texts[meta.digest] = left
        else:
            del self._texts[meta.digest]
        self._count[meta.category] -= 1
        self._bytes[meta.category] -= meta.size
        for listener in self.listeners:
            _notify(listener.entry_removed, id)
        return meta

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self._count.items() if v}

    def sizes(self) -> dict[str, int]:
        return {k: v for k, v in self._bytes.items() if v}

    def describe(self, *, tenant: str | None = None, category: str | None = None,
                 limit: int = 100) -> list[dict]:
        """Metadata of up to ``limit`` entries, newest first (for admin inspection)."""
        metas = [m for m in self._meta.values()
                 if (tenant is None or m.tenant == tenant) and (category is None or m.category == category)]
        metas.sort(key=lambda m: m.created_at, reverse=True)
        return [
            {"id": m.id, "tenant": m.tenant, "namespace": m.namespace, "category": m.category,
             "model": m.model, "policy_version": m.policy_version, "query": m.query,
             "created_at": m.created_at, "expires_at": m.expires_at, "bytes": m.size}
            for m in metas[:limit]
        ]


def _notify(callback: Callable, arg: object) -> None:
    try:
        callback(arg)
    except Exception:  # a follower's bug must not fail a store or a lookup
        log.exception("semcache entry listener failed")
