"""Scrape engines' Prometheus ``/metrics`` (vLLM names) into a load model.

Used by IC-Cache's router (per model) and by :mod:`proxy.upstream.load` (per
upstream: which engines are vLLM, and their queues).

The core library only models load (:mod:`semcache.load`); fetching
over HTTP lives here. Names read, per vLLM (summed over ``model_name``
labels, so one scrape of a multi-model server still gives one engine load):

* ``vllm:num_requests_waiting`` / ``vllm:num_requests_running`` (gauges);
* ``vllm:kv_cache_usage_perc`` (v0.10+) or ``vllm:gpu_cache_usage_perc``;
* ``vllm:time_to_first_token_seconds`` and ``vllm:e2e_request_latency_seconds``
  histograms (their ``_sum`` and ``_count``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from semcache.load import EngineMetrics, LoadTracker

log = logging.getLogger("semcache.engine_load")

_GAUGES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage_old",
}
_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": "ttft",
    "vllm:e2e_request_latency_seconds": "e2e",
}


def engine_root(base_url: str) -> str:
    """An engine's server root from its OpenAI base URL (``http://h:8000/v1`` -> ``http://h:8000``)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def metrics_url(base_url: str) -> str:
    """An engine's ``/metrics`` from its OpenAI base URL (``http://h:8000/v1`` -> ``http://h:8000/metrics``)."""
    return engine_root(base_url) + "/metrics"


class NotVLLMError(ValueError):
    """A ``/metrics`` body without any ``vllm:`` metric: not a vLLM engine (its load is unknown)."""


def parse_vllm_metrics(text: str, *, at: float = 0.0) -> EngineMetrics:
    """Read one ``/metrics`` body; vLLM metrics an engine does not export stay 0.

    Raises :class:`NotVLLMError` when the body has no ``vllm:`` metric at all:
    zeros would claim an idle engine whose load is simply not known.
    """
    values: dict[str, float] = {}
    seen_vllm = False
    for family in text_string_to_metric_families(text):
        seen_vllm = seen_vllm or family.name.startswith("vllm:")
        gauge = _GAUGES.get(family.name)
        hist = _HISTOGRAMS.get(family.name)
        for sample in family.samples:
            if gauge is not None and sample.name == family.name:
                values[gauge] = values.get(gauge, 0.0) + sample.value
            elif hist is not None and sample.name in (family.name + "_sum", family.name + "_count"):
                key = hist + sample.name[len(family.name):]
                values[key] = values.get(key, 0.0) + sample.value
    if not seen_vllm:
        raise NotVLLMError("no vllm: metrics in the body")
    kv = values.get("kv_usage", values.get("kv_usage_old", 0.0))
    return EngineMetrics(
        waiting=values.get("waiting", 0.0), running=values.get("running", 0.0), kv_usage=kv,
        ttft_sum=values.get("ttft_sum", 0.0), ttft_count=values.get("ttft_count", 0.0),
        e2e_sum=values.get("e2e_sum", 0.0), e2e_count=values.get("e2e_count", 0.0), at=at,
    )


class EngineLoadScraper:
    """Polls each engine's metrics URL and feeds a :class:`LoadTracker`.

    ``engines`` maps the model name the router knows to that engine's
    metrics URL (e.g. ``http://vllm-large:8000/metrics``). A failed scrape
    keeps the last known load and is logged, never raised: routing must go on.
    """

    def __init__(self, engines: dict[str, str], tracker: LoadTracker, *,
                 client: httpx.AsyncClient | None = None, interval_s: float = 1.0, timeout_s: float = 2.0,
                 first_failure_level: int = logging.WARNING):
        self.engines = dict(engines)
        self.first_failure_level = first_failure_level
        self.tracker = tracker
        self.interval_s = interval_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None
        self._task: asyncio.Task | None = None
        self._failing: set[str] = set()
        self._seen: set[str] = set()

    async def scrape_once(self) -> None:
        """Scrape every engine once (concurrently)."""
        await asyncio.gather(*(self._scrape(model, url) for model, url in self.engines.items()))

    async def _scrape(self, model: str, url: str) -> None:
        try:
            r = await self._client.get(url)
            r.raise_for_status()
            self.tracker.observe(model, parse_vllm_metrics(r.text, at=time.time()))
        except (httpx.HTTPError, ValueError) as exc:
            # Warn when an engine's metrics go away, not on every scrape while they stay away.
            level = logging.DEBUG if model in self._failing else self.first_failure_level
            log.log(level, "no vLLM metrics from %s (%s): %s; its load is judged by this proxy's requests in "
                    "flight", model, url, exc)
            self._failing.add(model)
            return
        self._seen.add(model)
        if model in self._failing:
            self._failing.discard(model)
            log.info("engine metrics of %s are back", model)

    def healthy(self, model: str) -> bool:
        """Whether ``model``'s last scrape worked (false before the first one succeeds)."""
        return model in self._seen and model not in self._failing

    def failing(self, model: str) -> bool:
        """Whether ``model``'s metrics were scraped before and the last scrape failed (down or wedged)."""
        return model in self._seen and model in self._failing

    async def _loop(self) -> None:
        while True:
            await self.scrape_once()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="semcache-engine-load")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._own_client:
            await self._client.aclose()
