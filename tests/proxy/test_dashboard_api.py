"""The dashboard's HTTP side: page, assets, the live stream and its guards (no browser)."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from fastapi import HTTPException

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.admin.dashboard import STATIC, LiveStreams, encode_event
from proxy.app import create_app
from tests.proxy.conftest import ADMIN_TOKEN, BagOfWordsEmbedder, make_settings

CHART_JS_SHA256 = "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"


def test_vendored_chart_js_is_the_pinned_release():
    data = (STATIC / "vendor" / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHART_JS_SHA256
    assert b"Chart.js v4.6.1" in data[:200]
    assert CHART_JS_SHA256 in (STATIC / "vendor" / "README.md").read_text()


@pytest.fixture
def proxy(tmp_path, policy_file, live_server):
    with live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=0.5))) as sim:
        settings = make_settings(tmp_path, policy_file, upstreams=[f"{sim.url}/v1"], dashboard_interval_s=0.2)
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as server:
            yield server


def test_page_and_assets_are_served_with_a_strict_policy(proxy):
    page = httpx.get(proxy.url + "/dashboard")
    assert page.status_code == 200 and "Admin token" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    for name in ("dashboard.js", "dashboard.css", "chart.umd.min.js"):
        assert httpx.get(f"{proxy.url}/dashboard/static/{name}").status_code == 200
    assert httpx.get(proxy.url + "/dashboard/static/vendor%2FREADME.md").status_code == 404
    assert httpx.get(proxy.url + "/dashboard/static/..%2F..%2Fdashboard.py").status_code == 404


def test_live_stream_needs_the_token(proxy):
    assert httpx.get(proxy.url + "/admin/live").status_code == 401
    assert httpx.get(proxy.url + "/admin/live", headers={"authorization": "Bearer nope"}).status_code == 401


def test_live_stream_sends_stats_snapshots(proxy):
    httpx.post(proxy.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
               json={"model": "sim-model", "messages": [{"role": "user", "content": "hello there"}]})
    events = []
    with httpx.stream("GET", proxy.url + "/admin/live", headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                      timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) == 2:
                break
    assert events[1]["at"] > events[0]["at"]
    assert events[0]["cache"]["total"]["lookups"] >= 1
    assert len(events[0]["proxy"]["upstreams"]) == 1


def test_live_streams_are_capped():
    streams = LiveStreams(max_streams=2)
    streams.acquire()
    streams.acquire()
    with pytest.raises(HTTPException) as refused:
        streams.acquire()
    assert refused.value.status_code == 429
    streams.release()
    streams.acquire()  # a closed dashboard frees its place


def test_dashboard_is_off_without_an_admin_token(tmp_path, policy_file, live_server):
    settings = make_settings(tmp_path, policy_file, admin_token=None)
    with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as server:
        assert httpx.get(server.url + "/dashboard").status_code == 404
        assert httpx.get(server.url + "/dashboard/static/dashboard.js").status_code == 404


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON (the browser's JSON.parse refuses it)")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_in_the_stats_is_sent_as_null():
    # IC-Cache reports mean_quality NaN for a category with no scored answer yet.
    event = encode_event({"at": 1.5, "proxy": {"iccache": {"categories": {"default": {
        "mean_quality": float("nan"), "offload_rate": 0.25, "cost": float("inf")}}}}})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    body = _strict(event[6:-2].decode())
    assert body["proxy"]["iccache"]["categories"]["default"] == {"mean_quality": None, "offload_rate": 0.25,
                                                                  "cost": None}
