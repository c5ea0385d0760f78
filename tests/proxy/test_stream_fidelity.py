"""Streaming and drop-in fidelity (issue #13 items 3-8, #14 item 6), through real HTTP.

A live proxy (uvicorn) over two live engine simulators: ``sim-model`` (fast)
and ``slow-sim`` (an answer takes about a second). The simulator's fault modes
(``sim_fault`` in the request body, forwarded as an unknown field) make the
upstream misbehave the way real engines do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import openai
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.api.sse import SSEParser
from proxy.app import create_app
from tests.proxy.conftest import BagOfWordsEmbedder, make_settings, metric_sample

pytestmark = pytest.mark.slow

POLICIES = """\
categories:
  default: {threshold: 0.8}
"""
KEY = {"authorization": "Bearer key-a"}


class Setup:
    def __init__(self, proxy, fast, slow):
        self.proxy, self.fast, self.slow = proxy, fast, slow
        self.http = httpx.Client(base_url=proxy.url, headers=KEY, timeout=30)
        self.openai = openai.OpenAI(base_url=proxy.url + "/v1", api_key="key-a", max_retries=0)

    def post(self, body: dict, path: str = "/v1/chat/completions", **kw) -> httpx.Response:
        return self.http.post(path, json=body, **kw)

    def finished(self, sim, reason: str | None = None) -> float:
        """Requests the simulator finished (all reasons, or one: stop, length, abort)."""
        labels = {"finished_reason": reason} if reason else {}
        return metric_sample(httpx.get(sim.url + "/metrics").text, "vllm:request_success_total", **labels)

    def metric(self, name: str, **labels: str) -> float:
        return metric_sample(self.http.get("/metrics").text, name, **labels)

    def wait_for(self, check, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, live_server):
    tmp = tmp_path_factory.mktemp("fidelity")
    (tmp / "policies.yaml").write_text(POLICIES)
    fast = live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=1.0, default_max_tokens=64)))
    slow = live_server(create_sim_app(SimSettings(model="slow-sim", decode_ms_per_token=25.0,
                                                  default_max_tokens=64)))
    with fast, slow:
        settings = make_settings(tmp, tmp / "policies.yaml", upstreams=[f"sim-model={fast.url}/v1",
                                                                         f"slow-sim={slow.url}/v1"])
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy:
            s = Setup(proxy, fast, slow)
            s.wait_for(lambda: s.http.get("/readyz").status_code == 200, 30)
            yield s


def chat(content: str, model: str = "sim-model", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def events(body: bytes) -> list[str]:
    parser = SSEParser()
    return parser.feed(body) + parser.close()


def text_of(evs: list[str]) -> str:
    out = ""
    for e in evs:
        if e != "[DONE]":
            for c in json.loads(e).get("choices") or []:
                out += (c.get("delta") or {}).get("content") or c.get("text") or ""
    return out


# ---------------------------------------------------------------- item 3 and 4
def test_truncated_stream_is_not_stored(setup):
    body = chat("tell me about interrupted streams", stream=True, sim_fault="cut_stream")
    cut = setup.post(body)
    assert cut.headers["x-semcache-status"] == "miss" and text_of(events(cut.content))
    again = setup.post({**body, "stream": False})
    assert again.headers["x-semcache-status"] == "miss"  # the prefix was not stored
    assert again.json()["choices"][0]["finish_reason"] == "stop"
    assert setup.post(body).headers["x-semcache-status"] == "hit"  # the complete answer was
    assert text_of(events(setup.post(body).content)) == again.json()["choices"][0]["message"]["content"]


def test_nothing_is_sent_after_done(setup):
    r = setup.post(chat("a stream the engine cuts off after done", stream=True, sim_fault="cut_stream"))
    evs = events(r.content)
    assert evs[-1] == "[DONE]" and evs.count("[DONE]") == 1
    assert not any("error" in json.loads(e) for e in evs[:-1])


def test_a_stream_that_breaks_off_ends_with_an_error_event_and_no_done(setup):
    body = chat("a stream whose connection drops", stream=True, sim_fault="drop_stream")
    evs = events(setup.post(body).content)
    assert "[DONE]" not in evs and json.loads(evs[-1])["error"]["type"] == "upstream_error"
    assert text_of(evs[:-1])  # what came before is relayed
    assert setup.post({**body, "stream": False}).headers["x-semcache-status"] == "miss"  # nothing stored


# --------------------------------------------------------------------- item 6
def test_json_answer_to_a_stream_request_is_relayed_as_sse(setup):
    body = chat("an engine that does not stream", stream=True, sim_fault="json_to_stream")
    r = setup.post(body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.content)
    assert evs[-1] == "[DONE]" and text_of(evs)
    whole = httpx.post(setup.fast.url + "/v1/chat/completions", json={**body, "stream": False}).json()
    assert text_of(evs) == whole["choices"][0]["message"]["content"]
    chunks = [json.loads(e) for e in evs[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and not any("usage" in c for c in chunks)
    hit = setup.post({**body, "stream": False})
    assert hit.headers["x-semcache-status"] == "hit" and hit.json()["usage"] == whole["usage"]


# --------------------------------------------------------------------- item 5
def test_every_hit_has_usage_after_a_streamed_miss_without_include_usage(setup):
    c = setup.openai
    messages = [{"role": "user", "content": "what does usage count in a stream"}]
    direct = httpx.post(setup.fast.url + "/v1/chat/completions",
                        json={"model": "sim-model", "messages": messages}).json()
    raw = c.chat.completions.with_raw_response.create(model="sim-model", messages=messages, stream=True)
    assert raw.headers["x-semcache-status"] == "miss"
    relayed = list(raw.parse())
    assert all(chunk.usage is None for chunk in relayed)  # not asked: not shown
    assert all(chunk.choices for chunk in relayed)  # and no usage-only chunk either
    hit = c.chat.completions.with_raw_response.create(model="sim-model", messages=messages)
    assert hit.headers["x-semcache-status"] == "hit"
    assert hit.parse().usage.model_dump(exclude_none=True) == direct["usage"]
    streamed = c.chat.completions.with_raw_response.create(model="sim-model", messages=messages, stream=True,
                                                           stream_options={"include_usage": True})
    assert streamed.headers["x-semcache-status"] == "hit"
    last = list(streamed.parse())[-1]
    assert last.choices == [] and last.usage.model_dump(exclude_none=True) == direct["usage"]


# --------------------------------------------------------------------- item 7
def test_upstream_headers_are_passed_through(setup):
    body = chat("which headers does a hosted api send", sim_fault="openai_headers")
    miss = setup.post(body)
    assert miss.headers["x-semcache-status"] == "miss"
    for name in ("x-request-id", "openai-processing-ms", "x-ratelimit-limit-requests",
                 "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"):
        assert miss.headers.get(name), name
    # Worded apart from the first question: once its store lands, a paraphrase would be a hit.
    stream = setup.post(chat("list the rate limit fields of streamed replies", stream=True,
                             sim_fault="openai_headers"))
    assert stream.headers["x-request-id"].startswith("req_")
    assert stream.headers["x-ratelimit-limit-requests"] == "500"
    assert (stream.headers["cache-control"], stream.headers["x-accel-buffering"]) == ("no-store", "no")
    hit = setup.post(chat("list the rate limit fields of streamed replies", stream=True,
                          sim_fault="openai_headers"))
    assert hit.headers["x-semcache-status"] == "hit"
    assert (hit.headers["cache-control"], hit.headers["x-accel-buffering"]) == ("no-store", "no")
    limited = setup.post(chat("too many requests", sim_fault="rate_limited"))
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "2" and limited.headers["x-ratelimit-remaining-requests"] == "0"


# --------------------------------------------------------------------- item 8
def test_identical_streamed_misses_share_one_upstream_stream(setup):
    body = chat("one story for everybody at once", model="slow-sim", stream=True)
    before = setup.finished(setup.slow, "stop")  # (a speculative call a joiner drops ends as "abort")

    async def ask() -> tuple[httpx.Headers, list[str]]:
        async with httpx.AsyncClient(base_url=setup.proxy.url, headers=KEY, timeout=30) as client:
            r = await client.post("/v1/chat/completions", json=body)
            return r.headers, events(r.content)

    async def all_of_them():
        return await asyncio.gather(*(ask() for _ in range(32)))

    answers = asyncio.run(all_of_them())
    assert setup.finished(setup.slow, "stop") - before == 1
    first = answers[0][1]
    assert first[-1] == "[DONE]" and text_of(first)
    for _, evs in answers:  # every chunk, in order, from the start
        assert [json.loads(e)["choices"] for e in evs[:-1]] == [json.loads(e)["choices"] for e in first[:-1]]
        assert evs[-1] == "[DONE]"
    assert sum(h.get("x-semcache-coalesced") == "true" for h, _ in answers) >= 1


# -------------------------------------------------------------- #14 item 6
def test_client_leaving_a_non_streamed_miss_cancels_the_upstream_call(setup):
    body = chat("a long answer nobody waits for (1)", model="slow-sim", max_tokens=60)  # 48 tokens: 1.2 s
    aborted = setup.finished(setup.slow, "abort")
    finished = setup.finished(setup.slow)
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", setup.proxy.port)) as raw:
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer key-a\r\n"
                    b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
        running = lambda: metric_sample(httpx.get(setup.slow.url + "/metrics").text,  # noqa: E731
                                        "vllm:num_requests_running") == 1
        setup.wait_for(running)  # the upstream call is under way: now the client leaves
    setup.wait_for(lambda: setup.finished(setup.slow, "abort") == aborted + 1)
    time.sleep(1.3)  # a whole answer's time: it must not have been generated nor stored
    assert setup.finished(setup.slow) - finished == 1  # the abort, nothing else
    again = setup.post(body, headers={"cache-control": "no-store"})
    assert again.headers["x-semcache-status"] == "miss"
