"""The in-process embedder: :class:`LocalEmbedder` = backend + micro-batcher + LRU.

It satisfies :class:`semcache.protocols.Embedder`: ``dim``, ``identity`` and
``async embed(texts) -> float32 (n, dim)`` with unit rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semcache.errors import EmbedderError

from gpu_embed.backends.base import Backend
from gpu_embed.batcher import MicroBatcher
from gpu_embed.lru import EmbeddingLRU, embed_with_lru


def check_texts(texts: Sequence[str]) -> None:
    """Reject a bare string (a common slip: it would embed each character)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("embed() takes a sequence of strings, not a single string")
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"embed() takes strings, got {type(text).__name__}")


class LocalEmbedder:
    """Embeds with a local :class:`~gpu_embed.backends.base.Backend`."""

    def __init__(self, backend: Backend, *, max_batch_size: int = 64, max_wait_ms: float = 1.0,
                 max_queue: int = 1024, lru_size: int = 4096):
        self.backend = backend
        self.batcher = MicroBatcher(backend.encode, max_batch_size=max_batch_size,
                                    max_wait_ms=max_wait_ms, max_queue=max_queue)
        self.lru = EmbeddingLRU(lru_size)
        self._closed = False

    @property
    def dim(self) -> int:
        return self.backend.dim

    @property
    def identity(self) -> str:
        return self.backend.identity

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return ``(len(texts), dim)`` float32 unit rows, in input order.

        Raises :class:`~semcache.errors.EmbedderOverloadedError` when the queue
        is full and :class:`~semcache.errors.EmbedderError` on any failure.
        """
        check_texts(texts)
        if self._closed:
            raise EmbedderError("embedder closed")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await embed_with_lru(self.lru, texts, self.dim, self.batcher.submit)

    async def aclose(self) -> None:
        """Stop batching, wait for the running batch, release the model."""
        if self._closed:
            return
        self._closed = True
        await self.batcher.aclose()
        self.backend.close()

    def __repr__(self) -> str:
        return f"LocalEmbedder({self.identity!r})"
