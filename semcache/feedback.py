"""Online feedback: "this cached answer was right / wrong".

A report names the entry that served the hit (the proxy returns its id in
``X-Semcache-Entry``). A *wrong* report takes the entry out of serving at
once (it is deleted from the store and the index: a known-wrong answer must
not be served again); a *right* report raises the entry's trust
(``entry.feedback.positive``). Every report also feeds per-category counts,
from which :meth:`FeedbackBook.snapshot` estimates the false-hit rate among
reported hits with a Clopper-Pearson upper bound. Reports are a biased
sample (people report wrong answers more readily), so the estimate is an
upper-leaning signal for dashboards, not a calibration set.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semcache.calibration import clopper_pearson_upper
from semcache.entry import CacheEntry

if TYPE_CHECKING:
    from semcache.cache import SemanticCache


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    found: bool
    removed: bool = False
    category: str | None = None
    trust: int = 0
    """Right minus wrong reports for the entry after this one."""


@dataclass(slots=True)
class _Counts:
    right: int = 0
    wrong: int = 0


class FeedbackBook:
    """Per-category report counts (plain integers, like :class:`CacheStats`)."""

    def __init__(self) -> None:
        self._by_category: dict[str, _Counts] = defaultdict(_Counts)

    def record(self, category: str, correct: bool) -> None:
        counts = self._by_category[category]
        if correct:
            counts.right += 1
        else:
            counts.wrong += 1

    def snapshot(self, confidence: float = 0.95) -> dict[str, dict]:
        out = {}
        for name, c in sorted(self._by_category.items()):
            n = c.right + c.wrong
            out[name] = {
                "reports": n, "right": c.right, "wrong": c.wrong,
                "estimated_false_hit_rate": c.wrong / n if n else None,
                "false_hit_rate_upper_bound": clopper_pearson_upper(c.wrong, n, confidence) if n else None,
                "confidence": confidence,
            }
        return out


async def report(cache: SemanticCache, entry_id: str, *, correct: bool, tenant: str | None = None) -> FeedbackResult:
    """Apply one report to ``cache``; unknown ids (or another tenant's) are ``found=False``."""
    meta = cache.catalog.get(entry_id)
    entry = await cache.doc_store.get(entry_id)
    if entry is None and meta is None:
        return FeedbackResult(False)
    owner = entry.tenant if entry is not None else meta.tenant
    category = entry.category if entry is not None else meta.category
    from semcache.cache import SHARED_TENANT

    if tenant is not None and owner not in (tenant, SHARED_TENANT):
        return FeedbackResult(False)
    cache.feedback.record(category, correct)
    if not correct:
        removed = await cache._remove([entry_id], reason="invalidations") > 0
        trust = (entry.feedback.positive - entry.feedback.negative - 1) if entry is not None else -1
        return FeedbackResult(True, removed=removed or entry is not None, category=category, trust=trust)
    if entry is None:  # known to the index only (store lost it): nothing to raise
        return FeedbackResult(True, category=category)

    def one_more_positive(current: CacheEntry) -> CacheEntry:
        votes = current.feedback.model_copy(update={"positive": current.feedback.positive + 1})
        return current.model_copy(update={"feedback": votes})

    # Atomic: reports reaching several proxy replicas at once all count.
    stored = await cache.doc_store.update(entry_id, one_more_positive)
    if stored is None:  # removed meanwhile
        return FeedbackResult(True, category=category)
    return FeedbackResult(True, category=category, trust=stored.feedback.positive - stored.feedback.negative)
