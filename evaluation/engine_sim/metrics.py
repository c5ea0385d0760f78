"""Prometheus metrics of the simulator, under vLLM's metric names.

vLLM renamed ``vllm:gpu_cache_usage_perc`` to ``vllm:kv_cache_usage_perc``
(v0.10); both are exported so a reader written for either version works.
Prefix caching: vLLM v1's counters ``vllm:prefix_cache_queries`` and
``vllm:prefix_cache_hits`` (in tokens; exposed with ``_total``) and v0's gauge
``vllm:gpu_prefix_cache_hit_rate`` (hits / queries since start).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from evaluation.engine_sim.scheduler import Scheduler


class SimMetrics:
    def __init__(self, model: str, scheduler: Scheduler):
        self.registry = CollectorRegistry()
        self._scheduler = scheduler
        labels = ["model_name"]
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.").labels(model)
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to run.").labels(model)
        self.gpu_cache = gauge("vllm:gpu_cache_usage_perc", "KV-cache usage, 1 = full.").labels(model)
        self.kv_cache = gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full.").labels(model)
        self.prefix_hit_rate = gauge("vllm:gpu_prefix_cache_hit_rate", "Prefix cache hit rate (v0 name).").labels(
            model)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(model)

        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generation tokens processed.")
        self.request_success = Counter(
            "vllm:request_success", "Finished requests.", labels + ["finished_reason"], registry=r
        )
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prefix cache queries, in prompt tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in prompt tokens.")
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", labels, registry=r,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.0),
        ).labels(model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", labels, registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0),
        ).labels(model)
        self._model = model
        self.prefix_totals = (0, 0)  # (queried, hit) prompt tokens since start

    def prefix_queried(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prefix_queries.inc(prompt_tokens)
        self.prefix_hits.inc(cached_tokens)
        self.prefix_totals = (self.prefix_totals[0] + prompt_tokens, self.prefix_totals[1] + cached_tokens)
        self.prefix_hit_rate.set(self.prefix_totals[1] / max(1, self.prefix_totals[0]))

    def finished(self, reason: str) -> None:
        self.request_success.labels(self._model, reason).inc()

    def render(self) -> bytes:
        s = self._scheduler
        self.running.set(s.running)
        self.waiting.set(s.waiting)
        self.gpu_cache.set(s.kv_usage)
        self.kv_cache.set(s.kv_usage)
        return generate_latest(self.registry)
