"""Redis faults, before vs after the store circuit breaker (issue #14 items 12 and 13), in one run.

Two proxies run side by side on one real redis-server (own key prefixes),
the simulator upstream: "before" runs the code of ``--before`` (a git
commit, unpacked to a temp dir), "after" the code of this tree. Both get the
same load at the same time (so the shared box slows both alike):

0. warm-up (not measured, a few seconds);
1. normal: hits and misses for ``--phase`` s;
2. Redis frozen (SIGSTOP) for ``--phase`` s: requests/s, failed requests, p99;
3. Redis thawed (SIGCONT): requests/s and hit share for ``--phase`` s.

Then each proxy is started with its Redis URL on a port nobody listens on:
the time from spawn to the first answered request, and (Redis then started
on that port) the time until ``/readyz`` says the cache is in use.

    .venv/bin/python -m evaluation.bench.bench_store_faults --before 531b676 [--phase 8] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from evaluation.bench.bench_proxy import free_port, wait_ready
from evaluation.replay.fleet import (ROOT, Redis, Tally, bench_policies, chat, load, prime, start_proxy, start_sim, stop,
                              unpack_commit)

QUESTIONS = [f"How do I configure feature number {i} of the product?" for i in range(40)]


def _phase(tally: Tally, seconds: float) -> dict:
    return {"rps": round(tally.count() / seconds, 1), "failed": tally.failed, "hits": tally.count("hit"),
            "p50_ms": round(tally.latency_ms(0.5), 1), "p99_ms": round(tally.latency_ms(0.99), 1)}


def _frozen(urls: dict[str, str], redis: Redis, args: argparse.Namespace) -> dict:
    """The three load phases, both proxies loaded at once (each its own client processes)."""
    prompts = QUESTIONS + [f"A question never asked before, number {i}" for i in range(2000)]
    mix = [p for i in range(0, 2000, 4) for p in (QUESTIONS[i % 40], QUESTIONS[(i + 1) % 40],
                                                   QUESTIONS[(i + 2) % 40], prompts[40 + i])]
    out: dict = {name: {} for name in urls}
    _together(urls, mix[::7], argparse.Namespace(**{**vars(args), "phase": min(4.0, args.phase)}))  # warm-up
    for phase in ("normal", "frozen", "thawed"):
        if phase == "frozen":
            redis.send(signal.SIGSTOP)
        try:
            results = _together(urls, mix, args)
        finally:
            if phase == "frozen":
                redis.send(signal.SIGCONT)
        for name, tally in results.items():
            out[name][phase] = _phase(tally, args.phase)
        mix = mix[::-1]  # other new prompts next phase
    return out


def _together(urls: dict[str, str], prompts: list[str], args: argparse.Namespace) -> dict[str, Tally]:
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(len(urls)) as pool:
        futures = {name: pool.submit(load, [url], prompts, clients=args.clients, procs=args.procs,
                                     duration=args.phase) for name, url in urls.items()}
        return {name: f.result() for name, f in futures.items()}


def _cold_start(tree: Path, sim_port: int, work: Path) -> dict:
    """Start with Redis down: seconds to the first answer; then Redis up: seconds until cached."""
    redis = Redis(work / "late", "--save", "")
    port = free_port()
    started = time.monotonic()
    proc = start_proxy(port, sim_port, redis.url, tree=tree, policies=bench_policies(work), wait=False)
    first = joined = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            while first is None:
                if proc.poll() is not None:
                    raise SystemExit("proxy exited")
                try:
                    if c.post("/v1/chat/completions", json=chat("cold start question")).status_code == 200:
                        first = time.monotonic() - started
                except httpx.TransportError:
                    time.sleep(0.05)
            redis.start()
            up = time.monotonic()
            while time.monotonic() - up < 60:
                if c.get("/readyz").status_code == 200:
                    joined = time.monotonic() - up
                    break
                time.sleep(0.05)
    finally:
        stop(proc)
        redis.stop()
    return {"first_answer_s": round(first, 2), "cached_after_redis_up_s": None if joined is None else round(joined, 2)}


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="semcache-faults-"))
    before_rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip()
    trees = {"before": unpack_commit(args.before, work / "before"), "after": ROOT}
    sim_port = free_port()
    sim = start_sim(sim_port)
    redis = Redis(work / "redis", "--save", "", "--appendonly", "no").start()
    procs: dict[str, subprocess.Popen] = {}
    try:
        ports = {name: free_port() for name in trees}
        for name, tree in trees.items():
            procs[name] = start_proxy(ports[name], sim_port, redis.url, prefix=f"bench-{name}", tree=tree,
                                      policies=bench_policies(work), wait=False)
        for name, proc in procs.items():
            wait_ready(f"http://127.0.0.1:{ports[name]}/readyz", proc)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for url in urls.values():
            prime(url, QUESTIONS)
        frozen = _frozen(urls, redis, args)
        stop(*procs.values())
        procs.clear()
        cold = {name: _cold_start(tree, sim_port, work) for name, tree in trees.items()}
        return {"before_commit": before_rev, "clients": args.clients, "phase_s": args.phase,
                "load": frozen, "start_with_redis_down": cold, "load_average": os.getloadavg()}
    finally:
        stop(*procs.values(), sim)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main", help="git commit whose code is the baseline (default main)")
    parser.add_argument("--phase", type=float, default=8.0, help="seconds of each load phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections per proxy")
    parser.add_argument("--procs", type=int, default=1, help="client processes per proxy")
    args = parser.parse_args(argv)
    r = run(args)
    print(json.dumps(r, indent=2))
    print(f"\nbefore = {r['before_commit']}, after = this tree; {r['clients']} connections per proxy, "
          f"{r['phase_s']:g} s per phase, load average {' '.join(f'{x:.1f}' for x in r['load_average'])}")
    for name in ("before", "after"):
        L, c = r["load"][name], r["start_with_redis_down"][name]
        print(f"{name:6}  req/s normal {L['normal']['rps']:6.1f}  frozen {L['frozen']['rps']:6.1f} "
              f"(p50 {L['frozen']['p50_ms']:.0f} ms, p99 {L['frozen']['p99_ms']:.0f} ms, failed "
              f"{L['frozen']['failed']})  thawed "
              f"{L['thawed']['rps']:6.1f} ({L['thawed']['hits']} hits) | first answer with Redis down "
              f"{c['first_answer_s']} s, cached {c['cached_after_redis_up_s']} s after Redis came up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
