"""Did one request stall the proxy? A proxy in its own process and a ``/healthz`` prober.

``/healthz`` does no work, so its latency is the time the proxy's event loop
was busy with something else. The proxy must run in another process than the
prober: a stall that holds the GIL (a regex, a tokenizer) would freeze a
prober thread too and hide itself. Used by ``tests/adversarial/`` and
``evaluation/bench_stall.py``::

    with proxy_process(upstream, workdir) as proxy, HealthProber(proxy.url) as probe:
        send_something_hostile(proxy.url)
    probe.max_s, probe.count, probe.failures
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx

from evaluation.systems import Process


def proxy_process(upstream: str, workdir: Path, *, tree: Path | None = None,
                  env: dict[str, str] | None = None) -> Process:
    """``python -m proxy serve`` from source tree ``tree`` (default: this one) in a child process.

    Real CLI, real uvicorn; the tree's default policy file and a fresh SQLite
    store under ``workdir``; ``env`` adds ``SEMCACHE_*`` settings.
    """
    tree = Path(tree or Path(__file__).resolve().parents[1])
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(tree), "SEMCACHE_UPSTREAM_METRICS_INTERVAL_S": "0", **(env or {})}
    return Process([sys.executable, "-m", "proxy", "serve", "--upstream", upstream, "--port", "{port}",
                    "--policies", str(tree / "policies/default.yaml"), "--sqlite-path", str(workdir / "cache.db"),
                    "--log-level", "warning"], "/readyz", workdir / "proxy.log", env=env)


class HealthProber:
    """Polls ``GET {url}/healthz`` from its own thread every ``interval_s``; records latencies."""

    def __init__(self, url: str, interval_s: float = 0.01, timeout_s: float = 30.0):
        self.url = url.rstrip("/") + "/healthz"
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-prober", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                self.latencies.append(elapsed)
                if not ok:
                    self.failures += 1
                self._stop.wait(self.interval_s)

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def max_s(self) -> float:
        return max(self.latencies, default=0.0)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def __enter__(self) -> HealthProber:
        self._thread.start()
        time.sleep(self.interval_s * 3)  # a few probes before the load starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1)
