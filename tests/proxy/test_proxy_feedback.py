"""POST /v1/semcache/feedback: a wrong report removes the served entry, for its own tenant only."""

from __future__ import annotations

from .test_proxy_serving import chat


async def test_wrong_feedback_stops_serving_the_entry(harness):
    c = harness.client
    await c.post("/v1/chat/completions", json=chat("What is semantic caching?"))
    hit = await c.post("/v1/chat/completions", json=chat("What is semantic caching?"))
    entry = hit.headers["x-semcache-entry"]
    other = await c.post("/v1/semcache/feedback", json={"correct": False, "entry_id": entry},
                         headers={"authorization": "Bearer key-b"})
    assert other.status_code == 404  # another tenant cannot remove it
    res = await c.post("/v1/semcache/feedback", json={"correct": False}, headers={"x-semcache-entry": entry})
    assert res.status_code == 200 and res.json()["removed"] is True
    again = await c.post("/v1/chat/completions", json=chat("What is semantic caching?"))
    assert again.headers["x-semcache-status"] == "miss"
    assert harness.upstream_requests() == 2
    missing = await c.post("/v1/semcache/feedback", json={"correct": True})
    assert missing.status_code == 422
