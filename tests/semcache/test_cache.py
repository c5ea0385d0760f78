"""SemanticCache through its public API: keys, TTL, quota, invalidation, refusals."""

from __future__ import annotations

import pytest

from semcache import CacheRequest, RequestError, SemanticCache, SQLiteStore
from semcache.request.keys import request_digest


def chat(text, *, earlier=(), tenant="t1", namespace=None, category=None, **params):
    messages = [*earlier, {"role": "user", "content": text}]
    body = {"model": "m", "messages": messages, **params}
    return CacheRequest("chat", body, tenant=tenant, namespace=namespace, category=category)


def answer(text="an answer", finish="stop", **extra):
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **extra}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


async def put(cache, request, text="an answer"):
    res = await cache.lookup(request)
    assert res.status == "miss", res.reason
    stored = await cache.store(request, res, response=answer(text))
    assert stored.stored, stored.reason
    return stored.entry_id


async def test_identical_request_hits_with_stored_response(cache):
    await put(cache, chat("how do I reset my password"), "go to settings")
    res = await cache.lookup(chat("how do I reset my password"))
    assert res.status == "hit" and res.similarity == pytest.approx(1.0)
    assert res.entry.response["choices"][0]["message"]["content"] == "go to settings"
    assert res.category == "default"


async def test_similar_text_hits_and_reason_names_threshold(cache):
    await put(cache, chat("how do I reset my password please"))
    res = await cache.lookup(chat("how do I reset my password"))
    assert res.status == "hit", res.reason
    assert "threshold 0.80" in res.reason


async def test_dissimilar_text_misses_with_reason(cache):
    await put(cache, chat("how do I reset my password"))
    res = await cache.lookup(chat("what is the capital of france"))
    assert res.status == "miss"
    assert res.reason.startswith("similarity") and "< threshold 0.80 (default)" in res.reason


@pytest.mark.parametrize("change", [
    {"temperature": 0.7}, {"top_p": 0.5}, {"max_tokens": 10}, {"stop": ["\n"]}, {"seed": 3},
    {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"tool_choice": "none"},
    {"response_format": {"type": "json_object"}}, {"logit_bias": {"1": 5}}, {"some_future_param": 1},
])
async def test_any_output_relevant_parameter_change_misses(cache, change):
    await put(cache, chat("how do I reset my password"))
    res = await cache.lookup(chat("how do I reset my password", **change))
    assert res.status == "miss"
    assert res.reason == "no candidate in this context"


async def test_transport_parameters_do_not_change_the_key(cache):
    await put(cache, chat("how do I reset my password"))
    res = await cache.lookup(chat("how do I reset my password", stream=True, stream_options={"include_usage": True}))
    assert res.status == "hit"


async def test_earlier_turns_and_system_prompt_are_exact_context(cache):
    earlier = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "I use iPhone"},
               {"role": "assistant", "content": "ok"}]
    await put(cache, chat("how do I reset it", earlier=earlier))
    assert (await cache.lookup(chat("how do I reset it", earlier=earlier))).status == "hit"
    other = [dict(m) for m in earlier]
    other[1]["content"] = "I use Android"
    assert (await cache.lookup(chat("how do I reset it", earlier=other))).status == "miss"
    assert (await cache.lookup(chat("how do I reset it", earlier=earlier[:1]))).status == "miss"
    assert (await cache.lookup(chat("how do I reset it"))).status == "miss"


async def test_model_is_exact_context(cache):
    await put(cache, chat("how do I reset my password"))
    req = chat("how do I reset my password")
    req.body["model"] = "other"
    assert (await cache.lookup(req)).status == "miss"


async def test_tenants_and_namespaces_never_share(cache):
    await put(cache, chat("how do I reset my password", tenant="a"))
    assert (await cache.lookup(chat("how do I reset my password", tenant="b"))).status == "miss"
    assert (await cache.lookup(chat("how do I reset my password", tenant="a", namespace="n"))).status == "miss"
    assert (await cache.lookup(chat("how do I reset my password", tenant="a"))).status == "hit"


async def test_ttl_expired_entry_is_never_served_even_before_purge(cache, clock):
    await put(cache, chat("how do I reset my password"))
    clock.advance(99)
    assert (await cache.lookup(chat("how do I reset my password"))).status == "hit"
    clock.advance(1)
    assert (await cache.lookup(chat("how do I reset my password"))).status == "miss"
    assert await cache.purge_expired() == 1
    assert cache.stats_snapshot()["categories"]["default"]["expirations"] == 1


async def test_refresh_ttl_on_hit(make_cache, clock):
    c = await make_cache("categories: {default: {ttl_seconds: 10, refresh_ttl_on_hit: true}}")
    await put(c, chat("hello there friend"))
    for _ in range(3):
        clock.advance(8)
        assert (await c.lookup(chat("hello there friend"))).status == "hit"
    clock.advance(11)
    assert (await c.lookup(chat("hello there friend"))).status == "miss"


async def test_quota_evicts_inside_its_category_only(cache, clock):
    defaults = ("gardening tips for spring", "best hiking boots for winter")
    default_ids = [await put(cache, chat(text)) for text in defaults]
    for text in ("python lists tutorial", "web servers written in python", "python decorators and closures"):
        clock.advance(1)
        await put(cache, chat(text))
    # LFU: the oldest code entry gets hits, so the least used ones go instead.
    for _ in range(2):
        assert (await cache.lookup(chat("python lists tutorial"))).status == "hit"
    for text in ("packaging with setuptools in python", "iterators and generators explained for python"):
        clock.advance(1)
        await put(cache, chat(text))
    snap = cache.stats_snapshot()
    assert snap["entries"]["code"] == 3
    assert snap["entries"]["default"] == 2
    assert snap["categories"]["code"]["evictions"] == 2
    assert (await cache.lookup(chat("python lists tutorial"))).status == "hit"
    for text in defaults:
        assert (await cache.lookup(chat(text))).status == "hit"
    assert all(i in cache.index for i in default_ids)


async def test_lru_eviction_order(make_cache, clock):
    c = await make_cache("categories: {default: {quota: {max_entries: 2}, eviction: lru, threshold: 0.99}}")
    await put(c, chat("first entry text"))
    clock.advance(1)
    await put(c, chat("second entry text"))
    clock.advance(1)
    assert (await c.lookup(chat("first entry text"))).status == "hit"  # first is now most recent
    clock.advance(1)
    await put(c, chat("third entry text"))
    assert (await c.lookup(chat("second entry text"))).status == "miss"
    assert (await c.lookup(chat("first entry text"))).status == "hit"


async def test_invalidation_by_entry_namespace_category_model(cache):
    a = await put(cache, chat("how do I reset my password", tenant="a"))
    await put(cache, chat("how do I reset my password", tenant="a", namespace="n1"))
    await put(cache, chat("python list comprehension", tenant="a"))
    await put(cache, chat("how do I reset my password", tenant="b"))
    assert await cache.invalidate() == 0
    assert await cache.invalidate(entry_id=a) == 1
    assert (await cache.lookup(chat("how do I reset my password", tenant="a"))).status == "miss"
    assert await cache.invalidate(tenant="a", namespace="n1") == 1
    assert await cache.invalidate(category="code") == 1
    assert await cache.invalidate(model="m") == 1
    assert len(cache.catalog) == 0


async def test_mass_invalidation_yields_to_the_loop_while_it_forgets(make_cache):
    """Removing thousands of entries must not hold the event loop (issue #14's fuzz):
    other coroutines run while the catalog shrinks, not only before or after."""
    import asyncio

    from tests.semcache.conftest import POLICY
    assert "max_entries: 50}" in POLICY
    cache = await make_cache(POLICY.replace("max_entries: 50}", "max_entries: 5000}"))
    n = 600
    for i in range(n):
        request = chat(f"entry number {i} about topic {i * 7919}")
        res = await cache.lookup(request)
        await cache.store(request, res, response=answer())
    assert len(cache.catalog) == n
    seen: list[int] = []
    done = False

    async def ticker():
        while not done:
            seen.append(len(cache.catalog))
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    assert await cache.invalidate(model="m") == n
    done = True
    await task
    assert any(0 < size < n for size in seen), "the loop never ran while entries were being forgotten"
    assert len(cache.catalog) == 0


async def test_policy_version_bump_invalidates_that_category(cache):
    from semcache import load_policies_text
    from tests.semcache.conftest import POLICY
    await put(cache, chat("python list comprehension"))
    await put(cache, chat("how do I reset my password"))
    bumped = load_policies_text(POLICY.replace("    threshold: 0.9\n", "    threshold: 0.9\n    version: '2'\n"))
    assert await cache.reload_policies(bumped) == 1
    assert (await cache.lookup(chat("python list comprehension"))).status == "miss"
    assert (await cache.lookup(chat("how do I reset my password"))).status == "hit"


async def test_uncacheable_category_and_requests_bypass(cache):
    res = await cache.lookup(chat("my secret recipe"))
    assert res.status == "bypass" and res.category == "private"
    assert "not cacheable" in res.reason
    res = await cache.lookup(chat("hello", n=2))
    assert res.status == "bypass" and "n > 1" in res.reason
    stored = await cache.store(chat("hello", n=2), res, response=answer())
    assert not stored.stored


@pytest.mark.parametrize("response,why", [
    ({"error": {"message": "rate limited"}}, "upstream error"),
    (answer(finish="length"), "truncated"),
    (answer(tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            finish="tool_calls"), "tool calls"),
    (answer(text=""), "empty answer"),
    (answer(finish="content_filter"), "content filtered"),
])
async def test_store_refuses_what_must_not_be_cached(cache, response, why):
    req = chat("how do I reset my password")
    res = await cache.lookup(req)
    stored = await cache.store(req, res, response=response)
    assert not stored.stored and why in stored.reason
    assert (await cache.lookup(req)).status == "miss"


async def test_guard_rejects_negation_and_numbers(make_cache, clock):
    c = await make_cache("categories: {default: {threshold: 0.3}}")
    await put(c, chat("how do I turn on two factor authentication"))
    res = await c.lookup(chat("how do I turn off two factor authentication"))
    assert res.status == "miss" and res.stage == "guard" and "negation" in res.reason
    await put(c, chat("what was the revenue in 2021"))
    res = await c.lookup(chat("what was the revenue in 2022"))
    assert res.status == "miss" and "numbers" in res.reason
    snap = c.stats_snapshot()["categories"]["default"]["guard_rejections"]
    assert snap == {"negation": 1, "numbers": 1}


async def test_explicit_and_rule_categories(cache):
    assert (await cache.lookup(chat("python decorators"))).category_reason == "keyword 'python'"
    res = await cache.lookup(chat("anything", category="code"))
    assert res.category == "code" and res.category_reason == "explicit category"
    with pytest.raises(RequestError):
        await cache.lookup(chat("anything", category="nope"))


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "x"}]},
    {"model": "m", "messages": []},
    {"model": "m", "messages": "hi"},
    {"model": "m", "messages": [{"content": "no role"}]},
    {"model": "m", "messages": [{"role": "user", "content": 5}]},
])
async def test_malformed_bodies_are_request_errors(cache, body):
    with pytest.raises(RequestError):
        await cache.lookup(CacheRequest("chat", body))


async def test_no_cache_lookup_skips_search_but_can_store(cache):
    await put(cache, chat("how do I reset my password"), "old")
    req = chat("how do I reset my password")
    res = await cache.lookup(req, search=False)
    assert res.status == "miss" and "no-cache" in res.reason
    assert (await cache.store(req, res, response=answer("new"))).stored
    hit = await cache.lookup(req)
    assert hit.entry.response["choices"][0]["message"]["content"] == "new"
    assert cache.stats_snapshot()["entries"]["default"] == 1  # replaced, not duplicated


async def test_completions_endpoint(cache):
    req = CacheRequest("completions", {"model": "m", "prompt": "Once upon a time", "max_tokens": 5})
    res = await cache.lookup(req)
    resp = {"id": "c", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": " there was", "finish_reason": "stop"}]}
    assert (await cache.store(req, res, response=resp)).stored
    assert (await cache.lookup(req)).status == "hit"
    multi = CacheRequest("completions", {"model": "m", "prompt": ["a", "b"]})
    assert (await cache.lookup(multi)).status == "bypass"


async def test_restart_keeps_every_acknowledged_entry(tmp_path, policies, clock, embedder):
    path = tmp_path / "p.db"
    c = SemanticCache(policies=policies, store=SQLiteStore(path), embedder=embedder, clock=clock, purge_interval_s=0)
    await c.start()
    for i in range(20):
        await put(c, chat(f"question {i} about gardening tomatoes"))
    await c.close()
    c2 = SemanticCache(policies=policies, store=SQLiteStore(path), embedder=embedder, clock=clock, purge_interval_s=0)
    await c2.start()
    try:
        assert len(c2.catalog) == 20
        res = await c2.lookup(chat("question 7 about gardening tomatoes"))
        assert res.status == "hit"
    finally:
        await c2.close()


async def test_embedder_failure_raises_cache_unavailable(cache, embedder):
    from semcache import CacheUnavailableError, EmbedderOverloadedError
    embedder.fail_with = EmbedderOverloadedError("queue full")
    with pytest.raises(CacheUnavailableError):
        await cache.lookup(chat("a fresh question"))


async def test_listeners_follow_adds_and_removals_and_cannot_break_the_cache(cache):
    seen: list[tuple[str, str]] = []

    class Recorder:
        def entry_added(self, entry):
            seen.append(("added", entry.id))

        def entry_removed(self, id):
            seen.append(("removed", id))

    class Broken:
        def entry_added(self, entry):
            raise RuntimeError("listener bug")

        def entry_removed(self, id):
            raise RuntimeError("listener bug")

    cache.listeners.extend([Broken(), Recorder()])
    entry_id = await put(cache, chat("how do I reverse a list in python"))
    assert (await cache.lookup(chat("how do I reverse a list in python"))).status == "hit"
    assert await cache.invalidate(entry_id=entry_id) == 1
    assert seen == [("added", entry_id), ("removed", entry_id)]


async def test_seen_before_follows_entries_across_tenants_until_the_last_goes(cache):
    req_a, req_b = chat("how do I reset my router", tenant="a"), chat("how do I reset my router", tenant="b")
    digest = request_digest(req_a)
    assert digest == request_digest(req_b) and not cache.seen_before(digest)
    first = await put(cache, req_a)
    await put(cache, req_b)
    assert cache.seen_before(digest)
    assert not cache.seen_before(request_digest(chat("how do I reset my modem")))
    await cache.invalidate(entry_id=first)
    assert cache.seen_before(digest)  # tenant b's entry still has that text
    await cache.invalidate(tenant="b")
    assert not cache.seen_before(digest)
    assert request_digest(CacheRequest("chat", {"model": "m", "messages": []}, tenant="a")) is None
