"""Always-on per-category counters and similarity histograms (plain integers)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from semcache.observe.misses import MISS_REASONS, NearMissBook, miss_reason

if TYPE_CHECKING:
    from semcache.results import KeyContext, LookupResult

HIST_BINS = 50  # similarity histogram over [0, 1] in steps of 0.02; below 0 counts in bin 0
NEAR_MISS_MARGIN = 0.15


def similarity_bin(similarity: float) -> int:
    """The histogram bin of a cosine similarity (shared by every similarity histogram)."""
    return min(HIST_BINS - 1, max(0, int(similarity * HIST_BINS)))


@dataclass(slots=True)
class CategoryStats:
    lookups: int = 0
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stores: int = 0
    store_refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    guard_rejections: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    verifier_rejections: int = 0
    overruled_hits: int = 0  # served by the verifier against a guard it may overrule (verifier.overrule)
    lookup_seconds: float = 0.0
    hit_similarity: list[int] = field(default_factory=lambda: [0] * HIST_BINS)
    near_miss_similarity: list[int] = field(default_factory=lambda: [0] * HIST_BINS)
    miss_reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISS_REASONS, 0))
    # What the hits saved: the served entries' own token counts (from their upstream usage).
    saved_prompt_tokens: int = 0
    saved_completion_tokens: int = 0
    # Misses' upstream time, lookup to store: the basis of the latency-saved estimate.
    upstream_seconds: float = 0.0
    upstream_samples: int = 0

    @property
    def mean_upstream_s(self) -> float | None:
        return self.upstream_seconds / self.upstream_samples if self.upstream_samples else None

    def snapshot(self) -> dict:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "misses": self.misses,
            "bypasses": self.bypasses,
            "hit_rate": self.hits / self.lookups if self.lookups else 0.0,
            "stores": self.stores,
            "store_refusals": dict(self.store_refusals),
            "evictions": self.evictions,
            "expirations": self.expirations,
            "invalidations": self.invalidations,
            "guard_rejections": dict(self.guard_rejections),
            "verifier_rejections": self.verifier_rejections,
            "overruled_hits": self.overruled_hits,
            "mean_lookup_ms": 1000 * self.lookup_seconds / self.lookups if self.lookups else 0.0,
            "hit_similarity_hist": list(self.hit_similarity),
            "near_miss_similarity_hist": list(self.near_miss_similarity),
            "miss_reasons": dict(self.miss_reasons),
            "saved_prompt_tokens": self.saved_prompt_tokens,
            "saved_completion_tokens": self.saved_completion_tokens,
            "mean_upstream_ms": None if self.mean_upstream_s is None else 1000 * self.mean_upstream_s,
            # Entries do not record their own upstream latency, so this is an estimate:
            # hits x the mean measured upstream time of this category's stored misses.
            "latency_saved_s": None if self.mean_upstream_s is None else self.hits * self.mean_upstream_s,
            "latency_saved_is_estimate": True,
        }


class CacheStats:
    """Counters per category; cheap enough to update on every request."""

    def __init__(self, near_misses: int = 10, show_query_text: bool = False) -> None:
        self._by_category: dict[str, CategoryStats] = defaultdict(CategoryStats)
        self.near_misses = NearMissBook(near_misses, show_query_text)
        self.started_at = time.time()  # the counters' time window: since this process started

    def record(self, result: LookupResult, seconds: float, nearest: str | None = None) -> None:
        """Count one lookup: hit/miss/bypass, why it missed, what a hit saved, close misses."""
        self.record_lookup(result.category, result.status, seconds, result.similarity, result.threshold)
        s = self._by_category[result.category]
        if result.status == "hit" and result.entry is not None:
            s.saved_prompt_tokens += result.entry.prompt_tokens
            s.saved_completion_tokens += result.entry.completion_tokens
            return
        if result.status == "hit":
            return
        s.miss_reasons[miss_reason(result)] += 1
        if (result.status == "miss" and result.context is not None and result.similarity is not None
                and result.threshold is not None and result.similarity >= result.threshold - NEAR_MISS_MARGIN):
            self.near_misses.add(result, result.context.norm.text, nearest)

    def record_store(self, category: str, ctx: KeyContext) -> None:
        """An answer was stored; the time since its lookup is the upstream time a later hit saves."""
        s = self._by_category[category]
        s.stores += 1
        if ctx.looked_up_at is not None:
            s.upstream_seconds += time.perf_counter() - ctx.looked_up_at
            s.upstream_samples += 1

    def __getitem__(self, category: str) -> CategoryStats:
        return self._by_category[category]

    def record_lookup(self, category: str, status: str, seconds: float,
                      similarity: float | None, threshold: float | None) -> None:
        s = self._by_category[category]
        s.lookups += 1
        s.lookup_seconds += seconds
        if status == "hit":
            s.hits += 1
            if similarity is not None:
                s.hit_similarity[similarity_bin(similarity)] += 1
        elif status == "miss":
            s.misses += 1
            if similarity is not None and threshold is not None and similarity >= threshold - NEAR_MISS_MARGIN:
                s.near_miss_similarity[similarity_bin(similarity)] += 1
        else:
            s.bypasses += 1

    def snapshot(self) -> dict:
        categories = {name: {**s.snapshot(), "top_near_misses": self.near_misses.snapshot(name)}
                      for name, s in sorted(self._by_category.items())}
        total = {k: sum(c[k] for c in categories.values())
                 for k in ("lookups", "hits", "misses", "bypasses", "stores", "evictions", "expirations", "invalidations",
                           "saved_prompt_tokens", "saved_completion_tokens")}
        total["latency_saved_s"] = sum(c["latency_saved_s"] or 0.0 for c in categories.values())
        total["show_query_text"] = self.near_misses.show_query_text
        total["since"] = self.started_at
        total["hit_rate"] = total["hits"] / total["lookups"] if total["lookups"] else 0.0
        return {"total": total, "categories": categories}
