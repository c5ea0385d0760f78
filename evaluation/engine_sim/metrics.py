"""Prometheus metrics of the simulator, under vLLM's metric names.

vLLM renamed ``vllm:gpu_cache_usage_perc`` to ``vllm:kv_cache_usage_perc``
(v0.10); both are exported so a reader written for either version works.
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
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=r
        ).labels(model)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens processed.", labels, registry=r
        ).labels(model)
        self.request_success = Counter(
            "vllm:request_success", "Finished requests.", labels + ["finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", labels, registry=r,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.0),
        ).labels(model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", labels, registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0),
        ).labels(model)
        self._model = model

    def finished(self, reason: str) -> None:
        self.request_success.labels(self._model, reason).inc()

    def render(self) -> bytes:
        s = self._scheduler
        self.running.set(s.running)
        self.waiting.set(s.waiting)
        self.gpu_cache.set(s.kv_usage)
        self.kv_cache.set(s.kv_usage)
        return generate_latest(self.registry)
