"""Issue #14 item 8: feedback needs a key the upstream accepts; one caller cannot remove a shared entry.

Before the fix any key, even one the upstream rejects, removed a shared entry
with a single ``correct: false``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.api.keycheck import KeyCheck
from proxy.app import create_app
from proxy.settings import ProxySettings
from semcache.errors import UpstreamError
from tests.proxy.conftest import ADMIN_TOKEN, admin_headers, harness, policy_file  # noqa: F401 (fixtures)

ADMIN = {"x-semcache-admin-token": ADMIN_TOKEN}
FAQ = {"model": "sim-model", "messages": [{"role": "user", "content": "faq: what are your opening hours?"}]}


async def _shared_entry(c: httpx.AsyncClient) -> str:
    """An entry in the shared ``faq`` namespace, written by the admin; its id from a hit."""
    first = await c.post("/v1/chat/completions", json=FAQ, headers=ADMIN)
    assert first.headers["x-semcache-status"] == "miss"
    hit = await c.post("/v1/chat/completions", json=FAQ, headers={"authorization": "Bearer key-z"})
    assert hit.headers["x-semcache-status"] == "hit", hit.headers
    return hit.headers["x-semcache-entry"]


async def _report(c: httpx.AsyncClient, entry: str, key: str) -> httpx.Response:
    return await c.post("/v1/semcache/feedback", json={"correct": False, "entry_id": entry},
                        headers={"authorization": f"Bearer {key}"})


async def test_a_shared_entry_leaves_serving_only_after_three_distinct_tenants(harness):
    c = harness.client
    entry = await _shared_entry(c)
    for key, reports in [("key-b", 1), ("key-b", 1), ("key-b", 1), ("key-c", 2)]:
        res = await _report(c, entry, key)
        assert res.status_code == 200, res.text
        assert res.json()["removed"] is False and res.json()["reports"] == reports
        assert res.json()["reports_needed"] == 3
        still = await c.post("/v1/chat/completions", json=FAQ)
        assert still.headers["x-semcache-status"] == "hit"
    res = await _report(c, entry, "key-d")
    assert res.json()["removed"] is True and res.json()["reports"] == 3
    assert (await c.post("/v1/chat/completions", json=FAQ)).headers["x-semcache-status"] == "miss"


async def test_the_admin_removes_a_shared_entry_with_one_report(harness):
    c = harness.client
    entry = await _shared_entry(c)
    res = await c.post("/v1/semcache/feedback", json={"correct": False, "entry_id": entry}, headers=ADMIN)
    assert res.status_code == 200 and res.json()["removed"] is True
    assert (await c.post("/v1/chat/completions", json=FAQ)).headers["x-semcache-status"] == "miss"
    wrong_token = await c.post("/v1/semcache/feedback", json={"correct": False, "entry_id": entry},
                               headers={"x-semcache-admin-token": "guess"})
    assert wrong_token.status_code == 404  # an ordinary (made-up) tenant: no such entry of its own


async def test_a_key_that_cannot_be_checked_now_is_refused_for_feedback_but_served_hits():
    async def unreachable(_authorization):
        raise UpstreamError("down", status_code=502)

    check = KeyCheck(unreachable)
    assert await check.refusal("t1", "Bearer k") is None  # reading: a cache keeps serving in an outage
    refusal = await check.refusal("t1", "Bearer k", strict=True)
    assert refusal is not None and refusal.status_code == 503
    assert refusal.body["error"]["code"] == "key_check_unavailable"


@pytest.mark.slow
def test_feedback_from_keys_the_upstream_rejects_is_refused(tmp_path: Path, live_server):
    sim = SimSettings(model="m", decode_ms_per_token=0.2, default_max_tokens=8, api_key="simkey")
    (tmp_path / "p.yaml").write_text("defaults: {cache_truncated: true}\ncategories:\n"
                                     "  faq: {shared_namespace: public, match: {keywords: [faq]}}\n  default: {}\n")
    body = {"model": "m", "messages": [{"role": "user", "content": "faq: what are your opening hours?"}]}
    good = {"authorization": "Bearer simkey"}
    with live_server(create_sim_app(sim)) as engine:
        settings = ProxySettings(upstreams=[f"{engine.url}/v1"], sqlite_path=tmp_path / "c.db",
                                 policies=tmp_path / "p.yaml", admin_token=ADMIN_TOKEN, log_level="warning")
        with live_server(create_app(settings)) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as c:
            assert c.post("/v1/chat/completions", json=body, headers={**good, **ADMIN}).status_code == 200
            hit = c.post("/v1/chat/completions", json=body, headers=good)
            entry = hit.headers["x-semcache-entry"]
            for headers in ({"authorization": "Bearer wrong"}, {"authorization": "bearer simkey"}, {}):
                res = c.post("/v1/semcache/feedback", json={"correct": False, "entry_id": entry}, headers=headers)
                assert res.status_code == 401, (headers, res.status_code, res.text)
                assert res.json()["error"]["code"] == "invalid_api_key"
            again = c.post("/v1/chat/completions", json=body, headers=good)
            assert again.headers["x-semcache-status"] == "hit" and again.headers["x-semcache-entry"] == entry
