"""What ``lookup`` and ``store`` return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from semcache.entry import CacheEntry
from semcache.keys import NormalizedRequest
from semcache.policy import CategoryPolicy

Status = Literal["hit", "miss", "bypass"]


@dataclass(slots=True)
class KeyContext:
    """Everything ``store`` needs from the lookup that preceded it."""

    norm: NormalizedRequest
    policy: CategoryPolicy
    tenant: str
    namespace: str
    partition: str
    text_digest: str
    vector: np.ndarray | None = None
    candidates: list[tuple[str, float]] | None = None
    """The index's nearest entries (id, similarity) when a semantic search ran."""


@dataclass(slots=True)
class LookupResult:
    """The decision for one request.

    ``reason`` says which stage decided and with what score, e.g.
    ``similarity 0.87 < threshold 0.90 (code)`` or ``guard: numbers differ``.
    ``similarity`` is the best candidate's cosine similarity, if any.
    """

    status: Status
    category: str
    category_reason: str
    reason: str
    similarity: float | None = None
    threshold: float | None = None
    entry: CacheEntry | None = None
    stage: str = "similarity"
    """Which stage decided: request, policy, exact, similarity, guard or verifier."""
    probability: float | None = None
    """The verifier's P(cached answer is right) for a hit it passed, if it ran."""
    context: KeyContext | None = field(default=None, repr=False)

    @property
    def coalesce_key(self) -> str | None:
        """Equal for requests that would share one cache entry."""
        if self.context is None:
            return None
        return f"{self.context.partition}:{self.context.text_digest}"


@dataclass(slots=True, frozen=True)
class StoreResult:
    stored: bool
    reason: str
    entry_id: str | None = None
