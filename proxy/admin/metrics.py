"""The proxy's Prometheus metrics, in a registry owned by one app (no globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.admin.gcwatch import GcPauseWatch

_CACHE_GAUGES = frozenset({"hit_rate", "mean_lookup_ms", "mean_upstream_ms", "latency_saved_s"})
_LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _CacheStatsCollector(Collector):
    """Per-category figures read from a snapshot at scrape time (the cache's, or IC-Cache's).

    Counters by default; names in ``gauges`` (rates, means) are exported as gauges.
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]], prefix: str = "semcache_category_",
                 gauges: frozenset[str] = frozenset(), skip: frozenset[str] = frozenset()):
        self._snapshot = snapshot
        self._prefix = prefix
        self._gauges = gauges
        self._skip = skip

    def collect(self):  # type: ignore[override]
        try:
            stats = self._snapshot()
        except Exception:  # a scrape must not fail because the cache is down
            return
        families: dict[str, CounterMetricFamily] = {}
        categories = stats.get("categories", stats) if isinstance(stats, dict) else {}
        for category, counters in (categories or {}).items():
            if not isinstance(counters, dict):
                continue
            for name, value in counters.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or name in self._skip:
                    continue
                fam = families.get(name)
                if fam is None:
                    kind = GaugeMetricFamily if name in self._gauges else CounterMetricFamily
                    fam = families[name] = kind(f"{self._prefix}{name}", f"'{name}' per category.",
                                                labels=["category"])
                fam.add_metric([str(category)], float(value))
        yield from families.values()


class _AdaptiveCollector(Collector):
    """``semcache_effective_threshold{category}``, ``semcache_effective_ttl_seconds{category}``, the verifier's
    ``semcache_effective_min_probability{category}``, pressure, moves."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]):
        self._snapshot = snapshot

    def collect(self):  # type: ignore[override]
        try:
            snap = self._snapshot()
        except Exception:  # a scrape must not fail because the cache is down
            return
        threshold = GaugeMetricFamily("semcache_effective_threshold", "Similarity threshold in force.",
                                      labels=["category"])
        ttl = GaugeMetricFamily("semcache_effective_ttl_seconds", "TTL given to new entries.", labels=["category"])
        pressure = GaugeMetricFamily("semcache_category_pressure", "Pressure on the category's model "
                                     "(1 = at its target).", labels=["category"])
        min_p = GaugeMetricFamily("semcache_effective_min_probability", "Verifier cut-off in force "
                                  "(categories whose verifier is on).", labels=["category"])
        for name, c in snap["categories"].items():
            threshold.add_metric([name], c["effective_threshold"])
            if c.get("effective_min_probability") is not None:
                min_p.add_metric([name], c["effective_min_probability"])
            if c["effective_ttl_seconds"] is not None:
                ttl.add_metric([name], c["effective_ttl_seconds"])
            pressure.add_metric([name], c["pressure"])
        moves = CounterMetricFamily("semcache_adaptive_moves", "Adaptive controller moves (dry run included).")
        moves.add_metric([], snap["moves"])
        yield from (threshold, ttl, pressure, min_p, moves)


class _VerifierMemoCollector(Collector):
    """The cross-encoder's pair memo: lookups by result, and pairs remembered."""

    def __init__(self, snapshot: Callable[[], dict[str, int]]):
        self._snapshot = snapshot

    def collect(self):  # type: ignore[override]
        snap = self._snapshot()
        lookups = CounterMetricFamily("semcache_verifier_memo_lookups", "Cross-encoder pair scores looked up "
                                      "in the memo (hit: no model run).", labels=["result"])
        lookups.add_metric(["hit"], snap["hits"])
        lookups.add_metric(["miss"], snap["misses"])
        yield lookups
        yield GaugeMetricFamily("semcache_verifier_memo_pairs", "Pair scores remembered.", value=snap["pairs"])


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("semcache_requests", "Answered requests.", ["endpoint", "status"], registry=r)
        self.bypass = Counter("semcache_bypass", "Requests served without the cache, by reason.",
                              ["reason"], registry=r)
        self.degraded = Counter("semcache_degraded", "Cache failures degraded to uncached forwarding.",
                                ["component"], registry=r)
        self.latency = Histogram("semcache_request_seconds", "Time to answer (to the last byte).",
                                 ["endpoint", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.similarity = Histogram("semcache_similarity", "Best candidate's cosine similarity per lookup.",
                                    buckets=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0),
                                    registry=r)
        self.upstream_errors = Counter("semcache_upstream_errors", "Upstream error answers.", ["status"], registry=r)
        self.coalesced = Counter("semcache_coalesced", "Misses answered by another request's upstream call.",
                                 registry=r)
        self.stores = Counter("semcache_stores", "Store attempts after a miss, by outcome.", ["stored"], registry=r)
        self.aborted_streams = Counter("semcache_aborted_streams", "Streams the client left before the end.",
                                       registry=r)
        self.ic_routes = Counter("semcache_ic_routes", "IC-Cache decisions per category: cache, small "
                                 "(with examples), large, small_failed (fell back to large: an error, or "
                                 "small_rejected: its answer ignored its examples).",
                                 ["category", "route"], registry=r)
        self.speculative = Counter("semcache_speculative_forwards", "Upstream calls started before the cache "
                                   "decided: used (a miss took it) or dropped (a hit or another's answer).",
                                   ["outcome"], registry=r)
        self.in_flight = Gauge("semcache_upstream_in_flight", "Requests in flight upstream.", registry=r)
        self.audits = Counter("semcache_audits", "Audits of semantic hits per category: agree, false_hit, "
                              "skipped (due but not run: engine busy, audits in flight, upstream error).",
                              ["category", "outcome"], registry=r)
        self.false_hit_rate = Gauge("semcache_false_hit_rate", "Live false-hit rate of semantic hits per "
                                    "category from audits and feedback: the estimate and its Clopper-Pearson "
                                    "interval (bound = false_hit_rate, lower, upper).",
                                    ["category", "bound"], registry=r)

    def watch_gc(self) -> GcPauseWatch:
        """Garbage-collector pauses as a histogram; the caller starts and stops the watch."""
        return GcPauseWatch(self.registry)

    def watch_cache(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Per category: counts as counters; rates, means and the saved-latency estimate (which can
        fall when the mean upstream time does) as gauges."""
        self.registry.register(_CacheStatsCollector(snapshot, gauges=_CACHE_GAUGES))

    def watch_iccache(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """IC-Cache per category: offload rate, mean examples and quality, cost saved.

        Route counts are not repeated here: ``semcache_ic_routes`` counts them as they happen.
        """
        self.registry.register(_CacheStatsCollector(
            snapshot, prefix="semcache_ic_", gauges=frozenset({"offload_rate", "mean_examples", "mean_quality"}),
            skip=frozenset({"requests", "cache", "small", "large"})))

    def watch_verifier_memo(self, snapshot: Callable[[], dict[str, int]]) -> None:
        """How often the cross-encoder's memo spared a model run."""
        self.registry.register(_VerifierMemoCollector(snapshot))

    def watch_adaptive(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Effective threshold and TTL per category (the policy's unless load adaptation moved them)."""
        self.registry.register(_AdaptiveCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)
