"""Online feedback: "this cached answer was right / wrong".

A report names the entry that served the hit (the proxy returns its id in
``X-Semcache-Entry``). A *wrong* report from the entry's own tenant (or the
admin) takes the entry out of serving at once (it is deleted from the store
and the index: a known-wrong answer must not be served again). An entry in a
shared namespace serves everyone, so no single caller may remove it: wrong
reports are counted per distinct tenant on the entry (atomically, so reports
reaching several replicas all count) and the entry is removed once the
category's ``shared_quarantine_reports`` tenants agree, or at once when the
admin reports it. A *right* report raises the entry's trust
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

from semcache.config.calibration import clopper_pearson_upper
from semcache.entries.entry import CacheEntry

if TYPE_CHECKING:
    from semcache.cache import SemanticCache


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    found: bool
    removed: bool = False
    category: str | None = None
    trust: int = 0
    """Right minus wrong reports for the entry after this one."""
    reports: int = 0
    """Shared entries: distinct tenants that reported it wrong so far."""
    needed: int = 0
    """Shared entries: distinct wrong reports that take it out of serving."""


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


async def report(cache: SemanticCache, entry_id: str, *, correct: bool, tenant: str | None = None,
                 admin: bool = False) -> FeedbackResult:
    """Apply one report to ``cache``; unknown ids (or another tenant's) are ``found=False``.

    ``tenant=None`` or ``admin``: a trusted caller (the library's user, the
    admin), whose wrong report removes any entry at once.
    """
    meta = cache.catalog.get(entry_id)
    entry = await cache.doc_store.get(entry_id)
    if entry is None and meta is None:
        return FeedbackResult(False)
    owner = entry.tenant if entry is not None else meta.tenant
    category = entry.category if entry is not None else meta.category
    from semcache.decide.lookup import SHARED_TENANT

    trusted = admin or tenant is None
    if not trusted and owner not in (tenant, SHARED_TENANT):
        return FeedbackResult(False)
    cache.feedback.record(category, correct)
    if not correct and owner == SHARED_TENANT and not trusted:
        return await _report_shared(cache, entry_id, entry, category, tenant)
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


async def _report_shared(cache: SemanticCache, entry_id: str, entry: CacheEntry | None, category: str,
                         tenant: str) -> FeedbackResult:
    """One tenant's wrong report on a shared entry: counted once per tenant, removal at the threshold."""
    policy = cache.policies.get(category)
    needed = policy.shared_quarantine_reports if policy is not None else 3
    if entry is None:  # known to the index only (the store lost it): nothing to count on
        return FeedbackResult(True, category=category, needed=needed)

    def one_more_reporter(current: CacheEntry) -> CacheEntry | None:
        if tenant in current.feedback.reporters:
            return None  # this tenant already counted: a repeat changes nothing
        votes = current.feedback.model_copy(update={"negative": current.feedback.negative + 1,
                                                    "reporters": [*current.feedback.reporters, tenant]})
        return current.model_copy(update={"feedback": votes})

    stored = await cache.doc_store.update(entry_id, one_more_reporter)
    if stored is None:  # a repeat, or removed meanwhile
        stored = await cache.doc_store.get(entry_id)
        if stored is None:
            return FeedbackResult(True, removed=True, category=category, needed=needed)
    votes = stored.feedback
    reports, trust = len(votes.reporters), votes.positive - votes.negative
    if reports < needed:
        return FeedbackResult(True, category=category, trust=trust, reports=reports, needed=needed)
    removed = await cache._remove([entry_id], reason="invalidations") > 0
    return FeedbackResult(True, removed=removed, category=category, trust=trust, reports=reports, needed=needed)
