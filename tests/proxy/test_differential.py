"""Differential: a hit answers exactly what the upstream answers to the same request.

For a fixed set of requests (chat and completions, streamed or not, with and
without ``include_usage``, ``n``, ``stop``, ``logprobs``, ``response_format``,
``tools``) the proxy's miss and its hit are compared with the engine
simulator's own answer to the same request (it answers deterministically):
equal JSON, or equal SSE events chunk by chunk, except ``id`` and ``created``.
A request that is not cacheable (``n > 1``) must be forwarded every time.
"""

from __future__ import annotations

import json

import httpx
import pytest

from proxy.api.sse import SSEParser, assemble

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def chat(content: str, **extra) -> tuple[str, dict]:
    return "/v1/chat/completions", {"model": "sim-model", "messages": [{"role": "user", "content": content}],
                                    **extra}


def completion(prompt: str, **extra) -> tuple[str, dict]:
    return "/v1/completions", {"model": "sim-model", "prompt": prompt, **extra}


USAGE = {"stream_options": {"include_usage": True}}
CASES = {
    "chat": chat("What is a semantic cache?"),
    "chat-stream": chat("How does streaming work?", stream=True),
    "chat-stream-usage": chat("How is usage counted?", stream=True, **USAGE),
    "chat-stop": chat("List three colours", stop=["\n", "blue"]),
    "chat-stream-stop": chat("List three animals", stream=True, stop=["."]),
    "chat-logprobs": chat("Pick a number", logprobs=True, top_logprobs=2),
    "chat-response-format": chat("Give me a JSON object", response_format={"type": "json_object"}),
    "chat-tools": chat("Weather in Paris?", tools=TOOLS, tool_choice="auto"),
    "chat-stream-tools": chat("Weather in Rome?", tools=TOOLS, stream=True, **USAGE),
    "chat-length": chat("Write a long essay", max_tokens=3),
    "completion": completion("The capital of France is", max_tokens=20),
    "completion-stream": completion("Once upon a time", stream=True, max_tokens=20),
    "completion-stream-usage": completion("In a galaxy far away", stream=True, max_tokens=20, **USAGE),
    "completion-logprobs": completion("Two plus two is", logprobs=2, max_tokens=10),
}
NOT_CACHEABLE = {
    "chat-n2": chat("Two answers please", n=2),
    "chat-stream-n2": chat("Two streamed answers please", n=2, stream=True),
    "completion-n2": completion("Two completions of", n=2),
}


def comparable(response: httpx.Response) -> object:
    """The body without ``id`` and ``created``: a JSON object, or the SSE events in order."""
    assert response.status_code == 200, response.text
    if not response.headers["content-type"].startswith("text/event-stream"):
        return {k: v for k, v in response.json().items() if k not in ("id", "created")}
    parser = SSEParser()
    events = parser.feed(response.content) + parser.close()
    return [e if e == "[DONE]" else {k: v for k, v in json.loads(e).items() if k not in ("id", "created")}
            for e in events]


async def direct(harness, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.sim), base_url="http://sim") as sim:
        return await sim.post(path, json=body)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_hit_equals_the_upstream_answer(harness, case):
    path, body = CASES[case]
    upstream = comparable(await direct(harness, path, body))
    miss = await harness.client.post(path, json=body)
    assert miss.headers["x-semcache-status"] == "miss" and comparable(miss) == upstream
    hit = await harness.client.post(path, json=body)
    assert hit.headers["x-semcache-status"] == "hit" and comparable(hit) == upstream
    assert hit.headers["content-type"] == miss.headers["content-type"]


@pytest.mark.parametrize("case", sorted(NOT_CACHEABLE))
async def test_a_request_that_is_not_cacheable_is_forwarded(harness, case):
    path, body = NOT_CACHEABLE[case]
    upstream = comparable(await direct(harness, path, body))
    before = harness.upstream_requests()
    for _ in range(2):
        r = await harness.client.post(path, json=body)
        assert r.headers["x-semcache-status"] == "bypass" and comparable(r) == upstream
    assert harness.upstream_requests() - before == 2 * body["n"]  # the simulator counts each choice


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
async def test_a_hit_in_the_other_mode_equals_the_upstream_answer(harness, endpoint):
    """Stored from a stream, served as JSON (and the reverse): same answer, same usage."""
    make = chat if endpoint == "chat" else completion
    kind = "chat" if endpoint == "chat" else "completions"
    path, streamed = make("Stored from a stream", stream=True, max_tokens=30)
    assert (await harness.client.post(path, json=streamed)).headers["x-semcache-status"] == "miss"
    plain = {k: v for k, v in streamed.items() if k != "stream"}
    hit = await harness.client.post(path, json=plain)
    assert hit.headers["x-semcache-status"] == "hit"
    assert comparable(hit) == comparable(await direct(harness, path, plain))

    path, plain = make("Stored as JSON", max_tokens=30)
    assert (await harness.client.post(path, json=plain)).headers["x-semcache-status"] == "miss"
    streamed = {**plain, "stream": True, **USAGE}
    hit = await harness.client.post(path, json=streamed)
    assert hit.headers["x-semcache-status"] == "hit"
    replayed, upstream = comparable(hit), comparable(await direct(harness, path, streamed))
    assert replayed[-1] == upstream[-1] == "[DONE]"
    # Chunked differently (a stored JSON answer has no chunks), assembled the same, usage included.
    assert _assembled(replayed[:-1], kind) == _assembled(upstream[:-1], kind)


def _assembled(chunks: list[dict], endpoint: str) -> dict:
    whole = assemble(chunks, endpoint)
    return {k: v for k, v in whole.items() if k not in ("id", "created")}
