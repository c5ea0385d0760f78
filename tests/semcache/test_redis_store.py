"""RedisStore with a real redis-server: persistence, expiry, and two processes sharing it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import redis as sync_redis

from semcache import CacheRequest, ManualClock, RedisStore, SemanticCache, StoreError

from .conftest import POLICY
from .fakes import HashEmbedder

REPO = Path(__file__).resolve().parents[2]


def chat(text, tenant="t"):
    return CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": text}]}, tenant=tenant)


ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"}, "finish_reason": "stop"}]}


async def make_cache(url, prefix, policies, clock=None):
    cache = SemanticCache(policies=policies, store=RedisStore(url, prefix=prefix), embedder=HashEmbedder(),
                          clock=clock or ManualClock(time.time()), purge_interval_s=0)
    await cache.start()
    return cache


async def store(cache, text, tenant="t"):
    req = chat(text, tenant)
    res = await cache.lookup(req)
    result = await cache.store(req, res, response=ANSWER)
    assert result.stored, result.reason
    return result.entry_id


async def test_restart_rebuilds_index_from_redis(redis_url, policies):
    prefix = uuid.uuid4().hex
    a = await make_cache(redis_url, prefix, policies)
    ids = [await store(a, f"question about topic {w}") for w in ("alpha", "bravo", "charlie")]
    await a.close()
    b = await make_cache(redis_url, prefix, policies)
    try:
        assert {m.id for m in b.catalog} == set(ids)
        assert (await b.lookup(chat("question about topic bravo"))).status == "hit"
    finally:
        await b.close()


async def test_ttl_is_enforced_by_redis_expiry_and_at_lookup(redis_url, policies):
    prefix = uuid.uuid4().hex
    clock = ManualClock(time.time())
    cache = await make_cache(redis_url, prefix, policies, clock)
    try:
        entry_id = await store(cache, "how long do entries live")
        ttl_ms = sync_redis.Redis.from_url(redis_url).pttl(f"{prefix}:e:{entry_id}")
        assert 99_000 < ttl_ms <= 100_000  # policy TTL 100 s, set as Redis expiry
        clock.advance(100)  # Redis still holds it, the lookup must not serve it
        assert (await cache.lookup(chat("how long do entries live"))).status == "miss"
    finally:
        await cache.close()


async def test_eviction_uses_shared_recency(redis_url, policies):
    prefix = uuid.uuid4().hex
    cache = await make_cache(redis_url, prefix, policies)
    try:
        for text in ("python lists tutorial", "web servers written in python", "python decorators and closures",
                     "packaging with setuptools in python"):
            cache.clock.advance(1)
            await store(cache, text)
        assert cache.catalog.count("code") == 3
        r = sync_redis.Redis.from_url(redis_url)
        assert r.zcard(f"{prefix}:lfu:code") == 3
    finally:
        await cache.close()


async def test_unreachable_redis_raises_store_error(policies):
    store = RedisStore("redis://127.0.0.1:1/0", prefix="x", timeout_s=0.5)
    with pytest.raises(StoreError):
        await store.ping()
    cache = SemanticCache(policies=policies, store=store, embedder=HashEmbedder(), purge_interval_s=0)
    with pytest.raises(StoreError):
        await cache.start()
    await store.close()


SECOND_PROCESS = textwrap.dedent("""
    import asyncio, json, sys, time
    sys.path.insert(0, {repo!r})
    from semcache import CacheRequest, RedisStore, SemanticCache, load_policies_text
    from tests.semcache.conftest import POLICY
    from tests.semcache.fakes import HashEmbedder

    async def main():
        cache = SemanticCache(policies=load_policies_text(POLICY), store=RedisStore({url!r}, prefix={prefix!r}),
                              embedder=HashEmbedder(), purge_interval_s=0)
        await cache.start()
        req = CacheRequest("chat", {{"model": "m", "messages": [{{"role": "user", "content": sys.argv[1]}}]}},
                           tenant="t")
        res = await cache.lookup(req)
        out = await cache.store(req, res, response={answer!r})
        print(json.dumps({{"id": out.entry_id, "at": time.time()}}), flush=True)
        await cache.close()

    asyncio.run(main())
""")


async def test_two_processes_share_one_redis(redis_url, policies):
    """An entry stored by another process becomes a hit here without restart."""
    prefix = uuid.uuid4().hex
    here = await make_cache(redis_url, prefix, policies)
    try:
        script = SECOND_PROCESS.format(repo=str(REPO), url=redis_url, prefix=prefix, answer=ANSWER)
        delays = []
        for i, text in enumerate(("shared question number one", "another shared question here")):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, text, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line, (await proc.stderr.read()).decode()
            info = json.loads(line)
            deadline = time.time() + 5
            while info["id"] not in here.catalog and time.time() < deadline:
                await asyncio.sleep(0.0005)
            delays.append(time.time() - info["at"])
            await proc.communicate()
            assert proc.returncode == 0
            assert info["id"] in here.catalog, "entry from the other process never arrived"
            hit = await here.lookup(chat(text))
            assert hit.status == "hit" and hit.entry.id == info["id"]
        print(f"sync delay after the other process's put returned: {[f'{d * 1000:.1f} ms' for d in delays]}")
        # Deletions propagate too.
        other = RedisStore(redis_url, prefix=prefix)
        await other.delete([info["id"]])
        await other.close()
        deadline = time.time() + 5
        while info["id"] in here.catalog and time.time() < deadline:
            await asyncio.sleep(0.001)
        assert info["id"] not in here.catalog
    finally:
        await here.close()


async def test_a_policy_reload_reaches_every_replica_and_a_restarting_one(redis_url, policies):
    """Replicas sharing Redis must not drift apart: thresholds and keys would differ per replica."""
    from semcache import load_policies_text

    prefix = uuid.uuid4().hex
    a = await make_cache(redis_url, prefix, policies)
    b = await make_cache(redis_url, prefix, policies)
    try:
        await store(a, "python list sorting")  # category "code" at its current version
        deadline = time.time() + 5
        while len(b.catalog) < 1 and time.time() < deadline:
            await asyncio.sleep(0.005)
        new_text = POLICY.replace("threshold: 0.9", "threshold: 0.95\n    version: v2")
        assert await a.reload_policies(load_policies_text(new_text, source="admin")) == 1  # code v1 entry gone
        assert await a.replicas.share_policies() is True
        deadline = time.time() + 5
        while b.policies.source_text != new_text and time.time() < deadline:
            await asyncio.sleep(0.005)
        assert b.policies.source_text == new_text and b.policies.get("code").threshold == 0.95
        assert len(b.catalog) == 0  # b dropped the stale "code" entry too
        c = await make_cache(redis_url, prefix, policies)  # a replica starting from its old file
        try:
            assert c.policies.source_text == new_text
        finally:
            await c.close()
        # Invalid shared YAML (say, from a newer version) is ignored, not adopted.
        raw = sync_redis.Redis.from_url(redis_url)
        raw.set(f"{prefix}:policies", b"categories: [not, a, mapping]")
        raw.close()
        assert await b.replicas.adopt_shared_policies() is False and b.policies.source_text == new_text
    finally:
        await a.close()
        await b.close()


async def test_sharing_policies_without_a_shared_store_is_a_no_op(policies, tmp_path):
    from semcache import SQLiteStore

    cache = SemanticCache(policies=policies, store=SQLiteStore(tmp_path / "c.db"), embedder=HashEmbedder(),
                          purge_interval_s=0)
    await cache.start()
    try:
        assert await cache.replicas.share_policies() is None
        assert await cache.replicas.adopt_shared_policies() is False
    finally:
        await cache.close()


async def test_redis_keeps_entries_for_serve_stale_past_their_ttl(redis_url):
    """Load-adaptive serve-stale needs the entry after its TTL: Redis expiry = TTL + serve_stale_s."""
    from semcache.config.policy import load_policies_text

    policies = load_policies_text(
        "defaults: {ttl_seconds: 100}\ncategories:\n  default:\n    under_load:\n"
        "      enabled: true\n      serve_stale_s: 50\n")
    prefix = uuid.uuid4().hex
    clock = ManualClock(time.time())
    cache = await make_cache(redis_url, prefix, policies, clock)
    try:
        entry_id = await store(cache, "how long do stale entries live")
        ttl_ms = sync_redis.Redis.from_url(redis_url).pttl(f"{prefix}:e:{entry_id}")
        assert 149_000 < ttl_ms <= 150_000  # 100 s TTL + 50 s serve-stale grace
        clock.advance(100)  # past its TTL and not overloaded: never served
        assert (await cache.lookup(chat("how long do stale entries live"))).status == "miss"
        await cache.reload_policies(load_policies_text("defaults: {ttl_seconds: 100}\ncategories: {default: {}}\n"))
        assert cache.doc_store.expiry_grace_s == 0.0  # no serve-stale in force: keys expire at their TTL
    finally:
        await cache.close()
