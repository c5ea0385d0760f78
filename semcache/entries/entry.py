"""The cache entry: what is stored for one answered request.

Besides what serving a hit needs (the response, and the upstream's stream
chunks to replay a streamed answer faithfully), an entry carries what comes
next needs: the producing model and token counts (cost and savings), hit
statistics (recency/frequency eviction), and utility/feedback fields that
in-context example selection (IC-Cache) and hit verification update.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Feedback(BaseModel):
    """Explicit reports that this entry's answer was right or wrong."""

    model_config = ConfigDict(extra="forbid")

    positive: int = 0
    negative: int = 0
    reporters: list[str] = Field(default_factory=list)
    """Tenants that reported a shared entry wrong (distinct; quarantine counts them)."""


class CacheEntry(BaseModel):
    """One cached answer, with its exact-context partition and its query vector.

    ``vector`` is a unit float32 row; ``response`` is the full non-streamed
    OpenAI response JSON; ``chunks`` the upstream's SSE chunk objects when the
    answer was streamed (replayed with a fresh id and timestamp on a hit).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    id: str
    tenant: str
    namespace: str = ""
    partition: str
    category: str
    policy_version: str
    model: str
    endpoint: str
    query: str
    vector: np.ndarray = Field(repr=False)
    response: dict[str, Any]
    chunks: list[dict[str, Any]] | None = None
    embedder: str
    created_at: float
    expires_at: float | None = None
    last_hit_at: float | None = None
    hit_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    utility: float = 0.0
    utility_uses: int = 0
    feedback: Feedback = Field(default_factory=Feedback)
    trust: float = 1.0
    validated_at: float | None = None
    """When the large model last confirmed (or rewrote) this answer offline (IC-Cache replay)."""
    blocked_queries: list[str] = Field(default_factory=list)
    """Text digests of queries this entry must not answer: an audit found it wrong for them
    (:func:`semcache.observe.audit.quarantine_pair`)."""

    @property
    def size_bytes(self) -> int:
        """Approximate stored size: documents plus vector, used by byte quotas."""
        body = len(json.dumps(self.response, separators=(",", ":")))
        if self.chunks:
            body += len(json.dumps(self.chunks, separators=(",", ":")))
        return body + len(self.query.encode()) + self.vector.nbytes

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_record(self) -> dict[str, Any]:
        """JSON-able form without the vector (stores keep the vector as bytes)."""
        data = self.model_dump(exclude={"vector"})
        return data

    @classmethod
    def from_record(cls, record: dict[str, Any], vector: bytes | np.ndarray) -> CacheEntry:
        if isinstance(vector, (bytes, bytearray, memoryview)):
            vec = np.frombuffer(bytes(vector), dtype=np.float32).copy()
        else:
            vec = np.asarray(vector, dtype=np.float32)
        return cls(**record, vector=vec)
