"""Issue #14 items 12-13: a frozen or absent Redis is bypassed at once, and joined when it answers.

Real redis-server, frozen with SIGSTOP and thawed with SIGCONT; real uvicorn.
Before the fix every hit and store waited for the 2 s socket timeout while
Redis was frozen, and a proxy started with Redis down accepted no connection
for ~30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from proxy.app import create_app
from proxy.settings import ProxySettings
from semcache import CacheEntry, RedisStore
from semcache.errors import StoreError
from semcache.stores.breaker import BreakerStore, StoreUnavailableError
from tests.conftest import RedisServer, free_port
from tests.proxy.conftest import BagOfWordsEmbedder

POLICIES = "defaults: {threshold: 0.9, cache_truncated: true}\ncategories:\n  default: {}\n"


def _entry(id: str) -> CacheEntry:
    return CacheEntry(id=id, tenant="t", partition="p", category="default", policy_version="1", model="m",
                      endpoint="chat", query="q", vector=np.ones(4, dtype=np.float32) / 2, response={"x": 1},
                      embedder="e", created_at=0.0)


def _wait(condition: Callable[[], bool], deadline_s: float) -> float:
    """Poll ``condition`` until true (raises after ``deadline_s``); returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"not within {deadline_s}s")
        time.sleep(0.02)
    return time.monotonic() - started


async def test_a_frozen_redis_opens_the_circuit_then_a_background_probe_closes_it(fresh_redis):
    store = BreakerStore(RedisStore(fresh_redis.url), failures=3, call_timeout_s=0.3, probe_interval_s=0.05)
    await store.put(_entry("a"))
    os.kill(fresh_redis.process.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            with pytest.raises(StoreError):
                await store.get("a")
        assert store.state in ("open", "half_open")
        started = time.perf_counter()
        for _ in range(100):
            with pytest.raises(StoreUnavailableError):
                await store.get("a")
        assert time.perf_counter() - started < 0.1  # bypassed at once, not 100 x the timeout
    finally:
        os.kill(fresh_redis.process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while store.state != "closed":
        assert time.monotonic() < deadline, store.status()
        await asyncio.sleep(0.02)
    assert (await store.get("a")).response == {"x": 1}  # no caller was the probe; the store is back
    await store.close()


@pytest.mark.slow
def test_requests_bypass_a_frozen_redis_at_once_and_use_it_again_after(tmp_path: Path, fresh_redis, engine_sim,
                                                                        live_server):
    (tmp_path / "p.yaml").write_text(POLICIES)
    settings = ProxySettings(upstreams=[f"{engine_sim.url}/v1"], store="redis", redis_url=fresh_redis.url,
                             policies=tmp_path / "p.yaml", log_level="error", speculative_forward=False)
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "what is a circuit breaker"}]}
    with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=30) as c:
        assert c.post("/v1/chat/completions", json=body).headers["x-semcache-status"] == "miss"
        assert c.post("/v1/chat/completions", json=body).headers["x-semcache-status"] == "hit"
        os.kill(fresh_redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            statuses = [c.post("/v1/chat/completions", json=body) for _ in range(20)]
            took = time.monotonic() - started
            assert all(r.status_code == 200 for r in statuses)
            assert statuses[-1].headers["x-semcache-status"] == "bypass"
            # 3 failures of <= 1 s open the circuit; the other 17 go straight upstream.
            assert took < 6.0, took
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["mode"] == "bypass"
            assert ready.json()["store_circuit"]["state"] in ("open", "half_open")
        finally:
            os.kill(fresh_redis.process.pid, signal.SIGCONT)
        _wait(lambda: c.get("/readyz").status_code == 200, 15)
        assert c.get("/readyz").json()["mode"] == "cached"
        assert c.post("/v1/chat/completions", json=body).headers["x-semcache-status"] == "hit"


@pytest.mark.slow
def test_started_with_redis_down_it_serves_at_once_and_joins_redis_when_it_comes_up(tmp_path: Path, engine_sim,
                                                                                    live_server):
    (tmp_path / "p.yaml").write_text(POLICIES)
    redis = RedisServer(tmp_path)
    redis.port = free_port()  # nobody listens there yet
    settings = ProxySettings(upstreams=[f"{engine_sim.url}/v1"], store="redis", redis_url=redis.url,
                             policies=tmp_path / "p.yaml", log_level="error", speculative_forward=False)
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "what is a circuit breaker"}]}
    started = time.monotonic()
    with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=30) as c:
        first = c.post("/v1/chat/completions", json=body)
        to_first_answer = time.monotonic() - started
        assert first.status_code == 200 and first.headers["x-semcache-status"] == "bypass"
        assert to_first_answer < 5.0, to_first_answer
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["mode"] == "bypass"
        redis.start()
        try:
            _wait(lambda: c.get("/readyz").status_code == 200, 15)
            assert c.post("/v1/chat/completions", json=body).headers["x-semcache-status"] == "miss"
            assert c.post("/v1/chat/completions", json=body).headers["x-semcache-status"] == "hit"
        finally:
            redis.stop()
