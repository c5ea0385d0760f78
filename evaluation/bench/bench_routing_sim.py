"""Routing at scale on the engine simulator: prefix-cache hits, TTFT and load imbalance per strategy.

N simulated vLLM replicas (:mod:`evaluation.engine_sim`, with its prefix
cache) run in this process; a BurstGPT-format trace with sessions
(:func:`evaluation.workloads.traces.generate_sessions`, or ``--trace`` a real one with
``Session ID``) is replayed against them once per strategy, each run on fresh
replicas, through the proxy's own strategies (:mod:`proxy.upstream.routing`).
BurstGPT has no text, so every session is given one of ``--docs`` shared
documents of ``--doc-tokens`` words as its system prompt (Zipf-popular, like
a RAG corpus or a few agents' system prompts), and its turns carry the
earlier turns as history: multi-turn sessions and long shared prefixes.

``kv`` asks an in-process stand-in for LMCache's controller that reads the
replicas' prefix caches exactly (what the real controller reports). Engine
load is read straight from the replicas' schedulers (a scrape with no delay).
What the simulator leaves out: concurrent prefills do not slow each other
down, and blocks of running requests are not pinned (see its docstrings).

The run is on virtual time (``looptime``): the event loop's clock advances
only by the simulated engines' sleeps, so the proxy-side code (routing,
hashing) costs no simulated time and the figures do not depend on how busy
this machine is; they are the same on every run with the same seed.

    python -m evaluation.bench.bench_routing_sim --replicas 8 --requests 1500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import looptime

from evaluation.workloads import traces
from evaluation.engine_sim.answers import chat_prompt, tokenize
from evaluation.engine_sim.engine import SimEngine
from evaluation.engine_sim.prefix_cache import block_hashes
from evaluation.engine_sim.settings import SimSettings
from proxy.upstream.pool import Upstream
from proxy.upstream.routing import Balancer, KvAffinity, RoutingOptions, build_strategy

STRATEGIES = ("round_robin", "least_loaded", "session", "prefix", "kv")
_WORDS = ("system policy document section clause customer order refund shipping warranty device firmware "
          "router network account billing invoice payment address delivery return exchange support agent "
          "ticket issue error reset password login update version release note feature limit plan").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) + str(rng.randrange(100)) for _ in range(n))


@dataclass
class Workload:
    """Chat bodies at arrival times: one shared document per session, history per turn."""

    times: list[float]
    bodies: list[dict[str, Any]]

    @classmethod
    def build(cls, arrivals: list[traces.Arrival], *, docs: int, doc_tokens: int, zipf: float,
              max_question: int, max_answer: int, seed: int) -> Workload:
        rng = random.Random(seed)
        corpus = [_text(random.Random(seed * 1000 + d), doc_tokens) for d in range(docs)]
        weights = [1 / (d + 1) ** zipf for d in range(docs)]
        history: dict[str, list[dict[str, str]]] = {}
        times, bodies = [], []
        for i, a in enumerate(arrivals):
            sid = a.session or f"single-{i}"
            if sid not in history:
                doc = rng.choices(range(docs), weights)[0]
                history[sid] = [{"role": "system", "content": corpus[doc]}]
            turns = history[sid]
            turns.append({"role": "user", "content": _text(rng, min(a.request_tokens, max_question))})
            answer = min(a.response_tokens, max_answer)
            bodies.append({"model": "sim-model", "messages": list(turns), "max_tokens": answer, "stream": True})
            turns.append({"role": "assistant", "content": _text(rng, answer)})
            times.append(a.timestamp)
        return cls(times, bodies)


class SimController:
    """LMCache's controller for simulated replicas: who holds how many leading tokens."""

    def __init__(self, engines: dict[str, SimEngine]):
        self.engines = engines  # instance_id -> replica

    async def tokens(self, upstream: Upstream, body: dict[str, Any]) -> list[str]:
        return tokenize(chat_prompt(body["messages"])[0])

    async def lookup(self, tokens: list[str]) -> dict[str, int]:
        out = {}
        hashes = block_hashes(tokens, next(iter(self.engines.values())).settings.block_size)
        for instance, engine in self.engines.items():
            matched = engine.prefix_cache.cached_tokens(hashes, len(tokens) + 1, touch=False)
            if matched:
                out[instance] = matched
        return out


class SchedulerQueues:
    def __init__(self, by_url: dict[str, SimEngine]):
        self.by_url = by_url

    def queue(self, upstream: Upstream) -> float:
        s = self.by_url[upstream.base_url].scheduler
        return float(s.running + s.waiting)


@dataclass
class Run:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    per_replica: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    hit_rate: float = 0.0


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else (xs[0] if xs else 0.0)


async def run_strategy(name: str, work: Workload, *, replicas: int, sim: dict[str, Any], speed: float,
                       options: RoutingOptions) -> Run:
    engines = [SimEngine(SimSettings(**sim)) for _ in range(replicas)]
    ups = [Upstream(base_url=f"http://sim-{i}:8000/v1", model="sim-model") for i in range(replicas)]
    by_url = {u.base_url: e for u, e in zip(ups, engines, strict=True)}
    balancer = Balancer(options.balance_abs_threshold, options.balance_rel_threshold, SchedulerQueues(by_url))
    strategy = build_strategy(name, options, balancer)
    if isinstance(strategy, KvAffinity):
        strategy.lookup = SimController({f"inst-{i}": e for i, e in enumerate(engines)})
        strategy.by_url = {u.base_url: f"inst-{i}" for i, u in enumerate(ups)}
    run = Run(per_replica=[0] * replicas)
    clock = asyncio.get_running_loop().time
    start = clock()

    async def one(at: float, body: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, start + at / speed - clock()))
        t0 = clock()
        achoose = getattr(strategy, "achoose", None)
        up = await achoose(ups, body) if achoose else strategy.choose(ups, body)
        idx = ups.index(up)
        run.per_replica[idx] += 1
        up.in_flight += 1
        try:
            engine = engines[idx]
            first = None
            async for _ in engine.stream(engine.plan("chat", body)):
                first = first or clock()
            end = clock()
        finally:
            up.in_flight -= 1
        run.ttft.append((first or end) - t0)
        run.total.append(end - t0)

    await asyncio.gather(*(one(t, b) for t, b in zip(work.times, work.bodies, strict=True)))
    run.wall_s = clock() - start
    queried = sum(e.metrics.prefix_totals[0] for e in engines)
    run.hit_rate = sum(e.metrics.prefix_totals[1] for e in engines) / max(1, queried)
    return run


def run_virtual(name: str, work: Workload, **kw: Any) -> Run:
    """:func:`run_strategy` on a fresh event loop with virtual time (see the module docstring)."""
    loop = looptime.new_event_loop(start=0.0)  # time compaction on from the start
    try:
        return loop.run_until_complete(run_strategy(name, work, **kw))
    finally:
        loop.close()


def summary(name: str, run: Run) -> dict[str, Any]:
    mean = statistics.mean(run.per_replica)
    return {"strategy": name, "requests": len(run.ttft), "prefix_hit_rate": round(run.hit_rate, 3),
            "ttft_p50_ms": round(_pct(run.ttft, 50) * 1000, 1), "ttft_p95_ms": round(_pct(run.ttft, 95) * 1000, 1),
            "total_p50_ms": round(_pct(run.total, 50) * 1000, 1),
            "total_p95_ms": round(_pct(run.total, 95) * 1000, 1),
            "imbalance_max_over_mean": round(max(run.per_replica) / mean, 2) if mean else 0.0,
            "virtual_s": round(run.wall_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--trace", type=Path, help="BurstGPT CSV with a Session ID column (default: generated)")
    p.add_argument("--session-rate", type=float, default=4.0, help="new sessions per trace second")
    p.add_argument("--speed", type=float, default=1.0, help="replay the trace this many times faster")
    p.add_argument("--docs", type=int, default=32)
    p.add_argument("--doc-tokens", type=int, default=1000)
    p.add_argument("--zipf", type=float, default=0.8)
    p.add_argument("--max-question", type=int, default=60)
    p.add_argument("--max-answer", type=int, default=24)
    p.add_argument("--prefill-ms-per-token", type=float, default=0.25)
    p.add_argument("--decode-ms-per-token", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--prefix-cache-tokens", type=int, default=16384)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--beta", type=float, default=RoutingOptions().beta)
    p.add_argument("--balance-abs", type=float, default=RoutingOptions().balance_abs_threshold,
                   help="imbalance threshold (requests); a huge value turns the least-loaded fallback off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    arrivals = (traces.read_burstgpt(args.trace, limit=args.requests) if args.trace else
                traces.generate_sessions(args.requests, rate=args.session_rate, seed=args.seed))
    work = Workload.build(arrivals, docs=args.docs, doc_tokens=args.doc_tokens, zipf=args.zipf,
                          max_question=args.max_question, max_answer=args.max_answer, seed=args.seed)
    sim = {"prefill_ms_per_token": args.prefill_ms_per_token, "decode_ms_per_token": args.decode_ms_per_token,
           "max_batch": args.max_batch, "prefix_cache_tokens": args.prefix_cache_tokens,
           "kv_cache_tokens": max(65536, args.prefix_cache_tokens), "max_model_len": 32768}
    print(f"{len(work.bodies)} requests, {len({a.session for a in arrivals})} sessions, {args.docs} documents of "
          f"{args.doc_tokens} words, {args.replicas} replicas, trace span {work.times[-1] / args.speed:.0f} s")
    options = RoutingOptions(beta=args.beta, balance_abs_threshold=args.balance_abs)
    rows = []
    for name in args.strategies.split(","):
        t0 = time.perf_counter()
        run = run_virtual(name, work, replicas=args.replicas, sim=sim, speed=args.speed, options=options)
        rows.append({**summary(name, run), "real_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
