"""`semcache report --from URL` against a real proxy (uvicorn) in front of the engine simulator."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from evaluation import cli
from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from evaluation.reports.report import report_from_stats
from proxy.app import create_app
from tests.proxy.conftest import ADMIN_TOKEN, BagOfWordsEmbedder, make_settings

QUESTIONS = ["what is a semantic cache", "what is a semantic cache please", "how do I reset my password",
             "how can I reset my password", "where is the shop", "where is the shop open on sunday morning"]
# Bag-of-words cosine: the last pair is 4 / sqrt(4 * 8) = 0.71, a near miss under threshold 0.75.


@pytest.fixture
def proxy_url(tmp_path, live_server):
    """``with proxy_url(**settings) as server``: a real proxy in front of the engine simulator."""
    policy_file = tmp_path / "policy.yaml"
    # The simulator stops at max_tokens (finish_reason length): cache those answers too.
    policy_file.write_text("defaults: {cache_truncated: true}\ncategories:\n  default: {threshold: 0.75}\n")
    with live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=0.2))) as sim:
        def start(**overrides):
            settings = make_settings(tmp_path, policy_file, upstreams=[f"{sim.url}/v1"], audits=False, **overrides)
            return live_server(create_app(settings, embedder=BagOfWordsEmbedder()))
        yield start


def _traffic(url: str, rounds: int = 3) -> None:
    misses = 0
    with httpx.Client(base_url=url, headers={"authorization": "Bearer key-a"}, timeout=10) as client:
        for _ in range(rounds):
            for q in QUESTIONS:
                r = client.post("/v1/chat/completions", json={
                    "model": "sim-model", "messages": [{"role": "user", "content": q}]})
                assert r.status_code == 200
                misses += r.headers["x-semcache-status"] == "miss"
                # A miss's store runs beside the response: let it land before the next question.
                deadline = time.monotonic() + 10
                while _stats(url)["cache"]["total"]["stores"] < misses:
                    assert time.monotonic() < deadline, "a miss was never stored"
                    time.sleep(0.02)


def _stats(url: str) -> dict:
    return httpx.get(url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()


def test_live_report_first_screen_answers_what_the_cache_saved(proxy_url, tmp_path):
    with proxy_url() as server:
        _traffic(server.url)
        stats = _stats(server.url)
        assert cli.main(["report", "--from", server.url, "--out", str(tmp_path / "rep"), "--admin-token",
                         ADMIN_TOKEN, "--price-in", "1000", "--price-out", "1000"]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    total, cat = stats["cache"]["total"], stats["cache"]["categories"]["default"]
    assert total["hits"] > 0 and total["saved_completion_tokens"] > 0
    assert sum(cat["near_miss_similarity_hist"]) > 0, "near misses happened but the histogram is flat"
    first = page[:page.index("<h2>")]  # the first screen: tiles before any section
    saved = total["saved_prompt_tokens"] + total["saved_completion_tokens"]
    for label in ("requests", "hits", "tokens saved", "money saved", "latency saved", "false-hit rate"):
        assert f"{label}<b>" in first
    assert f"tokens saved<b>{saved:,}</b>" in first
    assert f"money saved<b>${saved * 1000 / 1e6:,.2f}</b>" in first
    assert "estimate" in first and "no audits yet" in first and "counts since" in first  # the time window
    assert "Why requests missed" in page and "below threshold" in page
    # Digests only by default: no query text anywhere in the page, not even the raw dump.
    assert "semantic cache" not in page and "reset my password" not in page
    assert re.search(r"<td>#[0-9a-f]{12}</td>", page)
    # Self-contained: one inlined image, nothing fetched from anywhere.
    assert page.count("data:image/png;base64,") == 1 and "<script" not in page
    assert not re.search(r"(src|href)=[\"']?https?:", page)


def test_live_report_shows_query_text_only_when_allowed(proxy_url, tmp_path):
    with proxy_url(show_query_text=True) as server:
        _traffic(server.url, rounds=1)
        stats = _stats(server.url)
    page = report_from_stats(stats, tmp_path / "rep").read_text()
    nm = stats["cache"]["categories"]["default"]["top_near_misses"]
    assert nm and nm[0]["query"] in QUESTIONS and nm[0]["nearest"] in QUESTIONS
    assert f"<td>{nm[0]['query']}</td>" in page and "query text shown" in page


def test_near_miss_list_is_admin_only(proxy_url):
    with proxy_url() as server:
        _traffic(server.url, rounds=1)
        assert httpx.get(server.url + "/admin/stats").status_code == 401
