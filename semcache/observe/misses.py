"""Why requests missed: one reason per lookup, and the top missed near-duplicates.

:func:`miss_reason` maps a :class:`~semcache.results.LookupResult` that was not
a hit to one of :data:`MISS_REASONS`, so an operator can read "why did
requests miss" per category. :class:`NearMissBook` keeps, per category, the
few misses that came closest to a cached entry (query, nearest cached query,
similarity, the stage that said no): the list to look at before lowering a
threshold. It holds query text only when ``show_query_text`` is on (a privacy
setting, off by default); otherwise digests only, so no prompt is kept.
"""

from __future__ import annotations

import heapq
from typing import Any

from semcache.request.keys import text_digest
from semcache.results import LookupResult

MISS_REASONS = ("below_threshold", "no_candidate", "guard", "verifier", "audit", "expired",
                "not_cacheable", "bypass")


def miss_reason(result: LookupResult) -> str:
    """The reason a ``miss`` or ``bypass`` lookup did not serve from the cache."""
    if result.status == "bypass":
        return "not_cacheable"  # the request (sampling, n > 1, ...) or its category is never cached
    if result.stage == "request":
        return "bypass"  # Cache-Control: no-cache asked to skip the lookup
    if result.stage in ("guard", "verifier", "audit", "expired"):
        return result.stage
    return "no_candidate" if result.similarity is None else "below_threshold"


class NearMissBook:
    """Per category, the ``size`` closest misses (by similarity), repeats counted once."""

    def __init__(self, size: int = 10, show_query_text: bool = False):
        self.size = size
        self.show_query_text = show_query_text
        self._heaps: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}

    def add(self, result: LookupResult, query: str, nearest: str | None) -> None:
        """Remember a miss of ``query`` whose best candidate was ``nearest`` at ``result.similarity``."""
        sim = result.similarity
        if sim is None:
            return
        q, n = text_digest(query), text_digest(nearest) if nearest is not None else None
        key = f"{q}:{n}"
        heap = self._heaps.setdefault(result.category, [])
        for i, (old, k, item) in enumerate(heap):
            if k == key:
                item["count"] += 1
                if sim > old:  # the same pair, closer now (e.g. another embedder after a restart)
                    item["similarity"], item["stage"], item["reason"] = round(sim, 4), result.stage, result.reason
                    heap[i] = (sim, k, item)
                    heapq.heapify(heap)
                return
        if len(heap) >= self.size and sim <= heap[0][0]:
            return
        item = {"similarity": round(sim, 4), "threshold": result.threshold, "stage": result.stage,
                "reason": result.reason, "query_digest": q, "nearest_digest": n, "count": 1,
                "query": query if self.show_query_text else None,
                "nearest": nearest if self.show_query_text else None}
        if len(heap) >= self.size:
            heapq.heapreplace(heap, (sim, key, item))
        else:
            heapq.heappush(heap, (sim, key, item))

    def snapshot(self, category: str) -> list[dict[str, Any]]:
        """Closest first; copies, so the caller may keep them."""
        return [dict(item) for _, _, item in sorted(self._heaps.get(category, []), key=lambda t: -t[0])]
