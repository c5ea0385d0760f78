"""One index per key partition: lookups can never cross partitions.

Why per-partition indexes rather than one global index with a filter:

* **Correct by construction.** A search only ever sees its own partition's
  vectors, so no filter bug can leak another tenant's or another context's
  entry.
* **Stays fast when one partition holds 99% of the entries.** Over-fetch +
  filter degrades badly for a tiny partition next to a huge one (the top-k of
  the global graph are all foreign), and hnswlib's filtered search calls a
  Python callback per visited node. Here the big partition has its own HNSW
  graph (searched in ~log n) and a tiny one a brute-force matrix.
* **Cheap for the long tail.** Multi-turn chats make many partitions of one or
  two entries each: those live in a :class:`FlatIndex` (a few KB), and a
  partition is promoted to its own :class:`HNSWIndex` only once it outgrows
  ``promote_at`` entries, where exact search would start to cost more than a
  graph search. Promotion copies the vectors once (amortised like growth).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from semcache.index.flat import FlatIndex
from semcache.index.hnsw import HNSWIndex, HNSWParams


class PartitionedIndex:
    """Maps partition id -> its own flat or HNSW index; ids are globally unique."""

    def __init__(
        self,
        dim: int,
        *,
        hnsw: HNSWParams | None = None,
        promote_at: int = 2048,
        capacity_for: Callable[[str], int | None] | None = None,
    ):
        self.dim = dim
        self.hnsw = hnsw or HNSWParams()
        self.promote_at = promote_at
        self._capacity_for = capacity_for or (lambda partition: None)
        self._parts: dict[str, FlatIndex | HNSWIndex] = {}
        self._where: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, id: object) -> bool:
        return id in self._where

    def partition_of(self, id: str) -> str | None:
        return self._where.get(id)

    def partition_size(self, partition: str) -> int:
        part = self._parts.get(partition)
        return len(part) if part is not None else 0

    def is_graph(self, partition: str) -> bool:
        """True when the partition is an HNSW graph (worth a worker thread)."""
        return isinstance(self._parts.get(partition), HNSWIndex)

    def add(self, partition: str, id: str, vector: np.ndarray, capacity_hint: int | None = None) -> None:
        with self._lock:
            old = self._where.get(id)
            if old is not None and old != partition:
                self._parts[old].delete(id)
            part = self._parts.get(partition)
            if part is None:
                part = self._parts[partition] = FlatIndex(self.dim)
            if isinstance(part, FlatIndex) and len(part) + 1 > self.promote_at:
                part = self._promote(partition, part, capacity_hint)
            part.add([id], vector.reshape(1, -1))
            self._where[id] = partition

    def add_many(self, partition: str, ids: list[str], vectors: np.ndarray,
                 capacity_hint: int | None = None) -> None:
        """Bulk insert of new ids into one partition (rebuilds, imports, benchmarks)."""
        with self._lock:
            part = self._parts.get(partition)
            if part is None:
                part = self._parts[partition] = FlatIndex(self.dim)
            if isinstance(part, FlatIndex) and len(part) + len(ids) > self.promote_at:
                part = self._promote(partition, part, capacity_hint)
            part.add(ids, vectors)
            for id in ids:
                self._where[id] = partition

    def _promote(self, partition: str, flat: FlatIndex, capacity_hint: int | None) -> HNSWIndex:
        graph = HNSWIndex(self.dim, self.hnsw, max_capacity=capacity_hint)
        ids, vectors = flat.items()
        if ids:
            graph.add(ids, vectors)
        self._parts[partition] = graph
        return graph

    def delete(self, id: str) -> bool:
        with self._lock:
            partition = self._where.pop(id, None)
            if partition is None:
                return False
            part = self._parts[partition]
            part.delete(id)
            if len(part) == 0:
                del self._parts[partition]
            return True

    def search(self, partition: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        part = self._parts.get(partition)
        if part is None:
            return []
        return part.search(vector, k)

    def stats(self) -> dict[str, int]:
        parts = list(self._parts.values())
        graphs = [p for p in parts if isinstance(p, HNSWIndex)]
        return {
            "entries": len(self._where),
            "partitions": len(parts),
            "graph_partitions": len(graphs),
            "bytes": sum(p.nbytes for p in parts),
        }
