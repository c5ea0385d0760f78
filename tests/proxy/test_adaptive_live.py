"""Live: a proxy (real uvicorn) in front of the engine simulator whose queue real load drives up.

The threshold relaxes (header, gauge, event log) while the simulated engine's
``vllm:num_requests_waiting`` is over target, a paraphrase below the policy
threshold but above the calibrated floor is served, and everything returns
to the policy once the burst has drained. Kill switch and dry run through
the admin API.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from semcache.adaptive import PressureTargets

from .conftest import ADMIN_TOKEN, BagOfWordsEmbedder, make_settings

POLICY = """\
categories:
  default:
    threshold: 0.90
    under_load:
      enabled: true
      max_false_hit_rate: 0.10
      calibration: {score: similarity, value: 0.85, n_labelled: 1000, served: 400, false_hits: 20,
                    estimated_rate: 0.05, upper_bound: 0.07}
      step: 0.02
      ttl_factor: 2
      interval_s: 0.2
"""
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def ask(text: str) -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 30}


@pytest.fixture
def loaded_proxy(tmp_path, live_server):
    # Two requests decode at once, 10 ms per token: a 30-token answer takes 0.3 s, so a burst queues.
    sim = create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=10.0, max_batch=2))
    policy = tmp_path / "policies.yaml"
    policy.write_text(POLICY)
    with live_server(sim) as engine:
        settings = make_settings(tmp_path, policy, upstreams=[f"{engine.url}/v1"], upstream_metrics_interval_s=0.1,
                                 pressure=PressureTargets(max_waiting=4), speculative_forward=False)
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy:
            yield proxy


async def until(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_threshold_relaxes_under_a_burst_and_recovers_after(loaded_proxy):
    async with httpx.AsyncClient(base_url=loaded_proxy.url, headers={"authorization": "Bearer k"},
                                 timeout=60) as client:
        stored = await client.post("/v1/chat/completions", json=ask("how do I reset my password"))
        assert stored.headers["x-semcache-threshold"] == "0.9000"
        paraphrase = ask("how do I reset my password now please")  # bag-of-words cosine 0.866
        calm = await client.post("/v1/chat/completions", json=paraphrase, headers={"cache-control": "no-store"})
        assert calm.headers["x-semcache-status"] == "miss"

        burst = [asyncio.create_task(client.post("/v1/chat/completions", json=ask(f"burst question {i}")))
                 for i in range(24)]

        async def relaxed():
            snap = (await client.get("/admin/adaptive", headers=ADMIN)).json()
            return snap["categories"]["default"]["effective_threshold"] == 0.85

        await until(relaxed)
        hit = await client.post("/v1/chat/completions", json=paraphrase, headers={"cache-control": "no-store"})
        assert hit.headers["x-semcache-threshold"] == "0.8500; adaptive"
        assert float(hit.headers["x-semcache-similarity"]) < 0.90
        gauges = (await client.get("/metrics")).text
        # The burst is still in flight, so the gauges show adaptation; the controller may have made
        # one more step since the hit (seen under a loaded full run), so not the exact 0.85 / 2x.
        threshold = float(re.search(r'semcache_effective_threshold\{category="default"\} ([0-9.]+)', gauges)[1])
        ttl = float(re.search(r'semcache_effective_ttl_seconds\{category="default"\} ([0-9.e+]+)', gauges)[1])
        assert threshold < 0.90 and ttl > 86400.0, (threshold, ttl)
        statuses = [r.status_code for r in await asyncio.gather(*burst)]
        assert statuses == [200] * 24

        async def recovered():
            snap = (await client.get("/admin/adaptive", headers=ADMIN)).json()
            return snap if snap["categories"]["default"]["effective_threshold"] == 0.90 else None

        snap = await until(recovered)
        actions = [e["action"] for e in snap["events"]]
        assert actions == ["relax"] * 3 + ["restore"] * 3, actions
        assert all(e["reason"].startswith("pressure") for e in snap["events"])
        after = await client.post("/v1/chat/completions", json=paraphrase, headers={"cache-control": "no-store"})
        assert after.headers["x-semcache-status"] == "miss"
        assert after.headers["x-semcache-threshold"] == "0.9000"
        stats = (await client.get("/admin/stats", headers=ADMIN)).json()
        assert stats["proxy"]["adaptive"]["moves"] == 6


async def test_kill_switch_and_dry_run_through_the_admin_api(loaded_proxy):
    async with httpx.AsyncClient(base_url=loaded_proxy.url, headers={"authorization": "Bearer k"},
                                 timeout=60) as client:
        bad = await client.post("/admin/adaptive", json={"category": "nope", "enabled": False}, headers=ADMIN)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "category"
        assert (await client.post("/admin/adaptive", json={"enabld": False}, headers=ADMIN)).status_code in (400, 422)
        assert (await client.post("/admin/adaptive", json={"enabled": False})).status_code == 401
        off = (await client.post("/admin/adaptive", json={"enabled": False, "category": "default"},
                                 headers=ADMIN)).json()
        assert off["disabled"] == ["default"] and not off["categories"]["default"]["adaptive"]
        await client.post("/admin/adaptive", json={"enabled": True, "category": "default", "dry_run": True},
                          headers=ADMIN)
        await client.post("/v1/chat/completions", json=ask("how do I reset my password"))
        burst = [asyncio.create_task(client.post("/v1/chat/completions", json=ask(f"load {i}"))) for i in range(24)]

        async def would_move():
            snap = (await client.get("/admin/adaptive", headers=ADMIN)).json()
            return snap if snap["events"] else None

        snap = await until(would_move)
        assert snap["events"][0]["dry_run"] and snap["categories"]["default"]["effective_threshold"] == 0.90
        probe = await client.post("/v1/chat/completions", json=ask("how do I reset my password now please"),
                                  headers={"cache-control": "no-store"})
        assert probe.headers["x-semcache-threshold"] == "0.9000"  # dry run: the policy is served
        await asyncio.gather(*burst)


@pytest.mark.slow
async def test_iccache_and_the_relaxed_cache_read_one_pressure_and_split_the_work(tmp_path, live_server):
    """Under load, a paraphrase within the calibrated floor is a (relaxed) cache hit and costs no
    engine; a request below the floor goes to IC-Cache's router, which sends it to the small model."""
    from .test_iccache_proxy import LARGE, SMALL, iccache_yaml, queue_on

    policy = tmp_path / "policies.yaml"
    policy.write_text(POLICY.replace("threshold: 0.90", "threshold: 0.90\n    cache_truncated: true"))
    (tmp_path / "iccache.yaml").write_text(iccache_yaml())
    with live_server(create_sim_app(LARGE)) as large, live_server(create_sim_app(SMALL)) as small:
        settings = make_settings(tmp_path, policy, upstreams=[f"big={large.url}/v1", f"tiny={small.url}/v1"],
                                 iccache=tmp_path / "iccache.yaml", upstream_metrics_interval_s=0.1,
                                 pressure=PressureTargets(max_waiting=2), speculative_forward=False)
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, headers={"authorization": "Bearer k"},
                                         timeout=60) as client:
                def big(text):
                    return {"model": "big", "messages": [{"role": "user", "content": text}]}

                first = await client.post("/v1/chat/completions", json=big("how do I reset my password"))
                assert first.headers["x-semcache-route"] == "large"  # idle: cached, and an example
                flood, pending = queue_on(large.url)
                try:
                    async def at_floor():
                        snap = (await client.get("/admin/adaptive", headers=ADMIN)).json()
                        return snap if snap["categories"]["default"]["effective_threshold"] == 0.85 else None

                    snap = await until(at_floor)
                    assert snap["categories"]["default"]["signal"] == "queue"
                    near = await client.post("/v1/chat/completions", json=big("how do I reset my password now please"))
                    assert near.headers["x-semcache-status"] == "hit"
                    assert near.headers["x-semcache-threshold"] == "0.8500; adaptive"
                    far = await client.post("/v1/chat/completions", json=big("reset my password"))  # cosine 0.71
                    assert far.headers["x-semcache-status"] == "ic" and far.headers["x-semcache-route"] == "small"
                    stats = (await client.get("/admin/stats", headers=ADMIN)).json()["proxy"]
                    assert stats["iccache"]["load"]["big"]["waiting"] >= 2  # the same scrape both read
                    routes = stats["iccache"]["categories"]["default"]
                    assert routes["cache"] >= 1 and routes["small"] >= 1
                finally:
                    await asyncio.to_thread(lambda: [f.result() for f in pending])
                    flood.shutdown()
