"""How long Python's garbage collector held the event loop: ``semcache_gc_pause_seconds{generation}``.

A collection runs on whatever thread allocates, usually the event loop's,
and nothing is answered meanwhile. The 10-minute fuzz run of issue #14
found full (generation 2) collections of 40-103 ms every few seconds to be
the last ``/healthz`` stalls; ``semcache serve`` now freezes its start-up
heap (:class:`proxy.server.FrozenHeapServer`), and this histogram shows
whether pauses come back as the heap grows. The callback costs two clock
reads per collection.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauseWatch:
    """Times every collection while started; one per app (``gc.callbacks`` is process-wide)."""

    def __init__(self, registry: CollectorRegistry):
        self.pauses = Histogram("semcache_gc_pause_seconds", "Garbage-collector pauses (they hold the event loop), "
                                "by generation.", ["generation"], buckets=_BUCKETS, registry=registry)
        self._started_at = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
        elif self._started_at:
            self.pauses.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - self._started_at)
            self._started_at = 0.0

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
