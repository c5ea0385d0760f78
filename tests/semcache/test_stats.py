"""Stats that say what the cache saved and why requests missed (issue #15)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semcache.observe.misses import NearMissBook
from semcache.results import LookupResult

from .test_cache import answer, chat, put


def cat(cache, name="default"):
    return cache.stats_snapshot()["categories"][name]


async def test_hit_saves_the_entry_own_usage_tokens(cache):
    req = chat("how do I reset my password")
    res = await cache.lookup(req)
    body = answer("go to settings")
    body["usage"] = {"prompt_tokens": 40, "completion_tokens": 120, "total_tokens": 160}
    assert (await cache.store(req, res, response=body)).stored
    for _ in range(3):
        assert (await cache.lookup(chat("how do I reset my password"))).status == "hit"
    c = cat(cache)
    assert (c["saved_prompt_tokens"], c["saved_completion_tokens"]) == (120, 360)
    totals = cache.stats_snapshot()["total"]
    assert (totals["saved_prompt_tokens"], totals["saved_completion_tokens"]) == (120, 360)


async def test_latency_saved_is_hits_times_measured_upstream_time_and_says_estimate(cache):
    await put(cache, chat("how do I reset my password"))
    c = cat(cache)
    assert c["latency_saved_s"] == 0.0 and c["mean_upstream_ms"] >= 0 and c["latency_saved_is_estimate"]
    await cache.lookup(chat("how do I reset my password"))
    await cache.lookup(chat("how do I reset my password"))
    c = cat(cache)
    assert c["latency_saved_s"] == pytest.approx(2 * c["mean_upstream_ms"] / 1000)


async def test_no_store_means_no_latency_estimate(cache):
    await cache.lookup(chat("never answered"))
    assert cat(cache)["latency_saved_s"] is None and cat(cache)["mean_upstream_ms"] is None


async def test_why_missed_by_stage(cache, clock):
    await put(cache, chat("how do I reset my password"))
    await cache.lookup(chat("what is the capital of france"))  # below threshold
    await cache.lookup(chat("how do I reset my password"), search=False)  # no-cache
    await cache.lookup(chat("hi", temperature=0.7, n=2))  # n > 1: not cacheable
    await cache.lookup(chat("tell me the secret"))  # category not cacheable
    await put(cache, chat("how do I reset my password for 3 users"))
    guard = await cache.lookup(chat("how do I reset my password for 4 users"))
    assert guard.status == "miss" and guard.stage == "guard", guard.reason
    reasons = cat(cache)["miss_reasons"]
    private = cat(cache, "private")["miss_reasons"]
    assert reasons["below_threshold"] >= 1 and reasons["bypass"] == 1
    assert reasons["guard"] == 2  # "3 users" missed by the numbers guard too, before it was stored
    assert reasons["not_cacheable"] + private["not_cacheable"] == 2
    clock.advance(101)  # past the TTL of 100 s
    expired = await cache.lookup(chat("how do I reset my password"))
    assert expired.status == "miss" and expired.stage == "expired", expired.reason
    assert cat(cache)["miss_reasons"]["expired"] == 1
    total = sum(cat(cache, n)["miss_reasons"][k] for n in ("default", "private") for k in reasons)
    assert total == sum(cat(cache, n)["misses"] + cat(cache, n)["bypasses"] for n in ("default", "private"))


async def test_empty_index_miss_is_no_candidate(cache):
    await cache.lookup(chat("first question ever"))
    assert cat(cache)["miss_reasons"]["no_candidate"] == 1


async def test_near_miss_histogram_and_top_list_hold_digests_only_by_default(cache):
    await put(cache, chat("how do I reset my password"))
    res = await cache.lookup(chat("how do I reset my password for 4 users"))
    assert res.status == "miss" and res.similarity is not None
    c = cat(cache)
    assert sum(c["near_miss_similarity_hist"]) == 1
    [top] = c["top_near_misses"]
    assert top["query"] is None and top["nearest"] is None and len(top["query_digest"]) == 32
    assert top["similarity"] == pytest.approx(res.similarity, abs=1e-4) and top["stage"] == res.stage
    assert "reset" not in str(cache.stats_snapshot())


async def test_near_miss_list_shows_text_when_allowed(cache):
    cache.stats.near_misses.show_query_text = True
    await put(cache, chat("how do I reset my password"))
    await cache.lookup(chat("how do I reset my password for 4 users"))
    await cache.lookup(chat("how do I reset my password for 4 users"))
    [top] = cat(cache)["top_near_misses"]
    assert top["query"] == "how do I reset my password for 4 users"
    assert top["nearest"] == "how do I reset my password" and top["count"] == 2


def _miss(sim: float, n: int) -> tuple[LookupResult, str]:
    return LookupResult("miss", "default", "default", "r", similarity=sim, threshold=0.9), f"q{n}"


def test_near_miss_book_keeps_only_the_closest_bounded():
    book = NearMissBook(size=3)
    for n, sim in enumerate([0.5, 0.8, 0.7, 0.85, 0.6, 0.79]):
        result, query = _miss(sim, n)
        book.add(result, query, "cached")
    assert [i["similarity"] for i in book.snapshot("default")] == [0.85, 0.8, 0.79]


@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 5)), max_size=60), st.integers(1, 6))
def test_near_miss_book_is_bounded_sorted_and_keeps_the_closest(adds, size):
    book = NearMissBook(size=size)
    for sim, n in adds:
        result, query = _miss(sim, n)
        book.add(result, query, "cached")
    sims = [i["similarity"] for i in book.snapshot("default")]
    assert len(sims) <= size and sims == sorted(sims, reverse=True)
    if adds:
        assert sims[0] == round(max(sim for sim, _ in adds), 4)
