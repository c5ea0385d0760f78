"""Bad input gets an OpenAI-shaped 4xx (never a 500); the admin API needs its token."""

from __future__ import annotations

import gc
import os

import httpx
import pytest


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b'"a string"', None),
        (b'{"model": "sim-model"}', "messages"),
        (b'{"model": "sim-model", "messages": []}', "messages"),
        (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "sim-model", "messages": [{"content": "x"}]}', "messages.0.role"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": 5}]}', "messages.0.content"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
    ],
)
async def test_malformed_chat_requests_are_400(harness, content, param):
    r = await harness.client.post("/v1/chat/completions", content=content,
                                  headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400)
    if param is not None:
        assert err["param"] == param


async def test_bad_namespace_header_is_400(harness):
    r = await harness.client.post("/v1/chat/completions", headers={"x-semcache-namespace": "bad name!"},
                                  json={"model": "sim-model", "messages": [{"role": "user", "content": "x"}]})
    assert assert_openai_error(r, 400)["param"] == "X-Semcache-Namespace"


async def test_oversized_body_is_413(make_proxy):
    async with make_proxy(max_body_bytes=2048) as c:
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
        assert_openai_error(await c.post("/v1/chat/completions", json=big), 413)


async def test_unknown_route_and_method_are_openai_shaped(harness):
    assert_openai_error(await harness.client.get("/v1/nothing"), 404)
    assert_openai_error(await harness.client.get("/v1/chat/completions"), 405)


async def test_admin_api_needs_the_token(harness, admin_headers):
    c = harness.client
    assert_openai_error(await c.get("/admin/stats"), 401)  # the client's API key is not the admin token
    assert_openai_error(await c.get("/admin/stats", headers={"authorization": "Bearer wrong"}), 401)
    stats = await c.get("/admin/stats", headers=admin_headers)
    assert stats.status_code == 200 and "cache" in stats.json() and "proxy" in stats.json()


async def test_admin_api_is_disabled_without_a_token(make_proxy, admin_headers):
    async with make_proxy(admin_token=None) as c:
        for path in ("/admin/stats", "/admin/policies", "/admin/entries"):
            err = assert_openai_error(await c.get(path, headers=admin_headers), 404)
            assert "disabled" in err["message"]


async def test_admin_policy_reload_is_validated_and_atomic(harness, admin_headers, policy_file):
    c = harness.client
    current = await c.get("/admin/policies", headers=admin_headers)
    assert current.status_code == 200 and "categories:" in current.text
    bad = current.text.replace("threshold: 0.80", "threshhold: 0.80")
    err = assert_openai_error(await c.put("/admin/policies", content=bad, headers=admin_headers), 400)
    assert "threshhold" in err["message"]
    assert (await c.get("/admin/policies", headers=admin_headers)).text == current.text  # unchanged
    assert_openai_error(await c.put("/admin/policies", content=b"- [", headers=admin_headers), 400)
    new = current.text.replace("threshold: 0.80", "threshold: 0.95")
    ok = await c.put("/admin/policies", content=new, headers=admin_headers)
    assert ok.status_code == 200 and ok.json()["reloaded"] and "default" in ok.json()["categories"]
    assert (await c.get("/admin/policies", headers=admin_headers)).text == new
    # Written over the policy file (so a restart keeps it); a rejected reload never was.
    assert ok.json()["persisted"] is True and policy_file.read_text() == new
    assert ok.json()["shared_with_replicas"] is None  # SQLite: no other replica to tell


async def test_a_reload_that_cannot_be_written_is_in_force_and_says_so(make_proxy, admin_headers, policy_file):
    # The temp file's name is taken by a directory, so the write fails (even for root).
    blocker = policy_file.with_name(f".{policy_file.name}.{os.getpid()}.tmp")
    blocker.mkdir()
    try:
        async with make_proxy() as c:
            current = (await c.get("/admin/policies", headers=admin_headers)).text
            new = current.replace("threshold: 0.80", "threshold: 0.90")
            ok = await c.put("/admin/policies", content=new, headers=admin_headers)
            assert ok.status_code == 200 and ok.json()["persisted"] is False
            assert "cannot write" in ok.json()["not_persisted_because"]
            assert (await c.get("/admin/policies", headers=admin_headers)).text == new
        assert policy_file.read_text() == current
    finally:
        blocker.rmdir()


async def test_admin_entries_and_invalidate(harness, admin_headers):
    c = harness.client
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "invalidate me"}]}
    await c.post("/v1/chat/completions", json=body)
    entries = (await c.get("/admin/entries", headers=admin_headers)).json()["data"]
    assert len(entries) == 1 and entries[0]["category"] == "default" and "vector" not in entries[0]
    assert_openai_error(await c.post("/admin/invalidate", json={}, headers=admin_headers), 400)
    gone = await c.post("/admin/invalidate", json={"entry_id": entries[0]["id"]}, headers=admin_headers)
    assert gone.json() == {"removed": 1}
    again = await c.post("/v1/chat/completions", json=body)
    assert again.headers["x-semcache-status"] == "miss"
    assert (await c.post("/admin/invalidate", json={"all": True}, headers=admin_headers)).json() == {"removed": 1}


async def test_health_ready_and_metrics(harness):
    c = harness.client
    assert (await c.get("/healthz")).status_code == 200
    ready = await c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    await c.post("/v1/chat/completions", json={"model": "sim-model", "messages": [{"role": "user", "content": "m"}]})
    gc.collect()
    text = (await c.get("/metrics")).text
    assert 'semcache_gc_pause_seconds_count{generation="2"}' in text
    assert 'semcache_requests_total{endpoint="chat",status="miss"} 1.0' in text
    assert "semcache_category_" in text
    # Rates and means go up and down: gauges, never counters (a counter must not fall).
    assert "# TYPE semcache_category_hit_rate gauge" in text
    assert "# TYPE semcache_category_mean_lookup_ms gauge" in text
    assert "# TYPE semcache_category_lookups_total counter" in text
