"""The dashboard's controller panel and the live report's controller moves, under real load.

A real proxy (uvicorn) in front of the engine simulator with two decode slots: a burst of
requests queues on the engine, its ``vllm:num_requests_waiting`` crosses the pressure target,
and the load-adaptive controller relaxes the threshold; once the burst drains it restores.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from evaluation.reports.report import report_from_stats
from proxy.app import create_app
from semcache.adaptive import PressureTargets
from tests.browser.conftest import shot_dir
from tests.proxy.conftest import ADMIN_TOKEN, BagOfWordsEmbedder, make_settings
# The relaxing policy (steps of 0.02 down to a calibrated floor of 0.85) of the live adaptive tests.
from tests.proxy.test_adaptive_live import ADMIN, POLICY

pytestmark = pytest.mark.slow



@pytest.fixture
def loaded_proxy(tmp_path, live_server):
    # Two requests decode at once, 10 ms per token: a 30-token answer takes 0.3 s, so a burst queues.
    policy = tmp_path / "policies.yaml"
    policy.write_text(POLICY)
    with live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=10.0, max_batch=2))) as sim:
        settings = make_settings(tmp_path, policy, upstreams=[f"{sim.url}/v1"], upstream_metrics_interval_s=0.1,
                                 pressure=PressureTargets(max_waiting=4), speculative_forward=False,
                                 dashboard_interval_s=0.3, audits=False)
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as server:
            yield server


def _burst(url: str, n: int = 24) -> None:
    def one(i: int) -> None:
        httpx.post(url + "/v1/chat/completions", headers={"authorization": "Bearer k"}, timeout=60, json={
            "model": "sim-model", "max_tokens": 30, "messages": [{"role": "user", "content": f"burst question {i}"}]})

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


def _poll(check, seconds: float = 20.0):
    # Polled from here: the page's CSP (no eval) rightly refuses Playwright's wait_for_function.
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result


def _marks(page) -> list[dict]:
    """The chart's marked moves: (category, threshold, tooltip reason) per marked point."""
    return page.evaluate("""() => {
      const chart = Chart.getChart('chart-threshold');
      if (!chart) return [];
      return chart.data.datasets.filter((d) => d.reasons).flatMap((d) =>
        d.data.map((y, i) => ({label: d.label, y, reason: d.reasons[i]})).filter((p) => p.y !== null));
    }""")


def test_controller_moves_are_drawn_and_reported(browser, loaded_proxy, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(loaded_proxy.url + "/dashboard")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#controller:not([hidden])")
    row = "#controller-table tr[data-category=default]"
    assert page.inner_text(row + " td:nth-child(3)") == "0.900"  # calm: the policy's threshold
    burst = threading.Thread(target=_burst, args=(loaded_proxy.url,), daemon=True)
    burst.start()
    relaxes = _poll(lambda: [m for m in _marks(page) if "relax" in (m["reason"] or "")])
    assert relaxes[0]["label"] == "default moves" and relaxes[0]["y"] < 0.9
    assert re.search(r"relax 0\.9\d\d -> 0\.8\d\d: ", relaxes[0]["reason"]), relaxes[0]["reason"]
    burst.join(timeout=60)
    # The burst drained: the controller restores, and that move is marked too.
    _poll(lambda: any("restore" in (m["reason"] or "") for m in _marks(page)), seconds=30)
    _poll(lambda: page.inner_text(row + " td:nth-child(3)") == "0.900", seconds=30)
    lines = page.evaluate("Chart.getChart('chart-threshold').data.datasets.filter((d) => !d.reasons)"
                          ".map((d) => d.data.filter((y) => y !== null))")
    assert min(lines[0]) < 0.9 and lines[0][-1] == 0.9  # the line dipped and came back
    assert max(lines[1]) > lines[1][-1] > 0  # the effective TTL (dashed) stretched under load (ttl_factor 2), then back
    # Per engine: the scrape's windowed TTFT, and the requests this proxy sent it (the burst's misses).
    engine = page.query_selector_all("#engines tbody tr")[0].query_selector_all("td")
    assert re.fullmatch(r"\d+(\.\d\d)? ms", engine[6].inner_text()), engine[6].inner_text()
    assert int(engine[7].inner_text()) >= 24
    page.screenshot(path=str(shot_dir(tmp_path) / "dashboard-controller.png"), full_page=True)
    page.close()

    # The live report lists the same moves, from the same stats.
    stats = httpx.get(loaded_proxy.url + "/admin/stats", headers=ADMIN).json()
    html = report_from_stats(stats, tmp_path / "report").read_text()
    moves = html.split("Controller moves", 1)[1]
    assert "relax" in moves and "restore" in moves and "0.900 -&gt; 0.880" in moves
    assert "No controller" not in html
