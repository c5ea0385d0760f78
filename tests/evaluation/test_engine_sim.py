"""The engine simulator answers like an OpenAI engine and waits like vLLM would."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from evaluation.engine_sim import SimSettings, create_app
from evaluation.engine_sim.scheduler import QueueFullError, Scheduler


def _client(**overrides) -> httpx.AsyncClient:
    settings = SimSettings(**{"model": "m", "decode_ms_per_token": 0.0, **overrides})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://sim")


def _chat(content: str, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def _sse_chunks(text: str) -> list:
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def test_chat_answers_are_deterministic_per_prompt():
    async with _client() as c:
        a1 = (await c.post("/v1/chat/completions", json=_chat("What is a cache?"))).json()
        a2 = (await c.post("/v1/chat/completions", json=_chat("What is a cache?"))).json()
        b = (await c.post("/v1/chat/completions", json=_chat("What is a queue?"))).json()
    text = a1["choices"][0]["message"]["content"]
    assert text and text == a2["choices"][0]["message"]["content"]
    assert text != b["choices"][0]["message"]["content"]
    assert a1["id"] != a2["id"] and a1["object"] == "chat.completion" and a1["model"] == "m"
    usage = a1["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_stream_concatenates_to_the_non_streamed_answer_with_usage():
    async with _client() as c:
        whole = (await c.post("/v1/chat/completions", json=_chat("stream me", max_tokens=12))).json()
        r = await c.post("/v1/chat/completions", json=_chat(
            "stream me", max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = _sse_chunks(r.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_max_tokens_truncates_with_finish_reason_length():
    async with _client() as c:
        r = (await c.post("/v1/completions", json={"model": "m", "prompt": "count", "max_tokens": 2})).json()
    assert r["object"] == "text_completion"
    assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 2


async def test_completions_stream_matches_non_stream():
    body = {"model": "m", "prompt": "Once upon a time"}
    async with _client() as c:
        whole = (await c.post("/v1/completions", json=body)).json()
        r = await c.post("/v1/completions", json={**body, "stream": True})
    chunks = _sse_chunks(r.text)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == whole["choices"][0]["text"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"model": "m", "messages": []}, 400, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "two"}, 400, "n"),
    ],
)
async def test_refusals_are_openai_shaped(body, status, param):
    async with _client() as c:
        r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["code"] == status


async def test_malformed_json_is_a_400():
    async with _client() as c:
        r = await c.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


async def test_latency_model_decode_time_per_token():
    async with _client(decode_ms_per_token=5.0) as c:
        t0 = time.perf_counter()
        r = (await c.post("/v1/chat/completions", json=_chat("slow", max_tokens=8))).json()
        elapsed = time.perf_counter() - t0
    assert elapsed >= r["usage"]["completion_tokens"] * 0.005 * 0.9


async def test_batch_limit_queues_requests_and_metrics_show_it():
    async with _client(decode_ms_per_token=20.0, max_batch=1) as c:
        first = asyncio.create_task(c.post("/v1/chat/completions", json=_chat("a", max_tokens=5)))
        second = asyncio.create_task(c.post("/v1/chat/completions", json=_chat("b", max_tokens=5)))
        await asyncio.sleep(0.03)
        metrics = (await c.get("/metrics")).text
        await asyncio.gather(first, second)
        after = (await c.get("/metrics")).text
    assert 'vllm:num_requests_running{model_name="m"} 1.0' in metrics
    assert 'vllm:num_requests_waiting{model_name="m"} 1.0' in metrics
    assert 'vllm:gpu_cache_usage_perc{model_name="m"}' in metrics and "vllm:kv_cache_usage_perc" in metrics
    assert 'vllm:num_requests_running{model_name="m"} 0.0' in after
    assert "vllm:prompt_tokens_total" in after and "vllm:generation_tokens_total" in after


async def test_answer_book_answers_known_questions(tmp_path):
    book = tmp_path / "answers.jsonl"
    book.write_text(json.dumps({"question": "What is the capital of France?", "answer": "Paris is."}) + "\n")
    async with _client(answers_file=book) as c:
        known = (await c.post("/v1/chat/completions", json=_chat("what is the  capital of france?"))).json()
        other = (await c.post("/v1/chat/completions", json=_chat("What is the capital of Spain?"))).json()
    assert known["choices"][0]["message"]["content"] == "Paris is."
    assert other["choices"][0]["message"]["content"] != "Paris is."


async def test_models_lists_the_served_model():
    async with _client() as c:
        data = (await c.get("/v1/models")).json()["data"]
    assert [m["id"] for m in data] == ["m"]


async def test_scheduler_is_fifo_bounded_and_survives_cancellation():
    s = Scheduler(max_batch=1, max_waiting=1, kv_cache_tokens=100)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str) -> None:
        async with s.slot(10):
            order.append(name)
            await gate.wait()

    a = asyncio.create_task(job("a"))
    await asyncio.sleep(0)
    b = asyncio.create_task(job("b"))
    await asyncio.sleep(0)
    assert (s.running, s.waiting, s.kv_usage) == (1, 1, 0.1)
    with pytest.raises(QueueFullError):
        async with s.slot(1):
            pass
    b.cancel()
    await asyncio.sleep(0)
    assert s.waiting == 0
    c = asyncio.create_task(job("c"))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(a, c)
    assert order == ["a", "c"] and (s.running, s.waiting, s.kv_tokens_in_use) == (0, 0, 0)


def test_a_client_that_disconnects_frees_its_batch_slot(live_server):
    """Like vLLM: a non-streamed request whose client leaves is aborted, not finished."""
    import socket

    app = create_app(SimSettings(model="m", decode_ms_per_token=50.0, max_batch=1))
    with live_server(app) as server:
        body = json.dumps(_chat("a long answer please", max_tokens=60)).encode()  # ~3 s of decode
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n"
                      b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.monotonic() + 5
            while 'num_requests_running{model_name="m"} 1.0' not in httpx.get(server.url + "/metrics").text:
                assert time.monotonic() < deadline, "the request never started running"
                time.sleep(0.01)
        left = time.monotonic()
        while True:
            metrics = httpx.get(server.url + "/metrics").text
            if 'num_requests_running{model_name="m"} 0.0' in metrics:
                break
            assert time.monotonic() - left < 1.0, "the slot stayed taken after the client left"
            time.sleep(0.01)
        assert 'vllm:request_success_total{finished_reason="abort",model_name="m"} 1.0' in metrics
        # The engine is free again: the next request runs at once.
        quick = httpx.post(server.url + "/v1/chat/completions", json=_chat("short", max_tokens=1), timeout=5)
        assert quick.status_code == 200


def test_a_stream_whose_client_leaves_is_counted_as_aborted(live_server):
    app = create_app(SimSettings(model="m", decode_ms_per_token=50.0, max_batch=1))
    with live_server(app) as server:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            with c.stream("POST", "/v1/chat/completions", json=_chat("stream long", max_tokens=60, stream=True)) as r:
                next(r.iter_bytes())  # the stream has started; now leave
        deadline = time.monotonic() + 2
        while True:
            metrics = httpx.get(server.url + "/metrics").text
            if 'finished_reason="abort"' in metrics and 'num_requests_running{model_name="m"} 0.0' in metrics:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.02)
