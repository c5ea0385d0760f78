"""The cache path in process: hits, misses, streams, controls, errors (proxy over the simulator)."""

from __future__ import annotations

import asyncio
import json

from proxy.api.sse import SSEParser


def chat(content: str, **extra) -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": content}], **extra}


def sse_chunks(body: bytes) -> list:
    parser = SSEParser()
    events = parser.feed(body) + parser.close()
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def chat_text(chunks: list) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_miss_then_hit_returns_the_stored_answer_with_fresh_id(harness):
    c = harness.client
    first = await c.post("/v1/chat/completions", json=chat("What is semantic caching?"))
    assert first.status_code == 200 and first.headers["x-semcache-status"] == "miss"
    assert first.headers["x-semcache-category"] == "default"
    second = await c.post("/v1/chat/completions", json=chat("What is semantic caching?"))
    assert second.headers["x-semcache-status"] == "hit"
    assert float(second.headers["x-semcache-similarity"]) > 0.99 and second.headers["x-semcache-entry"]
    a, b = first.json(), second.json()
    assert b["choices"] == a["choices"] and b["model"] == a["model"] == "sim-model"
    assert b["id"] != a["id"] and b["id"].startswith("chatcmpl-") and b["object"] == "chat.completion"
    assert harness.upstream_requests() == 1


async def test_unknown_fields_pass_through_and_are_part_of_the_context(harness):
    c = harness.client
    r1 = await c.post("/v1/chat/completions", json=chat("Tell me about caches", temperature=0.2, x_vendor={"a": 1}))
    r2 = await c.post("/v1/chat/completions", json=chat("Tell me about caches", temperature=0.7, x_vendor={"a": 1}))
    assert r1.status_code == r2.status_code == 200
    assert r2.headers["x-semcache-status"] == "miss"  # other sampling parameters: other context


async def test_streamed_miss_is_relayed_and_then_replayed_as_a_hit(harness):
    c = harness.client
    body = chat("Explain streaming", stream=True, stream_options={"include_usage": True})
    miss = await c.post("/v1/chat/completions", json=body)
    assert miss.headers["x-semcache-status"] == "miss"
    assert miss.headers["content-type"].startswith("text/event-stream")
    relayed = sse_chunks(miss.content)
    hit = await c.post("/v1/chat/completions", json=body)
    assert hit.headers["x-semcache-status"] == "hit"
    replayed = sse_chunks(hit.content)
    assert chat_text(replayed) == chat_text(relayed) and chat_text(relayed)
    assert [ch["choices"] and ch["choices"][0].get("finish_reason") for ch in replayed] == \
        [ch["choices"] and ch["choices"][0].get("finish_reason") for ch in relayed]
    assert replayed[-1]["usage"] == relayed[-1]["usage"] and replayed[-1]["choices"] == []
    assert len({ch["id"] for ch in replayed}) == 1 and replayed[0]["id"] != relayed[0]["id"]
    assert all(ch["object"] == "chat.completion.chunk" for ch in replayed)


async def test_non_streamed_answer_replays_as_stream_without_usage_unless_asked(harness):
    c = harness.client
    whole = (await c.post("/v1/chat/completions", json=chat("Replay me"))).json()
    hit = await c.post("/v1/chat/completions", json=chat("Replay me", stream=True))
    assert hit.headers["x-semcache-status"] == "hit"
    chunks = sse_chunks(hit.content)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chat_text(chunks) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all("usage" not in ch for ch in chunks)
    with_usage = sse_chunks((await c.post("/v1/chat/completions", json=chat(
        "Replay me", stream=True, stream_options={"include_usage": True}))).content)
    assert with_usage[-1]["usage"] == whole["usage"]


async def test_completions_endpoint_caches_too(harness):
    c = harness.client
    body = {"model": "sim-model", "prompt": "The capital of France is", "max_tokens": 20}
    first = await c.post("/v1/completions", json=body)
    second = await c.post("/v1/completions", json=body)
    assert (first.headers["x-semcache-status"], second.headers["x-semcache-status"]) == ("miss", "hit")
    assert second.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    assert second.json()["id"].startswith("cmpl-")
    streamed = await c.post("/v1/completions", json={**body, "stream": True})
    chunks = sse_chunks(streamed.content)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == first.json()["choices"][0]["text"]


async def test_cache_control_no_cache_and_no_store(harness):
    c = harness.client
    await c.post("/v1/chat/completions", json=chat("controls"))
    skipped = await c.post("/v1/chat/completions", json=chat("controls"), headers={"cache-control": "no-cache"})
    assert skipped.headers["x-semcache-status"] == "miss"
    not_kept = await c.post("/v1/chat/completions", json=chat("never kept"), headers={"cache-control": "no-store"})
    assert not_kept.headers["x-semcache-status"] == "miss"
    again = await c.post("/v1/chat/completions", json=chat("never kept"))
    assert again.headers["x-semcache-status"] == "miss"
    assert harness.upstream_requests() == 4


async def test_tenants_and_namespaces_are_isolated(harness):
    c = harness.client
    await c.post("/v1/chat/completions", json=chat("tenant question"))
    other = await c.post("/v1/chat/completions", json=chat("tenant question"), headers={"authorization": "Bearer key-b"})
    assert other.headers["x-semcache-status"] == "miss"
    ns = await c.post("/v1/chat/completions", json=chat("tenant question"), headers={"x-semcache-namespace": "team1"})
    assert ns.headers["x-semcache-status"] == "miss"
    same = await c.post("/v1/chat/completions", json=chat("tenant question"))
    assert same.headers["x-semcache-status"] == "hit"


async def test_shared_namespace_category_is_shared_across_tenants(harness):
    c = harness.client
    # Only the policy's writers (by default the admin) write into a shared namespace.
    await c.post("/v1/chat/completions", json=chat("faq: opening hours"),
                 headers={"x-semcache-admin-token": "admin-secret"})
    other = await c.post("/v1/chat/completions", json=chat("faq: opening hours"),
                         headers={"authorization": "Bearer key-b"})
    assert other.headers["x-semcache-category"] == "faq" and other.headers["x-semcache-status"] == "hit"


async def test_uncacheable_category_and_forced_category(harness):
    c = harness.client
    for _ in range(2):
        r = await c.post("/v1/chat/completions", json=chat("my password is hunter2"))
        assert (r.headers["x-semcache-status"], r.headers["x-semcache-category"]) == ("bypass", "private")
    forced = await c.post("/v1/chat/completions", json=chat("plain words"), headers={"x-semcache-category": "private"})
    assert forced.headers["x-semcache-status"] == "bypass"


async def test_upstream_errors_pass_through_and_are_not_cached(harness):
    c = harness.client
    for _ in range(2):
        r = await c.post("/v1/chat/completions", json={**chat("x"), "model": "no-such-model"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        assert r.headers["x-semcache-status"] == "miss"
    r = await c.post("/v1/chat/completions", json={**chat("x"), "model": "no-such-model", "stream": True})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    assert harness.upstream_requests() == 0


async def test_identical_concurrent_misses_are_coalesced(harness):
    harness.sim.state.engine.settings.decode_ms_per_token = 5.0
    c = harness.client
    answers = await asyncio.gather(*(c.post("/v1/chat/completions", json=chat("coalesce me")) for _ in range(6)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["choices"][0]["message"]["content"] for r in answers}) == 1
    assert harness.upstream_requests() == 1
    assert sum(r.headers.get("x-semcache-coalesced") == "true" for r in answers) == 5


async def test_models_and_embeddings_are_forwarded(harness):
    c = harness.client
    models = (await c.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["sim-model"]
    r = await c.post("/v1/embeddings", json={"model": "sim-model", "input": "x"})
    assert r.status_code == 404 and r.headers["x-semcache-status"] == "bypass"  # the simulator has none
    assert "error" in r.json()
