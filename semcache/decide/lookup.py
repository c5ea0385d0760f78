"""One lookup decision: hit, miss or bypass for a request, and why.

In order: the category (rules, then the embedded prototypes), the policy's
bypasses, the key (tenant or shared namespace, partition), the exact-repeat
map (no embedding, no search), then the vector search and each candidate,
nearest first, through the audit quarantine, the (possibly load-adapted)
threshold, the guards on what differs (:mod:`semcache.decide.diffrule`) and the
verifier. The first candidate that passes all of them and is still in the
store is the hit. :class:`semcache.cache.SemanticCache` owns the parts; this
module only reads them (and forgets entries the store no longer has).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from semcache.decide import diffrule
from semcache.entries.entry import CacheEntry
from semcache.request.keys import CacheRequest, normalize, partition_id, text_digest
from semcache.results import KeyContext, LookupResult
from semcache.verifier import bars

if TYPE_CHECKING:
    from semcache.cache import SemanticCache
    from semcache.entries.catalog import EntryMeta
    from semcache.verifier import VerifierVerdict

SHARED_TENANT = "*shared*"
"""The tenant of entries in a category's ``shared_namespace`` (answers everyone)."""


async def decide(cache: SemanticCache, request: CacheRequest, search: bool) -> LookupResult:
    """The decision for ``request``; ``search=False`` prepares the key only (``no-cache``)."""
    norm = normalize(request.endpoint, request.body)
    classifier, policies = cache.classifier, cache.policies
    decision = classifier.by_rules(request, norm)
    vector = None
    if decision is None:
        vector = await cache.embed_one(norm.text)
        decision = classifier.by_prototype(vector)
    policy = policies[decision.name]
    base = dict(category=decision.name, category_reason=decision.reason)
    if norm.uncacheable:
        return LookupResult("bypass", reason=f"not cacheable: {norm.uncacheable}", stage="request", **base)
    if not policy.cacheable:
        return LookupResult("bypass", reason=f"category {policy.name} is not cacheable", stage="policy", **base)
    tenant, namespace = request.tenant, request.namespace or ""
    if policy.shared_namespace:
        tenant, namespace = SHARED_TENANT, policy.shared_namespace
    partition = partition_id(
        tenant=tenant, namespace=namespace, embedder=cache.embedder.identity, category=policy.name,
        policy_version=policy.version, endpoint=request.endpoint, norm=norm, ignore_params=policy.ignore_params,
    )
    ctx = KeyContext(norm, policy, tenant, namespace, partition, text_digest(norm.text), vector)
    eff = cache.adaptive.effective(policy, norm.model)  # the policy's values unless adapting to load
    base.update(threshold=eff.threshold, adaptive=eff.adaptive, context=ctx)
    if not search:
        return LookupResult("miss", reason="lookup skipped (no-cache)", stage="request", **base)
    now = cache.clock.now()
    fresh_at = now - eff.serve_stale_s  # under overload, entries expired less than serve_stale_s ago serve
    # Exact repeat: no embedding or graph search needed.
    exact_id = cache.catalog.exact(partition, ctx.text_digest)
    if exact_id is not None:
        meta = cache.catalog.get(exact_id)
        if meta is not None and not meta.expired(fresh_at):
            entry = await fetch_for_hit(cache, meta, policy, now, fresh_at)
            if entry is not None:
                return LookupResult("hit", reason="exact repeat", similarity=1.0, entry=entry,
                                    stage="exact", **base)

    if ctx.vector is None:
        ctx.vector = await cache.embed_one(norm.text)
    # A search in up to ~100k entries takes a few hundred microseconds, less than
    # a hop to a worker thread; bigger graphs go to a thread so the loop never stalls.
    if cache.index.partition_size(partition) > cache.inline_search_max:
        found = await asyncio.to_thread(cache.index.search, partition, ctx.vector, cache.candidates)
    else:
        found = cache.index.search(partition, ctx.vector, cache.candidates)
    ctx.candidates = found  # kept for the lookup log (what-if replays)
    best_sim, nearest, reason, stage = None, None, "no candidate in this context", "similarity"
    verdicts: dict[str, VerifierVerdict] = {}  # verifier verdicts judged ahead, in one hop
    ctx.verdicts = verdicts  # the lookup log reads them
    overrule = policy.verifier.active_overrule  # guards the verifier may overrule
    rejected = False
    for position, (cand_id, sim) in enumerate(found):
        meta = cache.catalog.get(cand_id)
        if meta is None or meta.expired(fresh_at):
            if meta is not None and best_sim is None:  # the closest entry had expired
                reason, stage = f"nearest entry expired (similarity {sim:.3f})", "expired"
            continue
        if best_sim is None:
            best_sim, nearest = sim, meta.query
        if ctx.text_digest in meta.blocked:  # an audit found this entry wrong for this text
            reason, stage = f"audit: entry quarantined for this query at similarity {sim:.3f}", "audit"
            continue
        if sim < eff.threshold:
            if reason.startswith("no candidate"):
                reason = f"similarity {sim:.3f} < threshold {eff.threshold:.2f} ({policy.name})"
            break
        verdict = await diffrule.check(policy, norm.text, meta.query, sim, cache.embedder.embed, overrule)
        if not verdict.passed:
            cache.stats[policy.name].guard_rejections[verdict.guard] += 1
            reason, stage = verdict.reason + f" at similarity {sim:.3f}", "guard"
            continue
        verified = verdicts.get(cand_id)
        overruling = [verdict.guard] if verdict.overruled else []
        if verified is None:
            batch = [(cand_id, meta.query, sim)]
            if rejected:  # the nearest was turned down: a miss is likely, so judge the rest in one thread hop
                batch += _still_eligible(cache, found[position + 1:], fresh_at, eff.threshold, ctx.text_digest)
            # A lone candidate's guards are known: its verdict need only decide the bars that apply to it.
            cut_offs = bars(policy.verifier, eff.min_probability, overruling) if len(batch) == 1 else None
            judged = await cache.verifier.check_many(policy, norm.text, [(q, s) for _, q, s in batch],
                                                     eff.min_probability, cut_offs)
            if judged is not None:
                verdicts.update(zip([i for i, _, _ in batch], judged, strict=True))
                verified = verdicts[cand_id]
        if verdict.overruled:
            # Served against a guard only if the verifier, run and sure enough, says so.
            cut = policy.verifier.min_probability if eff.min_probability is None else eff.min_probability
            bar = max(policy.verifier.overrule[verdict.guard], cut)
            # (A verdict always decides its candidate's bars: ``cut_offs`` above, or all of them in a batch.)
            if verified is None or verified.probability < bar or not verified.decides(bar):
                cache.stats[policy.name].guard_rejections[verdict.guard] += 1
                reason, stage = verdict.reason + f": verifier p {_p(verified)} < {bar:.2f}", "guard"
                rejected = True
                continue
        if verified is not None and not verified.passed:
            rejected = True
            cache.stats[policy.name].verifier_rejections += 1
            reason, stage = verified.reason, "verifier"
            continue
        entry = await fetch_for_hit(cache, meta, policy, now, fresh_at)
        if entry is None:
            continue
        cache.stats[policy.name].overruled_hits += verdict.overruled
        hit_reason = f"similarity {sim:.3f} >= threshold {eff.threshold:.2f} ({policy.name})"
        return LookupResult(
            "hit", reason=_hit_reason(verified, verdict) if verified else hit_reason, similarity=sim, entry=entry,
            stage="verifier" if verified else "similarity",
            probability=verified.probability if verified else None, **base,
        )
    return LookupResult("miss", reason=reason, similarity=best_sim, stage=stage, nearest=nearest, **base)


def _hit_reason(verified: VerifierVerdict, verdict) -> str:
    return verified.reason + (f", overruling guard {verdict.guard} ({verdict.detail})" if verdict.overruled else "")


def _p(verified: VerifierVerdict | None) -> str:
    return "-" if verified is None else f"{verified.probability:.3f}"


def _still_eligible(cache: SemanticCache, later: list[tuple[str, float]], fresh_at: float, threshold: float,
                    digest: str) -> list[tuple[str, str, float]]:
    """``(id, cached query, similarity)`` of the later candidates the verifier may still be asked about."""
    out = []
    for cand_id, sim in later:
        if sim < threshold:
            break
        meta = cache.catalog.get(cand_id)
        if meta is not None and not meta.expired(fresh_at) and digest not in meta.blocked:
            out.append((cand_id, meta.query, sim))
    return out


async def fetch_for_hit(cache: SemanticCache, meta: EntryMeta, policy, now: float,
                        fresh_at: float) -> CacheEntry | None:
    """The stored entry for a hit (its hit recorded, its TTL refreshed if the policy says so),
    or ``None`` when the store no longer has it fresh."""
    entry = await cache.doc_store.get(meta.id)
    if entry is None or entry.expired(fresh_at):
        # Gone from the store (expired in Redis, deleted elsewhere): forget it.
        cache.forget(meta.id)
        return None
    expires_at = None
    if policy.refresh_ttl_on_hit and policy.ttl_seconds is not None and not entry.expired(now):
        expires_at = meta.expires_at = entry.expires_at = now + policy.ttl_seconds
    entry.hit_count += 1
    entry.last_hit_at = now
    await cache.doc_store.record_hit(meta.id, now, expires_at)
    return entry
