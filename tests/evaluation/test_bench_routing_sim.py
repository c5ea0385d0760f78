"""The routing benchmark on simulated replicas: prefix-aware routing finds the shared prefixes."""

from __future__ import annotations

from evaluation.workloads import traces
from evaluation.bench.bench_routing_sim import Workload, run_virtual
from proxy.upstream.routing import RoutingOptions


def test_prefix_and_kv_routing_hit_the_prefix_cache_more_than_round_robin():
    arrivals = traces.generate_sessions(80, rate=6.0, mean_turns=3.0, think_s=1.0, seed=5)
    work = Workload.build(arrivals, docs=6, doc_tokens=300, zipf=0.5, max_question=20, max_answer=4, seed=5)
    sim = {"prefill_ms_per_token": 0.25, "decode_ms_per_token": 5.0, "max_batch": 8,
           "prefix_cache_tokens": 1200, "max_model_len": 32768}

    def hit_rate(name: str) -> float:
        run = run_virtual(name, work, replicas=4, sim=sim, speed=1.0, options=RoutingOptions())
        assert len(run.ttft) == 80 and sum(run.per_replica) == 80
        return run.hit_rate

    rr = hit_rate("round_robin")
    assert hit_rate("prefix") > rr + 0.15
    assert hit_rate("kv") > rr + 0.15
