"""Live false-hit audits: a proxy in front of the engine simulator finds a planted false hit.

Real uvicorn servers: the simulator answers from an answer book, so a
paraphrase gets the same answer and a different question a different one,
as a real engine would; the proxy's audits re-ask semantic hits and judge.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from tests.proxy.conftest import ADMIN_TOKEN, BagOfWordsEmbedder, make_settings, metric_sample

pytestmark = pytest.mark.slow

POLICY = """
categories:
  default:
    threshold: 0.7
    guards: {numbers: true, negation: true}
    audit: {fraction: 1.0, answer_min_similarity: 0.8}
"""
BOOK = [
    ("how do I reset my password", "Open Settings, then Security, then Reset password."),
    ("how can I reset my password", "Open Settings, then Security, then Reset password."),
    ("how do I reset my password on the router",
     "Hold the router's reset button for 30 seconds, then log in as admin with the code 4417."),
]
ORIGINAL, PARAPHRASE, OTHER = (q for q, _ in BOOK)


class Live:
    def __init__(self, sim, proxy):
        self.sim, self.proxy = sim, proxy
        self.http = httpx.Client(base_url=proxy.url, headers={"authorization": "Bearer key-a"}, timeout=30)

    def ask(self, content: str) -> httpx.Response:
        return self.http.post("/v1/chat/completions",
                              json={"model": "sim-model", "messages": [{"role": "user", "content": content}]})

    def metric(self, name: str, **labels: str) -> float:
        return metric_sample(self.http.get("/metrics").text, name, **labels)

    def sim_requests(self) -> float:
        return metric_sample(httpx.get(self.sim.url + "/metrics").text, "vllm:request_success_total")

    def audits(self) -> dict:
        stats = self.http.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        return stats["proxy"]["audits"]

    def wait_for(self, check, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.02)


@pytest.fixture
def live(tmp_path, live_server):
    book = tmp_path / "book.jsonl"
    book.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in BOOK))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    started: list = []

    def start(decode_ms: float = 1.0, max_batch: int = 32, **overrides):
        sim = live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=decode_ms,
                                                     default_max_tokens=40, max_batch=max_batch,
                                                     answers_file=book)))
        sim.__enter__()
        settings = make_settings(tmp_path, policy, upstreams=[f"{sim.url}/v1"], speculative_forward=False,
                                 upstream_metrics_interval_s=0.1, **overrides)
        proxy = live_server(create_app(settings, embedder=BagOfWordsEmbedder()))
        proxy.__enter__()
        started.append((sim, proxy))
        h = Live(sim, proxy)
        h.wait_for(lambda: h.http.get("/readyz").status_code == 200, 30)
        return h

    yield start
    for sim, proxy in started:
        proxy.__exit__(None)
        sim.__exit__(None)


def test_audit_finds_a_planted_false_hit_and_quarantines_it(live, tmp_path):
    h = live()
    first = h.ask(ORIGINAL)
    assert first.headers["x-semcache-status"] == "miss"
    h.wait_for(lambda: h.metric("semcache_stores_total", stored="yes") >= 1)

    wrong = h.ask(OTHER)  # similar wording, another question: the planted false hit
    assert wrong.headers["x-semcache-status"] == "hit"
    assert "Settings" in wrong.json()["choices"][0]["message"]["content"]
    h.wait_for(lambda: h.metric("semcache_audits_total", outcome="false_hit") >= 1)

    again = h.ask(OTHER)  # quarantined for this text; the audit's fresh answer now serves it
    assert again.headers["x-semcache-status"] == "hit"
    assert "4417" in again.json()["choices"][0]["message"]["content"]
    assert again.headers["x-semcache-entry"] != wrong.headers["x-semcache-entry"]

    right = h.ask(PARAPHRASE)  # a true paraphrase: the audit agrees, nothing is quarantined
    assert right.headers["x-semcache-status"] == "hit"
    h.wait_for(lambda: h.metric("semcache_audits_total", outcome="agree") >= 1)
    assert h.ask(PARAPHRASE).json()["choices"][0]["message"]["content"].startswith("Open Settings")

    # Three semantic hits (OTHER, PARAPHRASE twice) were each audited or skipped: wait for the
    # last, so the counts below cannot move between two reads.
    h.wait_for(lambda: (lambda e: e["audited"] + sum(e["skipped"].values()))(h.audits()["default"]) >= 3)
    stats = h.http.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    est = stats["proxy"]["audits"]["default"]
    assert est["audited"] >= 2 and est["audit_false_hits"] == 1
    assert est["lower"] <= est["false_hit_rate"] <= est["upper"]
    assert h.metric("semcache_false_hit_rate", category="default", bound="upper") == pytest.approx(est["upper"])
    # The audits joined the lookups they judged: the what-if at the current threshold counts them.
    now = h.http.post("/admin/whatif", json={"category": "default"},
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()["baseline"]
    assert now["audited"] == est["audited"] and now["audited_false"] == 1

    from evaluation.reports.report import report_from_stats

    page = report_from_stats(stats, tmp_path / "report").read_text()
    assert f"{est['false_hit_rate']:.3f} [{est['lower']:.3f}, {est['upper']:.3f}]" in page and "1 false of" in page


def test_audits_never_delay_the_hit(live):
    h = live(decode_ms=60.0)  # an audit's upstream call takes ~2.4 s (40 tokens)
    h.ask(ORIGINAL)
    h.wait_for(lambda: h.metric("semcache_stores_total", stored="yes") >= 1, 30)
    started = time.monotonic()
    hit = h.ask(OTHER)
    took = time.monotonic() - started
    assert hit.headers["x-semcache-status"] == "hit"
    assert took < 1.0, f"the hit waited for its audit ({took:.2f}s)"
    assert h.metric("semcache_audits_total", outcome="false_hit") == 0  # still running
    h.wait_for(lambda: h.metric("semcache_audits_total", outcome="false_hit") >= 1, 30)


def test_a_busy_engine_gets_no_audit(live):
    h = live(decode_ms=100.0, max_batch=1)
    h.ask(ORIGINAL)  # ~4 s at 100 ms a token
    h.wait_for(lambda: h.metric("semcache_stores_total", stored="yes") >= 1, 30)
    # Two long requests straight to the engine: one runs, one waits (another client's load).
    busy = [threading.Thread(target=lambda: httpx.post(
        h.sim.url + "/v1/completions", json={"model": "sim-model", "prompt": "x", "max_tokens": 30}, timeout=60))
        for _ in range(2)]
    for t in busy:
        t.start()
    h.wait_for(lambda: metric_sample(httpx.get(h.sim.url + "/metrics").text, "vllm:num_requests_waiting") >= 1)
    time.sleep(0.3)  # let the proxy's 0.1 s scrape see the queue
    before = h.sim_requests()
    hit = h.ask(OTHER)
    assert hit.headers["x-semcache-status"] == "hit"
    assert h.metric("semcache_audits_total", outcome="skipped") == 1
    assert h.audits()["default"]["skipped"] == {"engine busy": 1}
    for t in busy:
        t.join()
    assert h.sim_requests() == before + 2  # only the two direct requests ran: no audit reached it


def test_audits_off_by_setting(live):
    h = live(audits=False)
    h.ask(ORIGINAL)
    h.wait_for(lambda: h.metric("semcache_stores_total", stored="yes") >= 1)
    assert h.ask(OTHER).headers["x-semcache-status"] == "hit"
    time.sleep(0.2)
    assert h.metric("semcache_audits_total") == 0
    assert h.audits() is None


def test_a_no_store_request_keeps_its_audited_answer_out_of_the_cache(live):
    """Regression: an audit that found a false hit stored the fresh answer even though the caller
    had sent ``Cache-Control: no-store`` (the quarantine still applies)."""
    h = live()
    h.ask(ORIGINAL)
    h.wait_for(lambda: h.metric("semcache_stores_total", stored="yes") >= 1)
    wrong = h.http.post("/v1/chat/completions", headers={"cache-control": "no-store"},
                        json={"model": "sim-model", "messages": [{"role": "user", "content": OTHER}]})
    assert wrong.headers["x-semcache-status"] == "hit"
    h.wait_for(lambda: h.metric("semcache_audits_total", outcome="false_hit") >= 1)
    again = h.ask(OTHER)  # quarantined for this text, and nothing stored for it: a miss
    assert again.headers["x-semcache-status"] == "miss"
