"""How busy each replica is, and when the replicas are too unequal for cache affinity.

A replica's load is the larger of this proxy's requests in flight to it
(exact, instant) and the engine's own ``vllm:num_requests_waiting +
vllm:num_requests_running`` from the last scrape (every client's requests,
at most a scrape interval old): several proxy replicas share the engines.

Affinity (to a session or a cached prefix) gives way to least-loaded when
the replicas are imbalanced, as SGLang's cache-aware router does: the
busiest has ``abs_threshold`` more requests than the idlest and more than
``rel_threshold`` times its load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from proxy.upstream.routing.basic import RoundRobin

if TYPE_CHECKING:
    from proxy.upstream.pool import Upstream


class EngineQueues(Protocol):
    """What the engines' scrapes say (:class:`proxy.upstream.load.UpstreamLoad`)."""

    def queue(self, upstream: Upstream) -> float | None:
        """Waiting + running requests of the engine (all clients); None when not known."""
        ...


class Balancer:
    """Per-replica load and the imbalance test, shared by the affinity strategies."""

    def __init__(self, abs_threshold: float = 4.0, rel_threshold: float = 1.5,
                 engines: EngineQueues | None = None):
        self.abs_threshold = abs_threshold
        self.rel_threshold = rel_threshold
        self.engines = engines
        self._tie = RoundRobin()

    def load(self, upstream: Upstream) -> float:
        scraped = self.engines.queue(upstream) if self.engines is not None else None
        return max(float(upstream.in_flight), scraped or 0.0)

    def imbalanced(self, loads: Sequence[float]) -> bool:
        high, low = max(loads), min(loads)
        return high - low > self.abs_threshold and high > self.rel_threshold * low

    def least_loaded(self, candidates: Sequence[Upstream], loads: Sequence[float] | None = None) -> Upstream:
        loads = [self.load(u) for u in candidates] if loads is None else loads
        low = min(loads)
        return self._tie.choose([u for u, x in zip(candidates, loads, strict=True) if x == low], {})
