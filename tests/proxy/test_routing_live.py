"""Routing through the running proxy: real uvicorn, two simulated replicas, the openai client."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from proxy.settings import ProxySettings
from tests.proxy.test_routing_kv import FakeController

pytestmark = pytest.mark.slow

SYSTEM = "You are the help desk of a bicycle shop. Our opening hours, prices and rules follow. " * 25
ADMIN = "routing-admin"
QUESTIONS = ["Do you repair carbon frames?", "How much is a new chain?",
             "Can I pay with a card?", "Are you open on Sundays in winter?"]


def _requests(sim) -> float:
    text = httpx.get(sim.url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "vllm:request_success_total")


def _ask(proxy, question: str, stream: bool = False) -> None:
    c = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0, timeout=60)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    if stream:
        assert "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="m", messages=messages, max_tokens=4, stream=True) if ch.choices)
    else:
        assert c.chat.completions.create(model="m", messages=messages, max_tokens=4).choices[0].message.content


def _settings(tmp_path, sims, **routing) -> ProxySettings:
    values = {"speculative_forward": False, "log_level": "warning", "admin_token": ADMIN, **routing}
    return ProxySettings(upstreams=[f"m={s.url}/v1" for s in sims], sqlite_path=tmp_path / "c.db", **values)


def test_prefix_routing_keeps_a_shared_system_prompt_on_one_replica(tmp_path, live_server):
    with live_server(create_sim_app(SimSettings(model="m"))) as a, \
         live_server(create_sim_app(SimSettings(model="m"))) as b, \
         live_server(create_app(_settings(tmp_path, [a, b], routing="prefix"))) as proxy:
        for i, q in enumerate(QUESTIONS):
            _ask(proxy, q, stream=i % 2 == 1)
        counts = sorted([_requests(a), _requests(b)])
        # /admin/stats says where the misses went: each upstream's `sent` is what its engine served.
        rows = httpx.get(proxy.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN}"}).json()["proxy"]
        sent = {u["base_url"]: u["sent"] for u in rows["upstreams"]}
        assert sent == {f"{a.url}/v1": _requests(a), f"{b.url}/v1": _requests(b)}
    assert counts == [0.0, float(len(QUESTIONS))]


@pytest.mark.parametrize("speculate", [False, "auto"])
def test_kv_routing_asks_the_lmcache_controller(tmp_path, live_server, speculate):
    """Also with speculation on (idle vLLM-like engines): kv-routed requests are not raced by a guess."""
    controller = FakeController()
    with live_server(create_sim_app(SimSettings(model="m"))) as a, \
         live_server(create_sim_app(SimSettings(model="m"))) as b, \
         live_server(controller.app) as ctrl:
        tokens = httpx.post(b.url + "/tokenize", json={"model": "m", "messages": [
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": "warm-up"}]}).json()["tokens"]
        controller.stored["inst-b"] = [tokens]  # as if replica b had prefilled the system prompt
        opts = {"lmcache_controller_url": ctrl.url, "kv_timeout_s": 3.0,  # a loaded CI box is slow, not down
                "lmcache_instances": {"inst-a": f"{a.url}/v1", "inst-b": f"{b.url}/v1"}}
        settings = _settings(tmp_path, [a, b], routing="kv", routing_options=opts, speculative_forward=speculate)
        with live_server(create_app(settings)) as proxy:
            for q in QUESTIONS[:3]:
                _ask(proxy, q)
            stats = httpx.get(proxy.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN}"}).json()
        assert stats["proxy"]["routing"]["default"] == {"strategy": "KvAffinity", "asked": 3, "answered": 3,
                                                        "fell_back": 0}
        assert controller.lookups == 3
        assert (_requests(a), _requests(b)) == (0.0, 3.0)


def test_session_header_keeps_a_conversation_on_one_replica(tmp_path, live_server):
    """Different prompts, one X-Session-Id: one replica; other sessions spread over both."""
    with live_server(create_sim_app(SimSettings(model="m"))) as a, \
         live_server(create_sim_app(SimSettings(model="m"))) as b, \
         live_server(create_app(_settings(tmp_path, [a, b], routing="session"))) as proxy:
        def ask(session: str, text: str) -> None:
            r = httpx.post(proxy.url + "/v1/chat/completions", timeout=30,
                           headers={"authorization": "Bearer k", "x-session-id": session},
                           json={"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": text}]})
            assert r.status_code == 200

        for i in range(6):  # every turn has another opening, so only the header can tie them together
            ask("conversation-1", f"question number {i} about something else entirely {i * 7}")
        counts = sorted([_requests(a), _requests(b)])
        assert counts == [0.0, 6.0]
        for i in range(16):
            ask(f"other-{i}", f"an unrelated question {i}")
        assert min(_requests(a), _requests(b)) > 0  # the header, not a constant, picks the replica
