"""The engine simulator's prefix cache: hits on shared leading blocks, LRU eviction, vLLM's metrics."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from evaluation.engine_sim import SimSettings, create_app
from evaluation.engine_sim.prefix_cache import PrefixCache, block_hashes

SYSTEM = " ".join(f"rule{i}" for i in range(400))  # 400 tokens: 25 blocks of 16


def _client(**overrides) -> httpx.AsyncClient:
    settings = SimSettings(**{"model": "m", "decode_ms_per_token": 0.0, **overrides})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://sim")


def _chat(system: str, question: str) -> dict:
    return {"model": "m", "max_tokens": 1,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


def _counters(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_block_hashes_chain_over_the_whole_prefix():
    a = block_hashes(list("abcdefgh"), 4)
    b = block_hashes(list("abcdXfgh"), 4)
    c = block_hashes(list("Xbcdefgh"), 4)
    assert len(a) == 2 and len(block_hashes(list("abcdefg"), 4)) == 1  # the partial block is not hashed
    assert a[0] == b[0] and a[1] != b[1]
    assert c[1] != a[1]  # the same second block after a different first one is a different prefix


def test_cached_tokens_is_the_longest_leading_run_and_keeps_the_last_token():
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    tokens = list("abcdefghijkl")
    hashes = block_hashes(tokens, 4)
    assert cache.cached_tokens(hashes, len(tokens)) == 0
    cache.insert(hashes[:2])
    assert cache.cached_tokens(hashes, len(tokens)) == 8
    cache.insert(hashes)
    assert cache.cached_tokens(hashes, len(tokens)) == 11  # all cached: the last token is still computed
    other = block_hashes(list("Xbcdefghijkl"), 4)
    assert cache.cached_tokens(other, 12) == 0


def test_lru_evicts_the_least_recently_used_blocks():
    cache = PrefixCache(capacity_blocks=4, block_size=2)
    a, b, c = (block_hashes(list(s), 2) for s in ("aaaa", "bbbb", "cccc"))
    cache.insert(a)
    cache.insert(b)
    assert cache.cached_tokens(a, 5) == 4  # touches a: b is now the oldest
    cache.insert(c)
    assert len(cache) == 4 and cache.evictions == 2
    assert cache.cached_tokens(a, 5) == 4 and cache.cached_tokens(c, 5) == 4
    assert cache.cached_tokens(b, 5) == 0


async def test_a_shared_system_prompt_is_prefilled_once_and_metrics_count_it():
    async with _client(prefill_ms_per_token=1.0) as c:
        t0 = time.perf_counter()
        cold = (await c.post("/v1/chat/completions", json=_chat(SYSTEM, "first question?"))).json()
        t1 = time.perf_counter()
        await c.post("/v1/chat/completions", json=_chat(SYSTEM, "second question?"))
        t2 = time.perf_counter()
        metrics = _counters((await c.get("/metrics")).text)
    prompt = cold["usage"]["prompt_tokens"]
    assert t1 - t0 >= prompt * 0.001 * 0.9  # cold: every token prefilled
    assert t2 - t1 < (t1 - t0) / 3  # warm: only the tail after the shared blocks
    hits = metrics['vllm:prefix_cache_hits_total']
    assert metrics['vllm:prefix_cache_queries_total'] >= 2 * prompt - 2
    assert 384 <= hits < prompt  # 24+ full blocks of the system prompt, from the second request only
    assert metrics["vllm:gpu_prefix_cache_hit_rate"] == hits / metrics['vllm:prefix_cache_queries_total']


async def test_without_prefix_caching_every_prompt_is_prefilled_in_full():
    async with _client(prefill_ms_per_token=0.5, prefix_caching=False) as c:
        await c.post("/v1/chat/completions", json=_chat(SYSTEM, "first?"))
        t0 = time.perf_counter()
        r = (await c.post("/v1/chat/completions", json=_chat(SYSTEM, "second?"))).json()
        elapsed = time.perf_counter() - t0
        metrics = _counters((await c.get("/metrics")).text)
    assert elapsed >= r["usage"]["prompt_tokens"] * 0.0005 * 0.9
    assert metrics.get("vllm:prefix_cache_hits_total", 0.0) == 0.0
