"""Speculative forwarding: a miss's upstream call starts before the cache decides; a hit drops it.

Live uvicorn servers (the engine simulator and the proxy) so that a dropped
call really disconnects and the simulated engine really aborts it, as vLLM does.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from proxy.api.speculate import Speculation
from proxy.upstream.pool import Upstream
from tests.proxy.conftest import ADMIN_TOKEN, BagOfWordsEmbedder, make_settings, metric_sample

pytestmark = pytest.mark.slow


class Live:
    def __init__(self, sim, proxy):
        self.sim, self.proxy = sim, proxy
        self.http = httpx.Client(base_url=proxy.url, headers={"authorization": "Bearer key-a"}, timeout=30)

    def ask(self, content: str, **extra) -> httpx.Response:
        body = {"model": "sim-model", "messages": [{"role": "user", "content": content}], **extra}
        return self.http.post("/v1/chat/completions", json=body)

    def spec(self, outcome: str) -> float:
        return metric_sample(self.http.get("/metrics").text, "semcache_speculative_forwards_total", outcome=outcome)

    def stored(self) -> bool:
        """The first answer is in the cache (stores run beside the response)."""
        return metric_sample(self.http.get("/metrics").text, "semcache_stores_total", stored="yes") >= 1

    def sim_metric(self, name: str, **labels: str) -> float:
        return metric_sample(httpx.get(self.sim.url + "/metrics").text, name, **labels)

    def wait_for(self, check, seconds: float = 3.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.02)


@pytest.fixture
def live(tmp_path, policy_file, live_server):
    def start(decode_ms: float = 20.0, max_batch: int = 32, **overrides):
        sim = live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=decode_ms,
                                                     default_max_tokens=40, max_batch=max_batch)))
        sim.__enter__()
        settings = make_settings(tmp_path, policy_file, upstreams=[f"{sim.url}/v1"], **overrides)
        proxy = live_server(create_app(settings, embedder=BagOfWordsEmbedder()))
        proxy.__enter__()
        started.append((sim, proxy))
        h = Live(sim, proxy)
        h.wait_for(lambda: h.http.get("/readyz").status_code == 200, 30)
        return h

    started: list = []
    yield start
    for sim, proxy in started:
        proxy.__exit__(None)
        sim.__exit__(None)


def test_a_miss_takes_the_upstream_call_started_before_the_lookup(live):
    h = live()
    r = h.ask("how do tides depend on the moon")
    assert r.status_code == 200 and r.headers["x-semcache-status"] == "miss"
    assert r.json()["choices"][0]["message"]["content"]
    assert h.spec("used") == 1 and h.spec("dropped") == 0
    assert h.sim_metric("vllm:request_success_total", finished_reason="abort") == 0


def test_a_semantic_hit_drops_the_call_and_the_engine_aborts_it(live):
    h = live(decode_ms=50.0)  # an upstream answer takes ~2 s
    first = h.ask("what is the capital city of france", max_tokens=40)
    assert first.headers["x-semcache-status"] == "miss"
    h.wait_for(h.stored)
    t0 = time.perf_counter()
    hit = h.ask("what is the capital city of france please", max_tokens=40)
    assert time.perf_counter() - t0 < 1.0, "a hit must not wait for the speculative call"
    assert hit.headers["x-semcache-status"] == "hit"
    assert hit.json()["choices"] == first.json()["choices"]
    assert h.spec("dropped") == 1
    h.wait_for(lambda: h.sim_metric("vllm:request_success_total", finished_reason="abort") == 1)
    h.wait_for(lambda: h.sim_metric("vllm:num_requests_running") == 0)
    assert metric_sample(h.http.get("/metrics").text, "semcache_upstream_in_flight") == 0


def test_an_exact_repeat_is_not_raced(live):
    h = live()
    h.ask("an exact repeat question")
    h.wait_for(h.stored)
    used, dropped = h.spec("used"), h.spec("dropped")
    assert h.ask("an exact repeat question").headers["x-semcache-status"] == "hit"
    assert (h.spec("used"), h.spec("dropped")) == (used, dropped)


def test_no_speculation_while_the_engine_is_busy(live):
    h = live(decode_ms=50.0, speculative_max_in_flight=1)
    slow = threading.Thread(target=h.ask, args=("a slow request holding the engine",), kwargs={"max_tokens": 30})
    slow.start()
    h.wait_for(lambda: h.sim_metric("vllm:num_requests_running") == 1)
    assert h.ask("another new question", max_tokens=2).headers["x-semcache-status"] == "miss"
    slow.join()
    assert h.spec("used") == 1  # only the first, which found the engine idle


def test_no_speculation_while_the_engine_has_a_queue_from_other_clients(live):
    """Another proxy replica's load shows only in the engine's own queue (vllm:num_requests_waiting)."""
    h = live(decode_ms=40.0, max_batch=1, upstream_metrics_interval_s=0.05)
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "elsewhere"}], "max_tokens": 25}
    others = [threading.Thread(target=httpx.post, args=(h.sim.url + "/v1/chat/completions",),
                               kwargs={"json": body, "timeout": 30}) for _ in range(2)]
    for t in others:
        t.start()
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def engine_waiting() -> float | None:
        return h.http.get("/admin/stats", headers=admin).json()["proxy"]["upstreams"][0]["engine"]["waiting"]

    h.wait_for(lambda: (engine_waiting() or 0) >= 1)
    assert h.ask("a new question while others queue", max_tokens=2).headers["x-semcache-status"] == "miss"
    assert h.spec("used") == 0  # this proxy had nothing in flight, but the engine had a queue
    for t in others:
        t.join()
    h.wait_for(lambda: engine_waiting() == 0)
    assert h.ask("a new question on an idle engine", max_tokens=2).headers["x-semcache-status"] == "miss"
    assert h.spec("used") == 1


def test_speculation_off_forwards_after_the_lookup(live):
    h = live(speculative_forward=False)
    assert h.ask("a question without racing").headers["x-semcache-status"] == "miss"
    assert h.spec("used") == 0 and h.spec("dropped") == 0


def _stream(h: Live, content: str) -> tuple[httpx.Headers, str]:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": content}], "stream": True,
            "max_tokens": 40}
    with h.http.stream("POST", "/v1/chat/completions", json=body) as r:
        return r.headers, r.read().decode()


def test_streams_take_or_drop_the_opened_upstream_stream(live):
    h = live(decode_ms=50.0)
    headers, miss = _stream(h, "stream about the orbit of mars")
    assert headers["x-semcache-status"] == "miss" and miss.rstrip().endswith("data: [DONE]")
    assert h.spec("used") == 1
    h.wait_for(h.stored)
    direct = httpx.post(h.sim.url + "/v1/chat/completions", json={
        "model": "sim-model", "messages": [{"role": "user", "content": "stream about the orbit of mars"}],
        "max_tokens": 40}).json()
    relayed = "".join(__import__("json").loads(line[6:])["choices"][0]["delta"].get("content", "")
                      for line in miss.splitlines() if line.startswith("data: {") and '"choices":[{' in line)
    assert relayed == direct["choices"][0]["message"]["content"]
    headers, hit = _stream(h, "stream about the orbit of mars please")
    assert headers["x-semcache-status"] == "hit" and hit.rstrip().endswith("data: [DONE]")
    assert h.spec("dropped") == 1
    h.wait_for(lambda: h.sim_metric("vllm:request_success_total", finished_reason="abort") >= 1)
    h.wait_for(lambda: metric_sample(h.http.get("/metrics").text, "semcache_upstream_in_flight") == 0)


class _Opened:
    def __init__(self):
        self.closed = False

    async def aclose(self):
        self.closed = True


async def test_dropping_releases_an_opened_stream_and_cancels_a_running_call():
    released = []
    opened = _Opened()

    async def open_now():
        return opened

    done = Speculation(Upstream.parse("http://e/v1"), open_now(), release=lambda: released.append(1))
    await asyncio.sleep(0)
    await done.drop()
    assert opened.closed and released == [1]

    cancelled = asyncio.Event()

    async def forever():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = Speculation(Upstream.parse("http://e/v1"), forever(), release=lambda: released.append(2))
    await asyncio.sleep(0)
    await running.drop()
    assert cancelled.is_set() and released == [1]  # nothing was held: no release
    taken = Speculation(Upstream.parse("http://e/v1"), open_now())
    assert await taken.take() is opened
    await taken.drop()  # a taken call belongs to its taker: drop leaves it alone
