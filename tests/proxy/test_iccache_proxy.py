"""IC-Cache through the live proxy: load-aware routing to the small model with examples.

Real uvicorn servers on loopback: the proxy (real MiniLM embedder, SQLite
store) in front of two engine simulators, a slow one-at-a-time "large" model
and a fast "small" one. The large engine's load is what its own ``/metrics``
says (the proxy scrapes it): the test loads it with real requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from proxy.settings import ProxySettings
from semcache import SQLiteStore

pytestmark = pytest.mark.slow

ADMIN = "ic-admin"
POLICIES = """\
defaults:
  threshold: 0.97
  cache_truncated: true
categories:
  default: {}
"""
# Large: 50 ms per output token, one request at a time, so a few requests make a queue.
LARGE = SimSettings(model="big", decode_ms_per_token=50.0, default_max_tokens=8, max_batch=1)
SMALL = SimSettings(model="tiny", decode_ms_per_token=1.0, default_max_tokens=8)
QUESTIONS = [
    "How do I cancel my order?",
    "How can I track the delivery of my package?",
    "What payment methods do you accept?",
]
PARAPHRASE = "I want to cancel the order I placed, how do I do that?"


def iccache_yaml(selection: str = "", **router: float) -> str:
    router_yaml = "".join(f"  {k}: {v}\n" for k, v in router.items())
    return f"""\
models:
  - {{name: big, role: large, nominal_latency_s: 0.4}}
  - {{name: tiny, role: small, nominal_latency_s: 0.05}}
selection: {{max_examples: 2, min_similarity: 0.2{selection}}}
router:
  latency_weight: 0.5
{router_yaml}shadow_fraction: 0
scrape_interval_s: 0.1
"""


def start_proxy(tmp: Path, live_server, large_url: str, small_url: str, yaml_text: str, **overrides):
    (tmp / "policies.yaml").write_text(POLICIES)
    (tmp / "iccache.yaml").write_text(yaml_text)
    settings = ProxySettings(upstreams=[f"big={large_url}/v1", f"tiny={small_url}/v1"],
                             sqlite_path=tmp / "cache.db", policies=tmp / "policies.yaml",
                             iccache=tmp / "iccache.yaml", admin_token=ADMIN, log_level="warning", **overrides)
    return live_server(create_app(settings))


def chat(client: httpx.Client, question: str, *, key: str = "k1", **extra) -> httpx.Response:
    body = {"model": "big", "messages": [{"role": "system", "content": "You are a support agent."},
                                         {"role": "user", "content": question}], **extra}
    return client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def ic_stats(client: httpx.Client) -> dict:
    r = client.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return r.json()["proxy"]["iccache"]


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


ALWAYS_SMALL = dict(prior_quality="{large: 0.1, small: 0.99}")


def seed_examples(tmp: Path, live_server, large_url: str) -> None:
    """The large model answers QUESTIONS into the cache (they become examples): the small one is down."""
    with start_proxy(tmp, live_server, large_url, "http://127.0.0.1:9", iccache_yaml(**ALWAYS_SMALL)) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=60) as client:
        for q in QUESTIONS:
            assert chat(client, q).headers["x-semcache-route"] == "large"


def queue_on(engine_url: str, n: int = 6):
    """Send ``n`` slow requests straight to an engine (another client's load); wait on the futures."""
    flood = ThreadPoolExecutor(n)
    body = {"model": "big", "messages": [{"role": "user", "content": "long job"}], "max_tokens": 40}
    return flood, [flood.submit(httpx.post, f"{engine_url}/v1/chat/completions", json=body, timeout=60)
                   for _ in range(n)]


@pytest.fixture
def engines(live_server):
    with live_server(create_sim_app(LARGE)) as large, live_server(create_sim_app(SMALL)) as small:
        yield large, small


def test_load_on_the_large_engine_shifts_requests_to_the_small_one(tmp_path, live_server, engines):
    large, small = engines
    with start_proxy(tmp_path, live_server, large.url, small.url, iccache_yaml()) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=60) as client:
        for q in QUESTIONS:  # answered by the large model: cached, and so examples
            r = chat(client, q)
            assert r.status_code == 200 and r.headers["x-semcache-route"] == "large"
        wait_for(lambda: ic_stats(client)["examples"] == len(QUESTIONS))

        # Idle large engine: a new question still goes to the large model.
        idle = chat(client, PARAPHRASE)
        assert idle.status_code == 200
        assert idle.headers["x-semcache-status"] == "miss" and idle.headers["x-semcache-route"] == "large"

        # Queue requests on the large engine directly; the proxy sees it in the scraped metrics.
        flood, pending = queue_on(large.url)
        try:
            wait_for(lambda: ic_stats(client)["load"]["big"]["waiting"] >= 3)
            r = chat(client, "Please tell me how to cancel an order I made")
            assert r.status_code == 200
            assert r.headers["x-semcache-status"] == "ic"
            assert r.headers["x-semcache-route"] == "small"
            examples = int(r.headers["x-semcache-examples"])
            assert examples >= 1
            answer = r.json()
            assert answer["model"] == "tiny" and answer["choices"][0]["message"]["content"]
            # The small engine saw the examples: its prompt is longer than the bare request's.
            bare = httpx.post(f"{small.url}/v1/chat/completions", timeout=30, json={
                "model": "tiny", "messages": [{"role": "system", "content": "You are a support agent."},
                                              {"role": "user", "content": "Please tell me how to cancel an order I made"}]})
            assert answer["usage"]["prompt_tokens"] > bare.json()["usage"]["prompt_tokens"]

            # Streamed, too: SSE chunks from the small model, same headers.
            with client.stream("POST", "/v1/chat/completions", headers={"authorization": "Bearer k1"}, json={
                    "model": "big", "stream": True,
                    "messages": [{"role": "system", "content": "You are a support agent."},
                                 {"role": "user", "content": "how would I go about cancelling my order"}]}) as s:
                assert s.status_code == 200 and s.headers["x-semcache-status"] == "ic"
                lines = [line for line in s.iter_lines() if line.startswith("data: ")]
            assert lines[-1] == "data: [DONE]"
            assert json.loads(lines[0][6:])["model"] == "tiny"

            # Small answers are not cached: the same question again is not a hit.
            again = chat(client, "Please tell me how to cancel an order I made")
            assert again.headers["x-semcache-status"] != "hit"

            # Feedback on the small answer, by response id; another tenant cannot give it.
            fb = {"correct": True, "response_id": answer["id"]}
            other = client.post("/v1/semcache/feedback", json=fb, headers={"authorization": "Bearer k2"})
            assert other.status_code == 404
            ok = client.post("/v1/semcache/feedback", json=fb, headers={"authorization": "Bearer k1"})
            assert ok.status_code == 200 and ok.json()["route"] == "small"
            assert ok.json()["examples"] == examples
            stats = ic_stats(client)["categories"]["default"]
            assert stats["small"] >= 2 and stats["offload_rate"] > 0 and stats["mean_quality"] == 1.0
        finally:
            for f in pending:
                f.result()
            flood.shutdown()
        metrics = client.get("/metrics").text
        assert 'semcache_ic_routes_total{category="default",route="small"}' in metrics
    # The proxy has stopped: the utility its examples earned (the feedback above) was merged
    # into their cache entries, where a restarted or another replica's bank finds it.
    stored = asyncio.run(_stored_utility(tmp_path / "cache.db"))
    assert sum(uses for uses, _ in stored.values()) >= examples
    assert all(utility == 1.0 for uses, utility in stored.values() if uses)


async def _stored_utility(path: Path) -> dict[str, tuple[int, float]]:
    store = SQLiteStore(path)
    try:
        return {e.id: (e.utility_uses, e.utility) async for e in store.scan()}
    finally:
        await store.close()


def test_a_failing_small_model_falls_back_to_the_large_one(tmp_path, live_server, engines):
    large, _ = engines
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    # Priors that always pick the small model, so the request goes there first.
    yaml_text = iccache_yaml(prior_quality="{large: 0.1, small: 0.99}")
    with start_proxy(tmp_path, live_server, large.url, dead, yaml_text) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=60) as client:
        for question in (QUESTIONS[0], PARAPHRASE):  # both routed small first, both answered large
            r = chat(client, question)
            assert r.status_code == 200
            assert r.headers["x-semcache-route"] == "large" and r.json()["model"] == "big"
        metrics = client.get("/metrics").text
        assert 'semcache_ic_routes_total{category="default",route="small_failed"} 2.0' in metrics
        counted = ic_stats(client)["categories"]["default"]
        assert counted["small"] == 0 and counted["large"] == 2 and counted["cost_saved"] == 0


def test_a_small_answer_that_ignores_its_examples_goes_to_the_large_model(tmp_path, live_server, engines):
    """``min_answer_agreement``: the simulator's small answers resemble no example answer."""
    large, small = engines
    always_small = ALWAYS_SMALL
    seed_examples(tmp_path, live_server, large.url)
    strict = iccache_yaml(", min_answer_agreement: 0.99", **always_small)
    with start_proxy(tmp_path, live_server, large.url, small.url, strict) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=60) as client:
        wait_for(lambda: ic_stats(client)["examples"] == len(QUESTIONS))
        r = chat(client, PARAPHRASE)
        assert r.status_code == 200 and r.json()["model"] == "big" and r.headers["x-semcache-route"] == "large"
        metrics = client.get("/metrics").text
        assert 'semcache_ic_routes_total{category="default",route="small_rejected"} 1.0' in metrics
        assert ic_stats(client)["categories"]["default"]["mean_quality"] == 0.0  # the router learnt it
    lenient = iccache_yaml(", min_answer_agreement: -1.0", **always_small)
    with start_proxy(tmp_path, live_server, large.url, small.url, lenient) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=60) as client:
        wait_for(lambda: ic_stats(client)["examples"] >= len(QUESTIONS))
        r = chat(client, "How would I cancel an order?")
        assert r.headers["x-semcache-status"] == "ic" and r.json()["model"] == "tiny"


def test_a_queue_on_any_replica_of_the_large_model_counts(tmp_path, live_server, engines):
    """The large model on two replicas: a queue on the second one (not the first) shifts traffic."""
    large, small = engines
    with live_server(create_sim_app(LARGE)) as replica:
        (tmp_path / "policies.yaml").write_text(POLICIES)
        (tmp_path / "iccache.yaml").write_text(iccache_yaml())
        settings = ProxySettings(upstreams=[f"big={large.url}/v1", f"big={replica.url}/v1", f"tiny={small.url}/v1"],
                                 sqlite_path=tmp_path / "cache.db", policies=tmp_path / "policies.yaml",
                                 iccache=tmp_path / "iccache.yaml", admin_token=ADMIN, log_level="warning",
                                 upstream_metrics_interval_s=0.1)
        with live_server(create_app(settings)) as proxy, httpx.Client(base_url=proxy.url, timeout=60) as client:
            for q in QUESTIONS:
                assert chat(client, q).headers["x-semcache-route"] == "large"
            wait_for(lambda: ic_stats(client)["examples"] == len(QUESTIONS))
            assert ic_stats(client)["load"]["big"]["waiting"] == 0
            flood, pending = queue_on(replica.url)
            try:
                wait_for(lambda: ic_stats(client)["load"]["big"]["waiting"] >= 3)
                r = chat(client, "Please tell me how to cancel an order I made")
                assert r.status_code == 200 and r.headers["x-semcache-route"] == "small"
            finally:
                for f in pending:
                    f.result()
                flood.shutdown()


VARIED = [
    "How can I cancel the order I placed yesterday?", "Where is my package right now?",
    "Do you take credit cards?", "I need to call off my purchase", "Has my parcel shipped yet?",
    "Can I pay with PayPal?", "Stop my order please", "When will the delivery arrive?",
    "Which cards can I use to pay?", "I changed my mind, cancel what I bought",
    "Track shipment status for me", "Is bank transfer accepted?",
]


def test_a_calibrated_answer_check_stops_small_answers_the_large_model_disagrees_with(
        tmp_path, live_server, engines):
    """``answer_check_max_bad``: shadow checks label small answers (the simulators' texts never agree);
    after ``answer_check_min_samples`` of them the category's threshold rises until none is served."""
    large, small = engines
    always_small = ALWAYS_SMALL
    seed_examples(tmp_path, live_server, large.url)
    # A router slow to learn (strong prior), so the small model keeps being asked and labelled.
    stubborn = dict(always_small, ridge=1000.0, quality_floor=0.0)
    calibrated = iccache_yaml(", min_answer_agreement: -1.0, answer_check_max_bad: 0.2, answer_check_min_samples: 5",
                              **stubborn).replace("shadow_fraction: 0", "shadow_fraction: 1.0")
    with start_proxy(tmp_path, live_server, large.url, small.url, calibrated) as proxy, \
            httpx.Client(base_url=proxy.url, timeout=60) as client:
        wait_for(lambda: ic_stats(client)["examples"] >= len(QUESTIONS))
        routes = []
        for q in VARIED:
            routes.append(chat(client, q).headers.get("x-semcache-route"))
            check = ic_stats(client)["answer_check"].get("default", {})
            if check.get("samples", 0) >= 5 and check["serves_small"] is False:
                break
            time.sleep(0.5)  # let this request's shadow check label it
        assert routes[0] == "small"  # served while uncalibrated (floor -1)
        check = ic_stats(client)["answer_check"]["default"]
        assert check["samples"] >= 5 and check["serves_small"] is False, check
        r = chat(client, "Could you cancel my most recent order?")
        assert r.status_code == 200 and r.headers["x-semcache-route"] == "large" and r.json()["model"] == "big"
        metrics = client.get("/metrics").text
        assert 'semcache_ic_routes_total{category="default",route="small_rejected"}' in metrics
