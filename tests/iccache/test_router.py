"""Routing: load shifts traffic to the small model, known failures stay large, feedback learns."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from evaluation.engine_sim import SimSettings, create_app
from proxy.upstream.engine_load import EngineLoadScraper, parse_vllm_metrics
from semcache.iccache import EngineLoad, EngineMetrics, ExampleBank, ICCacheRouter, LoadTracker
from tests.iccache.helpers import DIM, config, example, unit

MESSAGES = [{"role": "system", "content": "Support bot."}, {"role": "user", "content": "where is my order?"}]


def _router(**router_cfg) -> ICCacheRouter:
    bank = ExampleBank(DIM)
    bank.add(example("e1", unit(1, 0.1)))
    bank.add(example("e2", unit(1, 0.6)))
    cfg = config(router={"alpha": 0.0, "latency_weight": 0.05, **router_cfg})
    return ICCacheRouter(cfg, bank)


def _decide(router, vector=None):
    return router.decide(MESSAGES, scope="tenant:a/", category="support", vector=unit(1, 0) if vector is None else vector)


def test_idle_engines_keep_the_large_model_and_a_long_queue_shifts_to_small():
    router = _router()
    idle = _decide(router)
    assert idle.route == "large" and idle.messages == MESSAGES
    router.load.set("big", EngineLoad(waiting=40, running=4, e2e_s=2.0))
    busy = _decide(router)
    assert busy.route == "small" and busy.model == "tiny"
    assert busy.costs["large"] > idle.costs["large"]
    assert busy.messages[0] == MESSAGES[0] and busy.messages[-1] == MESSAGES[-1]
    assert len(busy.messages) == len(MESSAGES) + 4
    assert busy.headers() == {"x-semcache-route": "small", "x-semcache-examples": "2", "x-semcache-status": "ic"}
    assert idle.headers() == {"x-semcache-route": "large", "x-semcache-examples": "2"}
    assert router.bank.get("e1").uses == 1  # counted only when actually used


def test_a_busy_small_model_sends_traffic_back_to_large():
    router = _router(prior_quality={"large": 0.7, "small": 0.7})
    assert _decide(router).route == "small"  # same quality, small is cheaper
    router.load.set("tiny", EngineLoad(waiting=60, running=1, e2e_s=3.0))
    assert _decide(router).route == "large"


def test_requests_the_small_model_is_known_to_fail_stay_large_under_any_load():
    router = _router(known_after=0.2)
    bad = _decide(router)
    assert bad.route == "large"
    for _ in range(60):  # observed: small answers to requests like this one score 0
        router.bandit.update("small", bad.features, 0.0)
    router.load.set("big", EngineLoad(waiting=500, running=1, e2e_s=10.0))
    decision = _decide(router)
    assert decision.route == "large" and "known to fail" in decision.reason
    assert decision.costs["large"] > 10 * decision.costs["small"]  # the load alone would say small


def test_quality_and_feedback_update_the_bandit_and_the_examples():
    router = _router()
    router.load.set("big", EngineLoad(waiting=40, running=4, e2e_s=2.0))
    d = _decide(router)
    assert d.route == "small"
    before = router.bandit.estimate("small", d.features).mean
    router.record(d, 1.0)
    assert router.bandit.estimate("small", d.features).mean > before
    assert router.bank.get("e1").scored == 1 and router.bank.get("e1").utility() > 0.5
    router.record_feedback(d, positive=False)
    assert router.bank.get("e1").feedback_negative == 1
    assert router.bank.get("e1").utility() == pytest.approx((1.0 + 0.0 + 1.0) / (2 + 2))
    cache = router.decide(MESSAGES, scope="tenant:a/", category="support", vector=unit(1), cache_hit=True)
    assert cache.route == "cache" and cache.headers() == {}
    router.record(cache, 0.0)  # a cache hit teaches the router nothing
    assert router.bandit.observations == {"small": 2, "large": 0}


def test_shadow_checks_sample_a_stable_fraction_and_only_with_spare_capacity():
    router = ICCacheRouter(config(shadow_fraction=0.25), ExampleBank(DIM))
    router.load.set("big", EngineLoad(waiting=40, running=4, e2e_s=2.0))
    d = _decide(router)
    d.route = "small"
    router.load.set("big", EngineLoad(waiting=0, running=1))
    picks = [router.should_shadow(d, f"req-{i}") for i in range(2000)]
    assert 0.2 < np.mean(picks) < 0.3
    assert picks == [router.should_shadow(d, f"req-{i}") for i in range(2000)]
    router.load.set("big", EngineLoad(waiting=3, running=1))
    assert not any(router.should_shadow(d, f"req-{i}") for i in range(200))


def test_tracker_turns_cumulative_histograms_into_window_means():
    t = LoadTracker(smoothing=1.0)
    first = t.observe("m", EngineMetrics(waiting=2, running=1, ttft_sum=1.0, ttft_count=10, e2e_sum=20, e2e_count=10))
    assert first.ttft_s == pytest.approx(0.1) and first.e2e_s == pytest.approx(2.0)
    second = t.observe("m", EngineMetrics(ttft_sum=3.0, ttft_count=12, e2e_sum=30, e2e_count=12))
    assert second.ttft_s == pytest.approx(1.0) and second.e2e_s == pytest.approx(5.0)
    idle = t.observe("m", EngineMetrics(ttft_sum=3.0, ttft_count=12, e2e_sum=30, e2e_count=12))
    assert idle.e2e_s == pytest.approx(5.0)  # nothing finished: keep the last estimate
    assert t.expected_latency_s("m", 1.0) == pytest.approx(5.0)
    assert t.expected_latency_s("unknown", 1.5) == pytest.approx(1.5)


def test_parser_reads_vllm_names_and_sums_model_labels():
    text = """# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 3.0
vllm:num_requests_waiting{model_name="b"} 2.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 4.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="a"} 0.5
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="a"} 4.0
vllm:time_to_first_token_seconds_count{model_name="a"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="a"} 0.8
"""
    m = parse_vllm_metrics(text)
    assert (m.waiting, m.running, m.kv_usage, m.ttft_count, m.ttft_sum) == (5.0, 4.0, 0.5, 4.0, 0.8)
    assert m.e2e_count == 0.0


async def test_a_real_simulated_engine_with_a_long_queue_shifts_traffic():
    sim = create_app(SimSettings(model="big", max_batch=1, decode_ms_per_token=100.0))
    transport = httpx.ASGITransport(app=sim)
    async with httpx.AsyncClient(transport=transport, base_url="http://big") as client:
        router = _router()
        scraper = EngineLoadScraper({"big": "http://big/metrics"}, router.load, client=client)
        await scraper.scrape_once()
        assert _decide(router).route == "large"
        body = {"model": "big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        flood = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(30)]
        try:
            for _ in range(50):
                await asyncio.sleep(0.02)
                await scraper.scrape_once()
                if router.load.get("big").waiting >= 20:
                    break
            assert router.load.get("big").waiting >= 20
            assert _decide(router).route == "small"
        finally:
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)
        await scraper.aclose()


def test_a_request_longer_than_the_small_context_stays_large_even_under_load():
    router = _router()
    router.load.set("big", EngineLoad(waiting=40, running=4, e2e_s=2.0))
    long_messages = [MESSAGES[0], {"role": "user", "content": "word " * 2000}]  # ~2,500 tokens > 2,048
    decision = router.decide(long_messages, scope="tenant:a/", category="support", vector=unit(1, 0))
    assert decision.route == "large" and "too long" in decision.reason
    assert _decide(router).route == "small"  # the same load with a short request does offload
