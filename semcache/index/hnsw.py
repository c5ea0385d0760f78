"""An hnswlib HNSW index with string ids, slot reuse and amortised growth.

* Inner product on unit float32 vectors: hnswlib reports ``1 - dot``, which
  we turn back into cosine similarity (one scale everywhere: [-1, 1]).
* String ids map to integer labels; deleted labels are marked deleted and
  their slots reused by later inserts (``allow_replace_deleted``), so churn
  does not grow memory.
* Growth doubles capacity with ``resize_index`` (amortised O(1) per insert,
  never a rebuild); a ``max_capacity`` (e.g. the category quota) caps it.
* Thread safety: searches share a read lock and run concurrently (hnswlib
  releases the GIL); inserts, deletes and resizes take the write lock, so a
  search never sees a label mid-reuse.
"""

from __future__ import annotations

from collections.abc import Sequence

import hnswlib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from semcache.errors import VectorIndexError
from semcache.index.rwlock import ReadWriteLock


class HNSWParams(BaseModel):
    """HNSW build and search parameters (see hnswlib's ALGO_PARAMS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    M: int = Field(default=16, ge=2, le=128)
    ef_construction: int = Field(default=100, ge=8)
    ef: int = Field(default=40, ge=1)
    initial_capacity: int = Field(default=1024, ge=16)
    seed: int = 100
    build_threads: int = Field(default=1, ge=1)
    """Threads for bulk inserts (searches are single-threaded per query)."""


class HNSWIndex:
    """Approximate cosine search with hnswlib (see module docstring)."""

    def __init__(self, dim: int, params: HNSWParams | None = None, *, max_capacity: int | None = None):
        self.dim = dim
        self.params = params or HNSWParams()
        self.max_capacity = max_capacity
        self._capacity = self.params.initial_capacity
        if max_capacity is not None:
            self._capacity = max(16, min(self._capacity, max_capacity))
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=self._capacity,
            ef_construction=self.params.ef_construction,
            M=self.params.M,
            random_seed=self.params.seed,
            allow_replace_deleted=True,
        )
        self._index.set_ef(self.params.ef)
        self._index.set_num_threads(self.params.build_threads)
        self._labels: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._next_label = 0
        self._deleted = 0
        self._lock = ReadWriteLock()

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, id: object) -> bool:
        return id in self._labels

    @property
    def capacity(self) -> int:
        return self._capacity

    def _grow_for(self, new_items: int) -> None:
        # Deleted slots are reused first (replace_deleted); only appends need room.
        appends = max(0, new_items - self._deleted)
        needed = self._index.get_current_count() + appends
        if needed <= self._capacity:
            return
        target = max(needed, 2 * self._capacity)
        if self.max_capacity is not None:
            target = max(needed, min(target, self.max_capacity))
        self._index.resize_index(target)
        self._capacity = target

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if vectors.shape[1] != self.dim:
            raise VectorIndexError(f"vector dim {vectors.shape[1]} != index dim {self.dim}")
        with self._lock.write():
            fresh_ids, fresh_rows = [], []
            for row, id in enumerate(ids):
                label = self._labels.get(id)
                if label is not None:  # re-adding an id updates its vector in place
                    self._index.add_items(vectors[row : row + 1], [label])
                else:
                    fresh_ids.append(id)
                    fresh_rows.append(row)
            if not fresh_ids:
                return
            self._grow_for(len(fresh_ids))
            labels = []
            for id in fresh_ids:
                label = self._next_label
                self._next_label += 1
                labels.append(label)
            try:
                self._index.add_items(vectors[fresh_rows], labels, replace_deleted=self._deleted > 0)
            except RuntimeError as exc:
                raise VectorIndexError(f"hnswlib add failed: {exc}") from exc
            reused = min(self._deleted, len(labels))
            self._deleted -= reused
            for id, label in zip(fresh_ids, labels):
                self._labels[id] = label
                self._ids[label] = id

    def delete(self, id: str) -> bool:
        with self._lock.write():
            label = self._labels.pop(id, None)
            if label is None:
                return False
            del self._ids[label]
            self._index.mark_deleted(label)
            self._deleted += 1
            return True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock.read():
            live = len(self._labels)
            k = min(k, live)
            if k <= 0:
                return []
            query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
            try:
                labels, distances = self._index.knn_query(query, k=k, num_threads=1)
            except RuntimeError:
                # hnswlib cannot always fill k slots when many nodes are deleted;
                # widen ef once and ask for what it can return.
                self._index.set_ef(max(self.params.ef, 4 * k, 128))
                try:
                    labels, distances = self._index.knn_query(query, k=1, num_threads=1)
                except RuntimeError as exc:
                    raise VectorIndexError(f"hnswlib search failed: {exc}") from exc
                finally:
                    self._index.set_ef(self.params.ef)
            ids = self._ids
            # tolist() first: plain ints/floats are several times cheaper to hash and
            # convert than numpy scalars, and this runs on every lookup.
            return [
                (ids[label], 1.0 - dist)
                for label, dist in zip(labels[0].tolist(), distances[0].tolist())
                if label in ids
            ]

    @property
    def nbytes(self) -> int:
        """Approximate memory: vectors plus level-0 links of every slot."""
        per_slot = self.dim * 4 + (2 * self.params.M + 1) * 4 + 8
        return self._capacity * per_slot
