"""The live dashboard in a real browser, against a real proxy in front of the engine simulator.

Set ``SEMCACHE_SCREENSHOTS=docs`` to (re)write the screenshots under ``docs/``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import proxy_over_sim, shot_dir
from tests.proxy.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(tmp_path, live_server):
    policy = "categories:\n  faq: {threshold: 0.7, match: {keywords: [faq]}}\n  default: {threshold: 0.7}\n"
    with proxy_over_sim(live_server, tmp_path, policy, dashboard_interval_s=0.3) as server:
        yield server


def _traffic(url: str, stop: threading.Event) -> None:
    questions = ["what is a semantic cache", "what is a semantic cache please", "how do I reset my password",
                 "how can I reset my password", "faq: opening hours of the shop", "faq: shop opening hours",
                 # bag-of-words cosine 4 / sqrt(4 * 9) = 0.67: a near miss under threshold 0.7
                 "where is the shop", "where is the shop open on sunday morning please"]
    with httpx.Client(base_url=url, headers={"authorization": "Bearer key-a"}, timeout=10) as client:
        i = 0
        while not stop.is_set() and i < 400:
            client.post("/v1/chat/completions", json={"model": "sim-model", "messages": [
                {"role": "user", "content": questions[i % len(questions)]}]})
            i += 1
            time.sleep(0.02)


def _wait_number(page, selector: str, at_least: int, seconds: float = 20.0) -> None:
    # Polled from here: the page's CSP (no eval) rightly refuses Playwright's wait_for_function.
    deadline = time.monotonic() + seconds
    while True:
        text = page.inner_text(selector).replace(",", "")
        if text.isdigit() and int(text) >= at_least:
            return
        assert time.monotonic() < deadline, f"{selector} stayed at {text!r}"
        time.sleep(0.1)


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(shot_dir(tmp_path) / name), full_page=True)


def test_wrong_token_is_refused_and_kept_nowhere(browser, proxy):
    page = browser.new_page()
    page.goto(proxy.url + "/dashboard")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "Wrong token" in page.inner_text("#login-error")
    assert page.is_hidden("#board")
    assert page.evaluate("sessionStorage.getItem('semcache-admin-token')") is None
    assert "token" not in page.url
    page.close()


def test_tiles_fill_under_live_traffic(browser, proxy, tmp_path):
    stop = threading.Event()
    driver = threading.Thread(target=_traffic, args=(proxy.url, stop), daemon=True)
    driver.start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(proxy.url + "/dashboard")
        page.fill("#token", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#board:not([hidden])")
        assert page.inner_text("#status") == "live"
        # The token went into session storage and a header, never the URL.
        assert page.evaluate("sessionStorage.getItem('semcache-admin-token')") == ADMIN_TOKEN
        assert ADMIN_TOKEN not in page.url
        _wait_number(page, "#t-lookups", 20)
        page.wait_for_selector("#categories tr[data-category=default]")
        _wait_number(page, "#t-hits", 5)
        # What the cache saved and why requests missed (#15 items 1 and 3).
        _wait_number(page, "#t-tokens-saved", 1)
        assert page.inner_text("#t-latency-saved").endswith(" s")
        # Money first: traffic goes on, and tokens read later can only be more, never fewer
        # (read the other way round, a refresh between the two reads failed this in a CI run).
        money = float(page.inner_text("#t-money-saved").lstrip("$"))
        tokens_text = page.inner_text("#t-tokens-saved").replace(",", "")
        assert money > 0 and money <= int(tokens_text) * 10.0 / 1e6 + 1e-4  # default prices: $2.5/M in, $10/M out
        assert "$2.5/M in, $10/M out" in page.inner_text("#t-money-label")
        page.wait_for_selector("#near-misses tbody tr")
        near = page.inner_text("#near-misses tbody")
        assert "#" in near and "sunday" not in near  # digests only: show_query_text is off by default
        assert "digests only" in page.inner_text("#near-miss-privacy")
        why = page.inner_text("#categories tr[data-category=default] td:last-child")
        assert "below threshold" in why or "audit" in why, why
        engines = page.inner_text("#engines tbody")
        assert "/v1" in engines and "sim" not in page.inner_text("#login-error")
        # Audited hits judged false are drawn where they were served (a third series): the simulator
        # answers each wording differently, so audits of paraphrase hits find false hits.
        deadline = time.monotonic() + 20
        while not (false_hits := page.evaluate(
                "Chart.getChart('chart-similarity').data.datasets[2].data.reduce((a, b) => a + b, 0)")):
            assert time.monotonic() < deadline, "no audited false hit drawn"
            time.sleep(0.1)
        assert page.evaluate("Chart.getChart('chart-similarity').data.datasets[2].label") == "audited false hits"
        audits = httpx.get(proxy.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        assert false_hits <= sum(a["audit_false_hits"] for a in audits["proxy"]["audits"].values())
        time.sleep(1.0)  # a few more points on the hit-rate chart
        _shot(page, tmp_path, "dashboard.png")
        # Signing out forgets the token.
        page.click("#logout")
        assert page.evaluate("sessionStorage.getItem('semcache-admin-token')") is None
        assert page.is_visible("#login")
        page.close()
    finally:
        stop.set()
        driver.join(timeout=20)


def test_report_page_renders_from_the_live_proxy(browser, proxy, tmp_path):
    """`semcache report --from URL`: a self-contained file; its first screen shows the savings."""
    from evaluation.reports.report import report_from_stats

    stop = threading.Event()
    driver = threading.Thread(target=_traffic, args=(proxy.url, stop), daemon=True)
    driver.start()
    time.sleep(3.0)  # a few rounds of the questions
    stop.set()
    driver.join(timeout=20)
    stats = httpx.get(proxy.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    path = report_from_stats(stats, tmp_path / "report")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
    page.goto(path.as_uri())
    tiles = page.inner_text(".tiles")
    assert "tokens saved" in tiles and "money saved" in tiles and "latency saved" in tiles
    assert page.evaluate("document.images[0].naturalWidth") > 500  # the inlined plot decoded offline
    _shot(page, tmp_path, "report.png")
    page.close()
