"""The load model: what each engine's Prometheus metrics say about its current state.

One concept read by several users: upstream routing and speculation
(``proxy/upstream/load.py``), IC-Cache's router (:mod:`semcache.iccache.router`)
and load-adaptive policies (:mod:`semcache.adaptive.pressure`), so all of
them see the same figures.

The library does not fetch anything: a scraper (``proxy/upstream/engine_load.py``)
reads an engine's ``/metrics`` (vLLM names) into :class:`EngineMetrics`, a
raw sample with cumulative histogram sums, and feeds it to
:meth:`LoadTracker.observe`. The tracker turns two consecutive samples into a
windowed :class:`EngineLoad` (mean TTFT and end-to-end latency of the requests
that finished in between) and estimates what a new request would wait.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape of an engine: gauges now, histogram sums/counts since it started."""

    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    e2e_sum: float = 0.0
    e2e_count: float = 0.0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """An engine's load as the router sees it."""

    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    ttft_s: float | None = None
    """Mean time to first token over the last scrape window (None: nothing finished)."""
    e2e_s: float | None = None
    at: float = 0.0


def _window_mean(cur_sum: float, cur_count: float, prev_sum: float, prev_count: float) -> float | None:
    count = cur_count - prev_count
    if count <= 0:
        return None
    return max(0.0, (cur_sum - prev_sum) / count)


class LoadTracker:
    """Latest load per model name; thread-safe, updated by scrapers, read by the router."""

    def __init__(self, smoothing: float = 0.5):
        self.smoothing = smoothing
        """EWMA weight of a new window's latency (1 = only the newest window)."""
        self._raw: dict[str, EngineMetrics] = {}
        self._load: dict[str, EngineLoad] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, sample: EngineMetrics) -> EngineLoad:
        """Fold a new scrape of ``model`` in and return its updated load."""
        with self._lock:
            prev_raw = self._raw.get(model)
            prev = self._load.get(model)
            if prev_raw is None or sample.ttft_count < prev_raw.ttft_count:
                # First scrape, or the engine restarted (counters reset): whole-life means.
                prev_raw = EngineMetrics()
            ttft = _window_mean(sample.ttft_sum, sample.ttft_count, prev_raw.ttft_sum, prev_raw.ttft_count)
            e2e = _window_mean(sample.e2e_sum, sample.e2e_count, prev_raw.e2e_sum, prev_raw.e2e_count)
            if prev is not None:
                ttft = self._smooth(prev.ttft_s, ttft)
                e2e = self._smooth(prev.e2e_s, e2e)
            load = EngineLoad(waiting=sample.waiting, running=sample.running, kv_usage=sample.kv_usage,
                              ttft_s=ttft, e2e_s=e2e, at=sample.at)
            self._raw[model], self._load[model] = sample, load
            return load

    def _smooth(self, old: float | None, new: float | None) -> float | None:
        if old is None or new is None:
            return new if new is not None else old
        return self.smoothing * new + (1 - self.smoothing) * old

    def set(self, model: str, load: EngineLoad) -> None:
        """Replace a model's load outright (tests, or a caller with its own measurements)."""
        with self._lock:
            self._load[model] = load

    def get(self, model: str) -> EngineLoad:
        return self._load.get(model, EngineLoad())

    def expected_latency_s(self, model: str, nominal_s: float) -> float:
        """What a request sent now would take: its own service time plus queueing.

        Service time is the measured mean end-to-end latency (``nominal_s``
        until one is measured); a request joins ``waiting`` others that drain
        ``running``-at-a-time, so it queues about waiting / running services.
        """
        load = self.get(model)
        service = load.e2e_s if load.e2e_s is not None else nominal_s
        return service * (1.0 + load.waiting / max(1.0, load.running))
