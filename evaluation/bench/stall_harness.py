"""Did one request stall the proxy? A proxy in its own process and a ``/healthz`` prober.

``/healthz`` does no work, so its latency is the time the proxy's event loop
was busy with something else. Proxy, prober and load generator each run in a
process of their own: a stall that holds the GIL (a regex, a tokenizer)
would freeze a prober thread in the proxy's process and hide itself, and a
load generator's own work would delay a prober thread beside it. Used by ``tests/adversarial/`` and
``evaluation/bench/bench_stall.py``::

    with proxy_process(upstream, workdir) as proxy, HealthProber(proxy.url) as probe:
        send_something_hostile(proxy.url)
    probe.max_s, probe.count, probe.failures
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import httpx

from evaluation.replay.systems import Process


def proxy_process(upstream: str, workdir: Path, *, tree: Path | None = None,
                  env: dict[str, str] | None = None) -> Process:
    """``python -m proxy serve`` from source tree ``tree`` (default: this one) in a child process.

    Real CLI, real uvicorn; the tree's default policy file and a fresh SQLite
    store under ``workdir``; ``env`` adds ``SEMCACHE_*`` settings.
    """
    tree = Path(tree or Path(__file__).resolve().parents[2])
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(tree), "SEMCACHE_UPSTREAM_METRICS_INTERVAL_S": "0", **(env or {})}
    # -P: no current directory on sys.path, so PYTHONPATH alone picks the tree.
    return Process([sys.executable, "-P", "-m", "proxy", "serve", "--upstream", upstream, "--port", "{port}",
                    "--policies", str(tree / "policies/default.yaml"), "--sqlite-path", str(workdir / "cache.db"),
                    "--log-level", "warning"], "/readyz", workdir / "proxy.log", env=env)


def _probe(url: str, interval_s: float, timeout_s: float, ready, stop, results) -> None:
    """The prober process: GET ``url`` until ``stop`` is set, then send (latencies, failures, worst window)."""
    latencies: list[float] = []
    failures, worst, worst_window = 0, 0.0, (0.0, 0.0)
    with httpx.Client(timeout=timeout_s) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            if elapsed > worst:
                worst, worst_window = elapsed, (started, started + elapsed)
            latencies.append(elapsed)
            failures += not ok
            ready.set()
            stop.wait(interval_s)
    results.send((latencies, failures, worst_window))


class HealthProber:
    """Polls ``GET {url}/healthz`` every ``interval_s`` from a process of its own; records latencies.

    A process, not a thread: whatever this process does (generating fuzz
    cases, serving an in-process engine) must not delay the probes either.
    """

    def __init__(self, url: str, interval_s: float = 0.01, timeout_s: float = 30.0):
        self.url = url.rstrip("/") + "/healthz"
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latencies: list[float] = []
        self.failures = 0
        self.worst_window = (0.0, 0.0)  # perf_counter() start and end of the slowest probe (system-wide clock)
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self._results, child_end = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_probe, name="healthz-prober", daemon=True,
                                    args=(self.url, interval_s, timeout_s, self._ready, self._stop, child_end))

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
        self._process.start()
        deadline = time.monotonic() + 60
        while not self._ready.wait(0.1):  # until the first probe has answered: then the load may start
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the prober of {self.url} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            if self._results.poll(self.timeout_s + 5):
                self.latencies, self.failures, self.worst_window = self._results.recv()
        except EOFError:  # the prober died: nothing measured
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
