"""Integration: the official openai client -> live uvicorn proxy -> live engines, with real Redis.

Engines: the local SmolLM2 engine (llama.cpp) and the engine simulator; the
embedder is the real default one (all-MiniLM-L6-v2, ONNX on CPU).
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from proxy.upstream.local_llm import MODEL_ALIAS
from proxy.settings import ProxySettings

pytestmark = pytest.mark.slow

LIVE_POLICIES = """\
defaults:
  threshold: 0.88
  cache_truncated: true
categories:
  private:
    cacheable: false
    match: {keywords: [password]}
  default: {}
"""
ADMIN = "live-admin-token"


def proxy_settings(tmp: Path, redis_url: str, upstreams: list[str]) -> ProxySettings:
    policies = tmp / "policies.yaml"
    policies.write_text(LIVE_POLICIES)
    return ProxySettings(upstreams=upstreams, store="redis", redis_url=redis_url,
                         redis_prefix=f"t{uuid.uuid4().hex[:8]}", policies=policies, admin_token=ADMIN,
                         log_level="warning")


@pytest.fixture(scope="module")
def slow_sim(live_server):
    app = create_sim_app(SimSettings(model="slow-sim", decode_ms_per_token=40.0, default_max_tokens=40))
    with live_server(app) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, live_server, redis_server, engine_sim, slow_sim, local_llm):
    upstreams = [f"sim-model={engine_sim.url}/v1", f"slow-sim={slow_sim.url}/v1", f"{MODEL_ALIAS}={local_llm}"]
    app = create_app(proxy_settings(tmp_path_factory.mktemp("proxy"), redis_server.url, upstreams))
    with live_server(app) as server:
        yield server


def client(proxy, key: str = "sk-tenant-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0, timeout=60)


def ask(c: openai.OpenAI, content: str, model: str = "sim-model", **kw):
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw)
    return raw.headers, raw.parse()


def sim_requests(sim) -> float:
    text = httpx.get(sim.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


def test_paraphrase_hit_on_the_local_engine(proxy):
    c = client(proxy)
    h1, a1 = ask(c, "What is the capital of France?", MODEL_ALIAS, max_tokens=24, temperature=0)
    assert h1["x-semcache-status"] == "miss" and a1.choices[0].message.content
    h2, a2 = ask(c, "What's the capital city of France?", MODEL_ALIAS, max_tokens=24, temperature=0)
    assert h2["x-semcache-status"] == "hit" and float(h2["x-semcache-similarity"]) >= 0.88
    assert a2.choices[0].message.content == a1.choices[0].message.content
    assert a2.model == a1.model and a2.id != a1.id


def test_exact_context_differences_miss(proxy):
    c = client(proxy)
    base = [{"role": "user", "content": "Name a primary colour."}]
    c.chat.completions.create(model="sim-model", messages=base)
    variants = [
        dict(messages=[{"role": "system", "content": "Answer in French."}, *base]),
        dict(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, *base]),
        dict(messages=base, temperature=1.5),
        dict(messages=base, model="slow-sim", max_tokens=2),
    ]
    for v in variants:
        raw = c.chat.completions.with_raw_response.create(**{"model": "sim-model", **v})
        assert raw.headers["x-semcache-status"] == "miss", v
    again = c.chat.completions.with_raw_response.create(model="sim-model", messages=base)
    assert again.headers["x-semcache-status"] == "hit"


def _events(c: openai.OpenAI, content: str, model: str = "sim-model", **kw):
    stream = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], stream=True, **kw)
    return stream.headers, [chunk.model_dump(exclude={"id", "created"}) for chunk in stream.parse()]


def test_streaming_miss_relays_the_upstream_chunks_then_replays_them(proxy, engine_sim):
    question = "Stream a short answer about Redis."
    direct = openai.OpenAI(base_url=engine_sim.url + "/v1", api_key="x", max_retries=0)
    _, upstream = _events(direct, question, stream_options={"include_usage": True})
    c = client(proxy)
    h_miss, relayed = _events(c, question, stream_options={"include_usage": True})
    assert h_miss["x-semcache-status"] == "miss"
    assert relayed == upstream  # same chunks, same order (ids and timestamps aside)
    h_hit, replayed = _events(c, question, stream_options={"include_usage": True})
    assert h_hit["x-semcache-status"] == "hit" and replayed == upstream


def test_streaming_on_the_local_engine(proxy):
    c = client(proxy)
    h1, relayed = _events(c, "Say hello to the cache.", MODEL_ALIAS, max_tokens=16, temperature=0)
    h2, replayed = _events(c, "Say hello to the cache.", MODEL_ALIAS, max_tokens=16, temperature=0)
    assert (h1["x-semcache-status"], h2["x-semcache-status"]) == ("miss", "hit")
    text = lambda chunks: "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text(replayed) == text(relayed) and text(relayed)


def test_client_leaving_mid_stream_stores_nothing(proxy):
    body = {"model": "slow-sim", "messages": [{"role": "user", "content": "a long story, please"}], "stream": True}
    headers = {"authorization": "Bearer sk-tenant-a"}
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        assert r.headers["x-semcache-status"] == "miss"
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"' in line:
                break  # leave after the first content token
    whole = httpx.post(proxy.url + "/v1/chat/completions", json={**body, "stream": False}, headers=headers,
                       timeout=30)
    assert whole.headers["x-semcache-status"] == "miss"


def test_tenants_are_isolated(proxy):
    h_a, _ = ask(client(proxy, "sk-tenant-a"), "Which tenant am I?")
    h_b, _ = ask(client(proxy, "sk-tenant-b"), "Which tenant am I?")
    h_a2, _ = ask(client(proxy, "sk-tenant-a"), "Which tenant am I?")
    assert (h_a["x-semcache-status"], h_b["x-semcache-status"], h_a2["x-semcache-status"]) == ("miss", "miss", "hit")


def test_upstream_errors_pass_through_and_are_not_cached(proxy, engine_sim):
    c = client(proxy)
    before = sim_requests(engine_sim)
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as err:
            ask(c, "too many tokens", max_tokens=10**9)
        assert err.value.status_code == 400 and err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        ask(c, "who serves me?", model="no-such-model")
    assert sim_requests(engine_sim) == before  # refused before generating: nothing finished


def test_identical_concurrent_misses_are_coalesced(proxy, slow_sim):
    before = sim_requests(slow_sim)
    c = client(proxy)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ask(c, "coalesce this question", "slow-sim", max_tokens=10), range(8)))
    assert len({a.choices[0].message.content for _, a in answers}) == 1
    assert sim_requests(slow_sim) - before == 1
    assert sum(h.get("x-semcache-coalesced") == "true" for h, _ in answers) == 7


def test_admin_auth_and_policy_reload(proxy):
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.get(proxy.url + "/admin/stats").status_code == 401
    assert httpx.get(proxy.url + "/admin/stats", headers={"authorization": "Bearer sk-tenant-a"}).status_code == 401
    assert httpx.get(proxy.url + "/admin/stats", headers=admin).status_code == 200
    current = httpx.get(proxy.url + "/admin/policies", headers=admin).text
    bad = httpx.put(proxy.url + "/admin/policies", content=current.replace("0.88", "1.5"), headers=admin)
    assert bad.status_code == 400 and "threshold" in bad.json()["error"]["message"]
    good = httpx.put(proxy.url + "/admin/policies", content=current + "\n# reloaded\n", headers=admin)
    assert good.status_code == 200 and good.json()["shared_with_replicas"] is True  # Redis: other replicas follow
    assert httpx.get(proxy.url + "/admin/policies", headers=admin).text.endswith("# reloaded\n")


def test_bad_inputs_are_openai_4xx(proxy):
    c = client(proxy)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="sim-model", messages=[])
    r = httpx.post(proxy.url + "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_redis_failure_degrades_to_bypass(tmp_path, live_server, fresh_redis, engine_sim):
    redis = fresh_redis
    app = create_app(proxy_settings(tmp_path, redis.url, [f"sim-model={engine_sim.url}/v1"]))
    with live_server(app) as proxy:
        c = client(proxy)
        assert ask(c, "cached before the outage")[0]["x-semcache-status"] == "miss"
        assert ask(c, "cached before the outage")[0]["x-semcache-status"] == "hit"
        redis.stop()
        headers, answer = ask(c, "cached before the outage")
        assert headers["x-semcache-status"] == "bypass" and answer.choices[0].message.content
        headers, answer = ask(c, "asked during the outage")
        assert answer.choices[0].message.content  # served, whatever the cache could do
        metrics = httpx.get(proxy.url + "/metrics").text
        assert 'semcache_degraded_total{component="StoreError"}' in metrics


def test_models_are_merged_from_the_upstreams(proxy):
    ids = {m.id for m in client(proxy).models.list().data}
    assert {"sim-model", "slow-sim", MODEL_ALIAS} <= ids
    assert json.loads(httpx.get(proxy.url + "/healthz").text)["status"] == "ok"


def _speculated(proxy) -> float:
    text = httpx.get(proxy.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("semcache_speculative_forwards_total{"))


def test_speculation_auto_races_vllm_engines_only(proxy, engine_sim, local_llm):
    """Default 'auto': the simulator (vLLM metrics, aborts lost calls) is raced, llama.cpp never."""
    stats = httpx.get(proxy.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN}"}).json()
    engines = {u["base_url"]: u["engine"] for u in stats["proxy"]["upstreams"]}
    assert engines[f"{engine_sim.url}/v1"]["vllm_metrics"] is True
    assert engines[f"{engine_sim.url}/v1"]["waiting"] == 0
    assert engines[local_llm] == {"vllm_metrics": False, "waiting": None, "running": None, "kv_usage": None, "ttft_s": None}
    c = client(proxy)
    before = _speculated(proxy)
    h, _ = ask(c, f"Which river flows through Vienna {uuid.uuid4().hex[:6]}?", MODEL_ALIAS, max_tokens=4)
    assert h["x-semcache-status"] == "miss"
    assert _speculated(proxy) == before  # llama.cpp would finish a dropped call: not raced
    h, _ = ask(c, f"Which river flows through Budapest {uuid.uuid4().hex[:6]}?")
    assert h["x-semcache-status"] == "miss"
    assert _speculated(proxy) == before + 1
