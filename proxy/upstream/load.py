"""What each upstream engine says about itself: :class:`UpstreamLoad`.

Every upstream's Prometheus ``/metrics`` (next to its ``/v1``) is scraped in
the background with the vLLM names :mod:`proxy.upstream.engine_load` reads. Two things
follow from a scrape, and both matter beyond one proxy:

* **whether the engine is vLLM** (it exports ``vllm:`` metrics). vLLM aborts a
  request whose client disconnected, so a speculative call it loses costs the
  engine only the milliseconds it ran; llama.cpp's server finishes the
  answer, and a paid API bills it -- those are not raced unless asked;
* **its queue** (``vllm:num_requests_waiting``), the load from *every* client:
  several proxy replicas sharing one engine each see only their own in-flight
  count, the engine's queue sees them all. IC-Cache's router reads it too,
  summed over every replica serving a model (:meth:`UpstreamLoad.model_load`).

A failed scrape keeps the proxy serving: the engine then counts as "not known
to be vLLM" with no known queue. The data is at most ``interval_s`` old.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from proxy.upstream.engine_load import EngineLoadScraper, metrics_url
from proxy.upstream.pool import Upstream
from semcache.load import EngineLoad, LoadTracker


class UpstreamLoad:
    """Background scrapes of every upstream's ``/metrics``; answers per :class:`Upstream`."""

    def __init__(self, upstreams: Sequence[Upstream], *, interval_s: float = 1.0, timeout_s: float = 2.0,
                 client: httpx.AsyncClient | None = None):
        self.tracker = LoadTracker()
        engines = {u.base_url: metrics_url(u.base_url) for u in upstreams}
        # An engine without vLLM metrics (llama.cpp, a hosted API) is normal here: say so at INFO once.
        self._scraper = EngineLoadScraper(engines, self.tracker, client=client, interval_s=interval_s,
                                          timeout_s=timeout_s, first_failure_level=logging.INFO)

    async def refresh(self) -> None:
        """Scrape every upstream once, now (the proxy does this before it serves)."""
        await self._scraper.scrape_once()

    def start(self) -> None:
        self._scraper.start()

    async def aclose(self) -> None:
        await self._scraper.aclose()

    def is_vllm(self, upstream: Upstream) -> bool:
        """The last scrape of ``upstream`` worked and showed vLLM metrics."""
        return self._scraper.healthy(upstream.base_url)

    def failing(self, upstreams: Sequence[Upstream]) -> bool:
        """Every one of ``upstreams`` once exported vLLM metrics and its last scrape failed."""
        return bool(upstreams) and all(self._scraper.failing(u.base_url) for u in upstreams)

    def waiting(self, upstream: Upstream) -> float | None:
        """Requests queued in the engine (all clients), or None when its metrics are unknown."""
        if not self.is_vllm(upstream):
            return None
        return self.tracker.get(upstream.base_url).waiting

    def queue(self, upstream: Upstream) -> float | None:
        """Waiting + running requests in the engine (all clients), or None when not known (routing's load)."""
        if not self.is_vllm(upstream):
            return None
        load = self.tracker.get(upstream.base_url)
        return load.waiting + load.running

    def model_load(self, upstreams: Sequence[Upstream]) -> EngineLoad | None:
        """One load for a model served by several replicas (IC-Cache routes per model).

        Queues and running counts add up; latencies are the mean over replicas
        that measured one; KV use is the fullest replica's. None when no replica
        is known to be vLLM (the caller then falls back to its in-flight count).
        """
        loads = [self.tracker.get(u.base_url) for u in upstreams if self.is_vllm(u)]
        if not loads:
            return None
        ttfts = [x.ttft_s for x in loads if x.ttft_s is not None]
        e2es = [x.e2e_s for x in loads if x.e2e_s is not None]
        return EngineLoad(waiting=sum(x.waiting for x in loads), running=sum(x.running for x in loads),
                          kv_usage=max(x.kv_usage for x in loads),
                          ttft_s=sum(ttfts) / len(ttfts) if ttfts else None,
                          e2e_s=sum(e2es) / len(e2es) if e2es else None, at=max(x.at for x in loads))

    def snapshot(self, upstream: Upstream) -> dict[str, float | bool | None]:
        """For ``/admin/stats``: what the engine last reported."""
        if not self.is_vllm(upstream):
            return {"vllm_metrics": False, "waiting": None, "running": None, "kv_usage": None, "ttft_s": None}
        load = self.tracker.get(upstream.base_url)
        return {"vllm_metrics": True, "waiting": load.waiting, "running": load.running, "kv_usage": load.kv_usage,
                "ttft_s": load.ttft_s}


def engine_idle(upstream: Upstream, load: UpstreamLoad | None, *, below: int, any_engine: bool) -> bool:
    """Work nobody waits for may go to ``upstream`` now.

    True for an engine with fewer than ``below`` of this proxy's requests in
    flight and, when it shows vLLM metrics, an empty queue (which counts every
    client's requests, other proxy replicas' too). An engine without those
    metrics (llama.cpp, a hosted API) only with ``any_engine``: its queue is
    unknown, llama.cpp finishes abandoned calls and a hosted API bills them.
    """
    if upstream.in_flight >= below:
        return False
    waiting = load.waiting(upstream) if load is not None else None
    if waiting is None:
        return any_engine
    return waiting <= 0
