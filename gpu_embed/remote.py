"""An ``Embedder`` that calls the embedding service over HTTP: :class:`RemoteEmbedder`.

One pooled ``httpx.AsyncClient`` (keep-alive, bounded connections, timeouts).
Its ``identity`` is the server's (fetched from ``/v1/embeddings/identity``),
so remote vectors share cache keys with local ones only when model, backend
and precision are truly the same; every response's ``model`` is checked
against it, so a server restarted with another model cannot slip different
vectors under the old key. Failures map to
:class:`~semcache.errors.EmbedderError` (503 from a full queue to
:class:`~semcache.errors.EmbedderOverloadedError`). An exact-text LRU saves
the round trip for repeats.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import httpx
import numpy as np

from semcache.errors import EmbedderError, EmbedderOverloadedError

from gpu_embed.embedder import check_texts
from gpu_embed.lru import EmbeddingLRU, embed_with_lru
from gpu_embed.settings import EmbedderSettings


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 1.0))


def _identity_from(response: httpx.Response, url: str) -> tuple[str, int]:
    if response.status_code != 200:
        raise EmbedderError(f"embed-server {url} answered {response.status_code}: {response.text[:200]}")
    body = response.json()
    return str(body["identity"]), int(body["dim"])


class RemoteEmbedder:
    """Embeds through ``POST {url}/v1/embeddings``; build with :meth:`connect`."""

    def __init__(self, url: str, identity: str, dim: int, *, timeout_s: float = 2.0,
                 max_connections: int = 64, lru_size: int = 4096):
        self.url = url.rstrip("/")
        self._identity = identity
        self._dim = dim
        self._timeout_s = timeout_s
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None
        self.lru = EmbeddingLRU(lru_size)
        self._closed = False

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        return self._identity

    @classmethod
    def connect_sync(cls, settings: EmbedderSettings) -> RemoteEmbedder:
        """Fetch the server's identity with a blocking call (for :func:`build_embedder`)."""
        url = settings.remote_url or ""
        try:
            with httpx.Client(timeout=_timeout(settings.remote_timeout_s)) as client:
                identity, dim = _identity_from(client.get(f"{url}/v1/embeddings/identity"), url)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise EmbedderError(f"cannot reach embed-server at {url}: {exc!r}") from exc
        return cls(url, identity, dim, timeout_s=settings.remote_timeout_s,
                   max_connections=settings.remote_max_connections, lru_size=settings.lru_size)

    @classmethod
    async def connect(cls, settings: EmbedderSettings) -> RemoteEmbedder:
        """Async variant of :meth:`connect_sync`."""
        return await asyncio.to_thread(cls.connect_sync, settings)

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, on the caller's loop: an AsyncClient's pool is
        # bound to the loop that first uses it.
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, timeout=_timeout(self._timeout_s),
                                             limits=self._limits)
        return self._client

    async def _fetch(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self._http().post(
                "/v1/embeddings",
                json={"input": texts, "model": self._identity, "encoding_format": "base64"},
            )
        except httpx.TimeoutException as exc:
            raise EmbedderError(f"embed-server {self.url} timed out after {self._timeout_s}s") from exc
        except httpx.HTTPError as exc:
            raise EmbedderError(f"embed-server {self.url} failed: {exc!r}") from exc
        if response.status_code == 503:
            raise EmbedderOverloadedError(f"embed-server {self.url} overloaded: {response.text[:200]}")
        if response.status_code != 200:
            raise EmbedderError(f"embed-server {self.url} answered {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
            if body.get("model") != self._identity:
                raise EmbedderError(
                    f"embed-server {self.url} now serves {body.get('model')!r}, not {self._identity!r}; "
                    "rebuild the embedder (its vectors would not match cached ones)"
                )
            rows = sorted(body["data"], key=lambda d: d["index"])
            vectors = np.stack([np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows])
        except EmbedderError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(f"embed-server {self.url} sent a malformed response: {exc!r}") from exc
        if vectors.shape != (len(texts), self._dim):
            raise EmbedderError(f"embed-server {self.url} sent shape {vectors.shape}, "
                                f"expected {(len(texts), self._dim)}")
        return vectors.astype(np.float32, copy=False)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return ``(len(texts), dim)`` float32 unit rows from the service."""
        check_texts(texts)
        if self._closed:
            raise EmbedderError("embedder closed")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return await embed_with_lru(self.lru, texts, self._dim, self._fetch)

    async def aclose(self) -> None:
        """Close the connection pool."""
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self.url!r}, {self._identity!r})"
