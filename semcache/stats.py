"""Always-on per-category counters and similarity histograms (plain integers)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

HIST_BINS = 50  # similarity histogram over [0, 1] in steps of 0.02; below 0 counts in bin 0
NEAR_MISS_MARGIN = 0.15


def _bin(similarity: float) -> int:
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
    lookup_seconds: float = 0.0
    hit_similarity: list[int] = field(default_factory=lambda: [0] * HIST_BINS)
    near_miss_similarity: list[int] = field(default_factory=lambda: [0] * HIST_BINS)

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
            "mean_lookup_ms": 1000 * self.lookup_seconds / self.lookups if self.lookups else 0.0,
            "hit_similarity_hist": list(self.hit_similarity),
            "near_miss_similarity_hist": list(self.near_miss_similarity),
        }


class CacheStats:
    """Counters per category; cheap enough to update on every request."""

    def __init__(self) -> None:
        self._by_category: dict[str, CategoryStats] = defaultdict(CategoryStats)

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
                s.hit_similarity[_bin(similarity)] += 1
        elif status == "miss":
            s.misses += 1
            if similarity is not None and threshold is not None and similarity >= threshold - NEAR_MISS_MARGIN:
                s.near_miss_similarity[_bin(similarity)] += 1
        else:
            s.bypasses += 1

    def snapshot(self) -> dict:
        categories = {name: s.snapshot() for name, s in sorted(self._by_category.items())}
        total = {k: sum(c[k] for c in categories.values())
                 for k in ("lookups", "hits", "misses", "bypasses", "stores", "evictions", "expirations", "invalidations")}
        total["hit_rate"] = total["hits"] / total["lookups"] if total["lookups"] else 0.0
        return {"total": total, "categories": categories}
