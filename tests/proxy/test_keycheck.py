"""A cached answer is served only to callers whose key the upstream accepts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from proxy.api.keycheck import KeyCheck
from proxy.settings import ProxySettings
from semcache.errors import UpstreamError


class Probe:
    def __init__(self, status: int | None):
        self.status, self.calls = status, 0

    async def __call__(self, authorization):
        self.calls += 1
        if self.status is None:
            raise UpstreamError("unreachable", status_code=502)
        return self.status


async def test_an_accepted_key_is_trusted_for_the_ttl_then_asked_again():
    now = [0.0]
    probe = Probe(200)
    check = KeyCheck(probe, ttl_s=300, clock=lambda: now[0])
    assert await check.refusal("t1", "Bearer good") is None
    assert await check.refusal("t1", "Bearer good") is None
    assert probe.calls == 1
    now[0] = 301.0
    assert await check.refusal("t1", "Bearer good") is None
    assert probe.calls == 2


async def test_a_rejected_key_is_refused_with_the_upstream_status_and_a_vouched_key_is_not_asked():
    probe = Probe(401)
    check = KeyCheck(probe)
    refusal = await check.refusal("t-bad", "Bearer nope")
    assert refusal is not None and refusal.status_code == 401 and refusal.body["error"]["code"] == "invalid_api_key"
    check.vouch("t-good")  # a miss the upstream answered with this key
    assert await check.refusal("t-good", "Bearer good") is None
    assert probe.calls == 1


async def test_an_unreachable_upstream_does_not_block_hits_and_is_asked_again_next_time():
    probe = Probe(None)
    check = KeyCheck(probe)
    assert await check.refusal("t1", "Bearer k") is None
    assert await check.refusal("t1", "Bearer k") is None
    assert probe.calls == 2  # not remembered as good


POLICIES = """\
defaults:
  threshold: 0.95
  cache_truncated: true
categories:
  faq:
    shared_namespace: public
    shared_namespace_writers: ["*"]
    match: {keywords: [faq]}
  default: {}
"""


@pytest.mark.slow
def test_shared_answers_are_not_served_to_keys_the_upstream_rejects(tmp_path: Path, live_server):
    sim = SimSettings(model="m", decode_ms_per_token=0.5, default_max_tokens=8, api_key="sekret")
    (tmp_path / "p.yaml").write_text(POLICIES)
    with live_server(create_sim_app(sim)) as engine:
        settings = ProxySettings(upstreams=[f"{engine.url}/v1"], sqlite_path=tmp_path / "c.db",
                                 policies=tmp_path / "p.yaml", log_level="warning")
        with live_server(create_app(settings)) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as c:
            body = {"model": "m", "messages": [{"role": "user", "content": "faq: what are your opening hours?"}]}
            first = c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer sekret"})
            assert first.status_code == 200 and first.headers["x-semcache-status"] == "miss"
            again = c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer sekret"})
            assert again.status_code == 200 and again.headers["x-semcache-status"] == "hit"
            for headers in ({"authorization": "Bearer wrong"}, {}):
                denied = c.post("/v1/chat/completions", json=body, headers=headers)
                assert denied.status_code == 401, denied.text
                assert denied.headers["x-semcache-status"] == "denied"
                assert denied.json()["error"]["code"] == "invalid_api_key"
                assert "x-semcache-entry" not in denied.headers and "opening" not in denied.text

        # With the proxy's own upstream key, callers' keys are not the upstream's business.
        own = ProxySettings(upstreams=[f"{engine.url}/v1"], sqlite_path=tmp_path / "c.db",
                            policies=tmp_path / "p.yaml", upstream_api_key="sekret", log_level="warning")
        with live_server(create_app(own)) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as c:
            hit = c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer anything"})
            assert hit.status_code == 200 and hit.headers["x-semcache-status"] == "hit"
