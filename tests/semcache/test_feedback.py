"""Online feedback: wrong reports stop serving, right reports raise trust, stats show rates."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .test_cache import answer, chat, put


async def test_wrong_report_removes_entry_from_serving(cache):
    entry_id = await put(cache, chat("how do I reset my password please"))
    assert (await cache.lookup(chat("how do I reset my password"))).status == "hit"
    result = await cache.report_feedback(entry_id, correct=False, tenant="t1")
    assert result.found and result.removed and result.category == "default" and result.trust == -1
    res = await cache.lookup(chat("how do I reset my password"))
    assert res.status == "miss"
    assert await cache.doc_store.get(entry_id) is None
    fb = cache.stats_snapshot()["feedback"]["default"]
    assert fb["wrong"] == 1 and fb["estimated_false_hit_rate"] == 1.0


async def test_right_reports_raise_trust_and_feed_estimates(cache):
    entry_id = await put(cache, chat("how do I reset my password please"))
    for _ in range(9):
        result = await cache.report_feedback(entry_id, correct=True, tenant="t1")
    assert result.trust == 9 and not result.removed
    assert (await cache.doc_store.get(entry_id)).feedback.positive == 9
    other = await put(cache, chat("what is the capital of france"))
    await cache.report_feedback(other, correct=False)
    fb = cache.stats_snapshot()["feedback"]["default"]
    assert fb["reports"] == 10 and fb["estimated_false_hit_rate"] == pytest.approx(0.1)
    assert 0.1 < fb["false_hit_rate_upper_bound"] < 0.4  # Clopper-Pearson 95%: 0.394


async def test_other_tenant_cannot_report(cache):
    entry_id = await put(cache, chat("how do I reset my password please", tenant="t1"))
    result = await cache.report_feedback(entry_id, correct=False, tenant="t2")
    assert not result.found
    assert (await cache.lookup(chat("how do I reset my password", tenant="t1"))).status == "hit"
    assert "default" not in cache.stats_snapshot()["feedback"]


async def test_unknown_entry(cache):
    assert not (await cache.report_feedback("nope", correct=True)).found


SHARED_POLICY = """
categories:
  faq:
    shared_namespace: pub
    shared_namespace_writers: [writer]
    shared_quarantine_reports: 3
    match: {keywords: [faq]}
  default: {}
"""
REPORTERS = ["t1", "t2", "t3", "t4", "admin"]


async def _shared_cache():
    from semcache import ManualClock, SemanticCache, load_policies_text
    from semcache.stores import MemoryStore

    from .fakes import HashEmbedder

    cache = SemanticCache(policies=load_policies_text(SHARED_POLICY), store=MemoryStore(), embedder=HashEmbedder(),
                          clock=ManualClock(1000.0), purge_interval_s=0)
    await cache.start()
    return cache


async def test_only_listed_writers_store_into_a_shared_namespace():
    cache = await _shared_cache()
    for tenant, stored in (("t1", False), ("writer", True)):
        req = chat("faq: what are the opening hours", tenant=tenant)
        result = await cache.store(req, await cache.lookup(req), response=answer())
        assert result.stored is stored, result.reason
    assert cache.stats_snapshot()["categories"]["faq"]["store_refusals"] == {"shared_namespace_writers": 1}
    assert (await cache.lookup(chat("faq: what are the opening hours", tenant="t9"))).status == "hit"


@settings(max_examples=30, deadline=None)
@given(reports=st.lists(st.tuples(st.sampled_from(REPORTERS), st.booleans()), max_size=10))
def test_a_shared_entry_leaves_serving_exactly_when_enough_tenants_or_the_admin_report_it(reports):
    async def scenario() -> None:
        cache = await _shared_cache()
        req = chat("faq: what are the opening hours", tenant="writer")
        stored = await cache.store(req, await cache.lookup(req), response=answer())
        wrong_by: set[str] = set()
        for tenant, correct in reports:
            result = await cache.report_feedback(stored.entry_id, correct=correct, tenant=tenant,
                                                 admin=tenant == "admin")
            assert result.found
            if not correct:
                wrong_by.add(tenant)
            expect_removed = "admin" in wrong_by or len(wrong_by) >= 3
            present = await cache.doc_store.get(stored.entry_id) is not None
            assert present is not expect_removed, (reports, wrong_by)
            hit = await cache.lookup(chat("faq: what are the opening hours", tenant="t9"))
            assert hit.status == ("miss" if expect_removed else "hit")
            if expect_removed:
                return

    asyncio.run(scenario())
