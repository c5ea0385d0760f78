"""The what-if panel in a real browser: predict, apply (the live proxy changes), roll back.

Set ``SEMCACHE_SCREENSHOTS=docs`` to (re)write the screenshots under ``docs/``.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.browser.conftest import proxy_over_sim, shot_dir
from tests.browser.test_dashboard import _shot
from tests.proxy.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
STORED = ["what is the capital of italy", "how do I sort a list in python", "how tall is mount everest",
          "faq: opening hours of the shop"]
# Asked with Cache-Control: no-store, so the entries stay those the lookup log saw.
ASKED = ["italy capital", "python list sort order", "everest height", "what is the capital of italy",
         "what is the capital of italy please", "sort a list in python", "mount everest", "faq: shop opening hours"]


@pytest.fixture
def proxy(tmp_path, live_server):
    policy = ("# tuned by hand\ncategories:\n  faq: {threshold: 0.9, match: {keywords: [faq]}}\n"
              "  default: {threshold: 0.8, ttl_seconds: 3600}\n")
    with proxy_over_sim(live_server, tmp_path, policy, audits=False, dashboard_interval_s=0.5) as server:
        yield server


def _ask_all(client: httpx.Client, store: bool) -> list[str]:
    out = []
    for text in STORED if store else ASKED:
        r = client.post("/v1/chat/completions", headers={} if store else {"cache-control": "no-store"},
                        json={"model": "sim-model", "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200, r.text
        out.append(r.headers["x-semcache-status"])
    return out


def _wait_text(page, selector: str, check, seconds: float = 15.0) -> str:
    # Polled from here: the page's CSP (no eval) rightly refuses Playwright's wait_for_function.
    deadline = time.monotonic() + seconds
    while True:
        text = page.inner_text(selector)
        if check(text):
            return text
        assert time.monotonic() < deadline, f"{selector} stayed at {text!r}"
        time.sleep(0.1)


def test_whatif_prediction_apply_and_rollback_in_the_browser(browser, proxy, tmp_path):
    client = httpx.Client(base_url=proxy.url, headers={"authorization": "Bearer key-a"}, timeout=20)
    assert _ask_all(client, store=True) == ["miss"] * len(STORED)
    before = _ask_all(client, store=False)
    assert before.count("hit") == 2  # the exact repeat and the near-exact paraphrase

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(proxy.url + "/dashboard")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#board:not([hidden])")
    _wait_text(page, "#wi-hits-now", lambda t: t.isdigit())
    assert page.input_value("#wi-category") == "faq"
    page.select_option("#wi-category", "default")
    _wait_text(page, "#wi-values-now", lambda t: t.startswith("0.8 / 3600 s"))
    assert page.inner_text("#wi-lookups") == "10"  # the default category's lookups: 3 seeds, 7 asked

    page.fill("#wi-threshold", "0.5")
    page.click("#wi-predict")
    _wait_text(page, "#wi-values-new", lambda t: t.startswith("0.5 /"))
    shown = {k: page.inner_text(f"#wi-{k}") for k in ("hits-now", "hits-new", "rate-new", "changes")}
    # The same question asked of the server on the same log gives the same numbers.
    server = httpx.post(proxy.url + "/admin/whatif", headers=ADMIN, json={"category": "default", "threshold": 0.5})
    pred, base = server.json()["prediction"], server.json()["baseline"]
    assert shown["hits-now"] == str(base["hits"]) == "2"
    assert shown["hits-new"] == str(pred["hits"]) and pred["hits"] > base["hits"]
    assert shown["rate-new"] == f"{100 * pred['hit_rate']:.1f}%"
    assert shown["changes"] == f"{pred['new_hits']} / {pred['lost_hits']} / {pred['undetermined']}"
    assert "unaudited new hits" in page.inner_text("#wi-note")
    page.locator("#whatif").screenshot(path=str(shot_dir(tmp_path) / "whatif.png"))

    page.click("#wi-apply")
    _wait_text(page, "#wi-message", lambda t: t.startswith("Applied: version 2"))
    after = _ask_all(client, store=False)
    assert after[:-1].count("hit") == pred["hits"]  # the live proxy decides as predicted (faq is last)
    assert "threshold: 0.5" in proxy.policy_file.read_text()
    _wait_text(page, "#wi-history tbody", lambda t: "default: threshold=0.5" in t)

    page.click("#wi-history button.wi-rollback")  # the only one: back to version 1
    _wait_text(page, "#wi-message", lambda t: t.startswith("Applied: version 3 (rollback to version 1)"))
    assert _ask_all(client, store=False) == before  # decisions as before the change
    assert proxy.policy_file.read_text().startswith("# tuned by hand")
    _wait_text(page, "#wi-values-now", lambda t: t == "0.8 / 3600 s / numbers, negation, diff")
    page.uncheck("#wi-g-negation")  # a guard switch, predicted the same way
    page.click("#wi-predict")
    _wait_text(page, "#wi-values-new", lambda t: t == "0.8 / 3600 s / numbers, diff")
    server = httpx.post(proxy.url + "/admin/whatif", headers=ADMIN,
                        json={"category": "default", "guards": {"negation": False}}).json()["prediction"]
    assert page.inner_text("#wi-hits-new") == str(server["hits"])
    _shot(page, tmp_path, "whatif-history.png")
    page.close()
    client.close()

