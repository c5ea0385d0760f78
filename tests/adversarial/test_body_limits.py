"""Issue #14 item 5: a body over the limit gets 413, with or without a Content-Length."""

from __future__ import annotations

import httpx

LIMIT = 4 * 1024 * 1024  # the default max_body_bytes


def chunks(total: int, size: int = 64 * 1024):
    prefix = b'{"model": "sim-model", "messages": [{"role": "user", "content": "'
    yield prefix
    sent = len(prefix)
    while sent < total:
        yield b"word " * (size // 5)
        sent += size
    yield b'"}]}'


def test_chunked_body_over_the_limit_is_413(proxy):
    answer = httpx.post(proxy.url + "/v1/chat/completions", content=chunks(LIMIT + 1024 * 1024), timeout=60,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "exceeds" in answer.json()["error"]["message"]


def test_declared_length_over_the_limit_is_413(proxy):
    body = b"".join(chunks(LIMIT + 1024))
    answer = httpx.post(proxy.url + "/v1/chat/completions", content=body, timeout=60,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 413


def test_chunked_body_under_the_limit_is_served(proxy):
    answer = httpx.post(proxy.url + "/v1/chat/completions", content=chunks(5_000, size=1_000), timeout=60,
                        headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text[:300]
