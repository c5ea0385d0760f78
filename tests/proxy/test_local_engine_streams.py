"""The real local engine (llama-cpp-python's server) as semcache starts it: streams are not cut
short by other requests, and its streams (which carry no usage) are stored with counted usage."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from proxy.api.sse import SSEParser
from proxy.app import create_app
from proxy.upstream.local_llm import MODEL_ALIAS
from tests.proxy.conftest import BagOfWordsEmbedder, make_settings

pytestmark = pytest.mark.slow


def _chunks(lines: list[bytes]) -> list[dict]:
    parser = SSEParser()
    events = [e for line in lines for e in parser.feed(line)] + parser.close()
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_local_engine_does_not_interrupt_a_running_stream(local_llm):
    body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Count from one to twenty."}],
            "max_tokens": 10, "stream": True}
    other = threading.Thread(target=httpx.post, args=(local_llm + "/chat/completions",), kwargs={
        "json": {**body, "stream": False, "max_tokens": 1}, "timeout": 120})
    received: list[bytes] = []
    cut = None
    try:
        with httpx.stream("POST", local_llm + "/chat/completions", json=body, timeout=120) as r:
            for data in r.iter_bytes():
                received.append(data)
                if len(received) == 2:
                    other.start()  # another request arrives while this stream runs
    except httpx.RemoteProtocolError as exc:  # llama-cpp-python's default: [DONE], then the connection drops
        cut = exc
    finally:
        if other.is_alive():
            other.join()
    assert cut is None, f"the stream was cut short: {cut}"
    finish = [c["choices"][0]["finish_reason"] for c in _chunks(received) if c.get("choices")]
    assert finish[-1] in ("stop", "length")  # llama-cpp-python's default would end it with no reason


def test_a_stream_without_engine_usage_is_stored_with_counted_usage(local_llm, tmp_path, policy_file,
                                                                    live_server):
    settings = make_settings(tmp_path, policy_file, upstreams=[f"{MODEL_ALIAS}={local_llm}"])
    with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy:
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Name a colour."}],
                "max_tokens": 6, "stream": True}
        headers = {"authorization": "Bearer k"}
        miss = httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert miss.headers["x-semcache-status"] == "miss"
        assert not any("usage" in c for c in _chunks([miss.content]))  # not asked: none shown
        hit = httpx.post(proxy.url + "/v1/chat/completions", json={**body, "stream": False}, headers=headers,
                         timeout=30)
        assert hit.headers["x-semcache-status"] == "hit"
        usage = hit.json()["usage"]
        assert usage["estimated"] is True and usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
