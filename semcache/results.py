"""What ``lookup`` and ``store`` return."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from semcache.entries.entry import CacheEntry
from semcache.request.keys import NormalizedRequest
from semcache.config.policy import CategoryPolicy

if TYPE_CHECKING:
    from semcache.verifier import VerifierVerdict

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
    looked_up_at: float | None = field(default_factory=time.perf_counter)
    """When the lookup decided (``perf_counter``): lookup-to-store is the miss's upstream time."""
    candidates: list[tuple[str, float]] | None = None
    """The index's nearest entries (id, similarity) when a semantic search ran."""
    verdicts: dict[str, VerifierVerdict] | None = None
    """The verifier's verdicts on the candidates (by entry id) it judged in this lookup."""


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
    """Which stage decided: request, policy, exact, similarity, guard, verifier, audit or expired."""
    probability: float | None = None
    nearest: str | None = field(default=None, repr=False)
    """For a miss: the query text of the closest live entry (admin stats only, never logged)."""
    """The verifier's P(cached answer is right) for a hit it passed, if it ran."""
    adaptive: bool = False
    """``threshold`` is the load-adaptive one, not the policy's (:mod:`semcache.adaptive`)."""
    stale_s: float | None = None
    """For a hit served stale under overload: how long ago the entry expired."""
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
