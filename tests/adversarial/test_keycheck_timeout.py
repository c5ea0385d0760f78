"""Issue #14 item 10: a hung upstream holds a cache hit for the key check's own short timeout, no longer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.api.keycheck import KeyCheck
from proxy.app import create_app
from proxy.settings import ProxySettings


class HangingProbe:
    def __init__(self):
        self.calls = 0

    async def __call__(self, authorization):
        self.calls += 1
        await asyncio.sleep(3600)
        return 200


async def test_a_probe_past_its_timeout_serves_the_hit_and_asks_again_next_time():
    probe = HangingProbe()
    check = KeyCheck(probe, timeout_s=0.05)
    started = time.perf_counter()
    assert await check.refusal("t1", "Bearer k") is None
    assert time.perf_counter() - started < 1.0
    assert await check.refusal("t1", "Bearer k") is None
    assert probe.calls == 2  # a timed-out check vouches for nobody


def models_hang(app):
    """The engine, except that ``GET /v1/models`` never answers (until the caller leaves)."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/models"):
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await app(scope, receive, send)

    return wrapped


POLICIES = """\
defaults: {cache_truncated: true}
categories:
  faq:
    shared_namespace: public
    shared_namespace_writers: ["*"]  # key-a writes, key-b (another tenant) reads
    match: {keywords: [faq]}
  default: {}
"""


def test_a_hit_does_not_wait_for_a_hung_upstream(tmp_path: Path, live_server):
    (tmp_path / "p.yaml").write_text(POLICIES)
    sim = create_sim_app(SimSettings(model="m", decode_ms_per_token=0.5, default_max_tokens=8))
    with live_server(models_hang(sim)) as engine:
        settings = ProxySettings(upstreams=[f"{engine.url}/v1"], sqlite_path=tmp_path / "c.db",
                                 policies=tmp_path / "p.yaml", log_level="warning", upstream_metrics_interval_s=0,
                                 key_check_timeout_s=0.5)
        with live_server(create_app(settings)) as proxy, httpx.Client(base_url=proxy.url, timeout=20) as c:
            body = {"model": "m", "messages": [{"role": "user", "content": "faq: when do you open?"}]}
            first = c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer key-a"})
            assert first.headers["x-semcache-status"] == "miss"
            started = time.perf_counter()
            hit = c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer key-b"})
            assert hit.status_code == 200 and hit.headers["x-semcache-status"] == "hit"
            assert time.perf_counter() - started < 3.0
