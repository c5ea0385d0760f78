"""``semcache_gc_pause_seconds``: every collection timed while the watch runs, none after."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from proxy.admin.gcwatch import GcPauseWatch


def _count(registry: CollectorRegistry, generation: str) -> float:
    return registry.get_sample_value("semcache_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_full_collections_are_timed_while_started_and_the_callback_leaves_with_stop():
    registry = CollectorRegistry()
    watch = GcPauseWatch(registry)
    callbacks = len(gc.callbacks)
    watch.start()
    watch.start()  # idempotent: one callback, one observation per collection
    assert len(gc.callbacks) == callbacks + 1
    gc.collect()
    gc.collect()
    assert _count(registry, "2") == 2
    assert registry.get_sample_value("semcache_gc_pause_seconds_sum", {"generation": "2"}) > 0
    watch.stop()
    assert len(gc.callbacks) == callbacks
    gc.collect()
    assert _count(registry, "2") == 2
