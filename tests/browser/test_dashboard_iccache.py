"""The dashboard's IC-Cache columns: offload and mean quality per category, under live traffic.

A real proxy (real MiniLM embedder) in front of two engine simulators, a large and a small
model, with priors that send every request with examples to the small one.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.proxy.test_iccache_proxy import (ADMIN, ALWAYS_SMALL, PARAPHRASE, chat, iccache_yaml, seed_examples,
                                            start_proxy)
from tests.proxy.test_iccache_proxy import engines  # noqa: F401 (the fixture: a large and a small simulator)

pytestmark = pytest.mark.slow


def _cell(page, column: int) -> str:
    return page.inner_text(f"#categories tr[data-category=default] td:nth-child({column})")


def _poll(check, seconds: float = 20.0) -> None:
    # Polled from here: the page's CSP (no eval) rightly refuses Playwright's wait_for_function.
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_iccache_columns_fill_and_a_nan_quality_keeps_the_stream_alive(browser, tmp_path, live_server, engines):
    large, small = engines
    seed_examples(tmp_path, live_server, large.url)  # the large model's answers become examples
    with start_proxy(tmp_path, live_server, large.url, small.url, iccache_yaml(**ALWAYS_SMALL),
                     dashboard_interval_s=0.3) as proxy, httpx.Client(base_url=proxy.url, timeout=60) as client:
        answer = chat(client, PARAPHRASE)
        assert answer.headers["x-semcache-route"] == "small"
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(proxy.url + "/dashboard")
        page.fill("#token", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_selector("#categories tr[data-category=default]")
        assert page.is_visible("#categories th.ic")
        # Offloaded, not scored yet: the proxy's mean quality is NaN, sent as null and shown as "-".
        _poll(lambda: _cell(page, 13).startswith("100.0% of 1"))
        assert _cell(page, 14) == "-"
        lookups = int(page.inner_text("#t-lookups"))
        chat(client, "How can I track the delivery of my package?")  # a hit: the stream still updates
        _poll(lambda: int(page.inner_text("#t-lookups")) > lookups)
        assert page.inner_text("#status") == "live"
        # Feedback scores the small answer: its quality shows.
        ok = client.post("/v1/semcache/feedback", json={"correct": True, "response_id": answer.json()["id"]},
                         headers={"authorization": "Bearer k1"})
        assert ok.status_code == 200
        _poll(lambda: _cell(page, 14) == "1.00")
        page.close()
