"""A small deterministic embedder for logic tests (not a mock: it really embeds).

Bag of hashed word unigrams and bigrams, L2-normalised: texts sharing words
are similar, identical texts have similarity 1. Tests where embedding quality
matters use the real MiniLM model instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np


class HashEmbedder:
    def __init__(self, dim: int = 64):
        self._dim = dim
        self.calls = 0
        self.fail_with: Exception | None = None

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        return f"hash-bow/{self._dim}"

    def _vector(self, text: str) -> np.ndarray:
        words = re.findall(r"\w+", text.lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        vec = np.zeros(self._dim, dtype=np.float32)
        for g in grams or [""]:
            h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
            vec[h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = np.linalg.norm(vec)
        return vec / norm if norm else np.eye(self._dim, dtype=np.float32)[0]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        return np.stack([self._vector(t) for t in texts]).astype(np.float32)
