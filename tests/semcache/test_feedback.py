"""Online feedback: wrong reports stop serving, right reports raise trust, stats show rates."""

from __future__ import annotations

import pytest

from .test_cache import chat, put


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
