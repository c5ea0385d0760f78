"""An exact (brute-force) index: for small partitions and as ground truth in tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from semcache.errors import VectorIndexError


class FlatIndex:
    """Exact cosine search over a contiguous float32 matrix (rows are unit vectors).

    Deletion moves the last row into the freed slot, so the matrix stays dense
    and a search is one matrix-vector product.
    """

    def __init__(self, dim: int, capacity: int = 16):
        self.dim = dim
        self._vectors = np.empty((max(1, capacity), dim), dtype=np.float32)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        return id in self._rows

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if vectors.shape[1] != self.dim:
            raise VectorIndexError(f"vector dim {vectors.shape[1]} != index dim {self.dim}")
        with self._lock:
            for id, vec in zip(ids, vectors):
                row = self._rows.get(id)
                if row is None:
                    row = len(self._ids)
                    if row == len(self._vectors):
                        grown = np.empty((2 * len(self._vectors), self.dim), dtype=np.float32)
                        grown[:row] = self._vectors[:row]
                        self._vectors = grown
                    self._ids.append(id)
                    self._rows[id] = row
                self._vectors[row] = vec

    def delete(self, id: str) -> bool:
        with self._lock:
            row = self._rows.pop(id, None)
            if row is None:
                return False
            last = len(self._ids) - 1
            if row != last:
                moved = self._ids[last]
                self._vectors[row] = self._vectors[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._ids.pop()
            return True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            n = len(self._ids)
            if n == 0 or k <= 0:
                return []
            scores = self._vectors[:n] @ np.asarray(vector, dtype=np.float32).reshape(-1)
            if k < n:
                top = np.argpartition(-scores, k - 1)[:k]
                top = top[np.argsort(-scores[top])]
            else:
                top = np.argsort(-scores)
            return [(self._ids[i], float(scores[i])) for i in top]

    def items(self) -> tuple[list[str], np.ndarray]:
        """All ids and their vectors (a copy), e.g. to promote to HNSW."""
        with self._lock:
            n = len(self._ids)
            return list(self._ids), self._vectors[:n].copy()

    @property
    def nbytes(self) -> int:
        return self._vectors.nbytes
