"""Several proxy replicas on one real Redis (issue #14 item 15), in one bounded run.

Starts one redis-server, the engine simulator and three ``semcache serve``
processes (Redis store, the default CPU embedder) sharing one key prefix,
then measures, with load from several client processes:

1. hits/s with the load spread over 1, 2 and 3 replicas (exact repeats of
   primed questions: every request a hit);
2. propagation: a new question answered (and stored) by replica A, then
   asked of replica B until B serves it as a hit: the delay from A's answer
   to B's first hit, p50/p99 (B's polls send ``Cache-Control: no-store`` so
   B never stores its own copy);
3. invalidation: ``POST /admin/invalidate`` of one entry on A; the delay
   until B and C both stop serving it, p50/p99;
4. one replica killed (SIGKILL) halfway through a load of new and repeated
   questions on all three: failed requests (clients drop a replica on its
   first connection error, as a load balancer's health check would), and
   lost entries: answers a replica sent as a ``miss`` (so they were to be
   stored) that no surviving replica can serve afterwards.

On this 2-core box shared with other work, more replicas cannot add CPU:
the hits/s figures show the cost of sharing, not scaling.

    .venv/bin/python -m evaluation.bench.bench_replicas [--duration 6] [--clients 24] [--procs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx

from evaluation.bench.bench_proxy import free_port, pct, wait_ready
from evaluation.replay.fleet import ROOT, Redis, bench_policies, chat, load, prime, start_proxy, start_sim, stop

ADMIN = "bench-admin"
NO_STORE = {"cache-control": "no-store"}


@asynccontextmanager
async def _clients(urls: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One keep-alive client per replica."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=30)) for u in urls]


LAST_SEEN: dict[str, str] = {}  # the last status a poll that never got its answer saw (diagnostics)


async def _until(client: httpx.AsyncClient, prompt: str, want: str, deadline_s: float = 10.0) -> float | None:
    """Seconds until ``client`` answers ``prompt`` with X-Semcache-Status ``want`` (no-store polls)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        r = await client.post("/v1/chat/completions", json=chat(prompt), headers=NO_STORE)
        if r.headers.get("x-semcache-status") == want:
            return time.monotonic() - started
        LAST_SEEN[want] = f"{r.status_code} {r.headers.get('x-semcache-status')} {r.text[:200]}"
        await asyncio.sleep(0.001)
    return None


async def _propagation(urls: list[str], samples: int) -> dict:
    """Delay from an answer stored via one replica to the first hit on another."""
    delays: list[float] = []
    missing = 0
    not_miss: list[str] = []  # answers of A that were not a stored miss (should stay empty)
    async with _clients(urls) as clients:
        for i in range(samples):
            a, b = clients[i % len(clients)], clients[(i + 1) % len(clients)]
            prompt = f"Propagation probe {i} {time.time_ns()}: what is {i} times {i + 3}?"
            answered = await a.post("/v1/chat/completions", json=chat(prompt))
            if answered.headers.get("x-semcache-status") != "miss":
                not_miss.append(f"{answered.status_code} {answered.headers.get('x-semcache-status')}")
                continue
            took = await _until(b, prompt, "hit")
            if took is None:
                missing += 1
            else:
                delays.append(took)
    return {"samples": samples, "never_hit": missing, "not_a_miss": not_miss, "p50_ms": round(pct(delays, 0.5), 1) if delays else None,
            "p99_ms": round(pct(delays, 0.99), 1) if delays else None}


async def _invalidation(urls: list[str], samples: int) -> dict:
    """Delay from an admin invalidation on one replica until every other stops serving the entry."""
    delays: list[float] = []
    stuck = 0
    async with _clients(urls) as clients:
        for i in range(samples):
            a, others = clients[0], clients[1:]
            prompt = f"Invalidation probe {i} {time.time_ns()}: how do I rotate key number {i}?"
            await a.post("/v1/chat/completions", json=chat(prompt))
            for o in others:
                assert await _until(o, prompt, "hit") is not None
            hit = await a.post("/v1/chat/completions", json=chat(prompt))
            entry = hit.headers["x-semcache-entry"]
            gone = await a.post("/admin/invalidate", json={"entry_id": entry},
                                headers={"authorization": f"Bearer {ADMIN}"})
            assert gone.json() == {"removed": 1}, gone.text
            started = time.monotonic()
            waits = await asyncio.gather(*(_until(o, prompt, "miss") for o in others))
            if any(w is None for w in waits):
                stuck += 1
            else:
                delays.append(time.monotonic() - started)
    return {"samples": samples, "still_served_after_10s": stuck,
            "p50_ms": round(pct(delays, 0.5), 1) if delays else None,
            "p99_ms": round(pct(delays, 0.99), 1) if delays else None}


async def _kill_load(urls: list[str], victim, duration: float, connections: int) -> dict:
    """Load on all replicas; SIGKILL ``victim`` halfway; clients drop a replica on its first error."""
    alive = list(urls)
    rows: list[tuple[str, int, str, str]] = []  # prompt, http status, cache status, url
    deadline = time.monotonic() + duration
    kill_at = time.monotonic() + duration / 2

    async def killer() -> None:
        await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
        victim.send_signal(signal.SIGKILL)

    async def client(i: int) -> None:
        n = 0
        async with httpx.AsyncClient(timeout=30) as c:
            while time.monotonic() < deadline and alive:
                url = alive[(i + n) % len(alive)]
                prompt = (f"Kill test new question {i}-{n}: explain item {i * 1000 + n}" if n % 2 == 0
                          else f"Kill test repeated question {n % 20}")
                n += 1
                try:
                    r = await c.post(url + "/v1/chat/completions", json=chat(prompt))
                    rows.append((prompt, r.status_code, r.headers.get("x-semcache-status", ""), url))
                except httpx.TransportError:
                    rows.append((prompt, 0, "error", url))
                    if url in alive:
                        alive.remove(url)

    await asyncio.gather(killer(), *(client(i) for i in range(connections)))
    survivors = [u for u in urls if u in alive]
    stored = {p: url for p, status, cache, url in rows
              if status == 200 and cache == "miss" and p.startswith("Kill test new")}
    lost = {"killed": 0, "survivors": 0}
    async with httpx.AsyncClient(base_url=survivors[0], timeout=30) as c:
        await asyncio.sleep(0.5)  # let the change feed settle
        for prompt, url in stored.items():
            r = await c.post("/v1/chat/completions", json=chat(prompt), headers=NO_STORE)
            if r.headers.get("x-semcache-status") != "hit":
                lost["killed" if url == urls[-1] else "survivors"] += 1
    by_victim = [r for r in rows if r[3] == urls[-1]]
    return {"requests": len(rows), "failed": sum(1 for r in rows if r[1] != 200),
            "failed_on_killed_replica": sum(1 for r in by_victim if r[1] != 200),
            "answered_misses_to_store": len(stored),
            "answered_misses_by_killed_replica": sum(1 for u in stored.values() if u == urls[-1]),
            "lost_entries": sum(lost.values()), "lost_answered_by_killed_replica": lost["killed"]}


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="semcache-replicas-"))
    sim_port = free_port()
    sim = start_sim(sim_port)
    redis = Redis(work / "redis", "--save", "", "--appendonly", "no").start()
    ports = [free_port() for _ in range(3)]
    policies = bench_policies(work)
    procs = [start_proxy(p, sim_port, redis.url, tree=ROOT, policies=policies, wait=False,
                         SEMCACHE_ADMIN_TOKEN=ADMIN) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for port, proc in zip(ports, procs):
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        questions = [f"How do I reset the password of account type {i}?" for i in range(50)]
        prime(urls[0], questions)
        time.sleep(0.5)  # the change feed brings them to the others
        hits = {}
        for n in (1, 2, 3):
            tally = load(urls[:n], questions, clients=args.clients, procs=args.procs, duration=args.duration)
            hits[n] = {"hits_per_s": round(tally.count("hit") / args.duration, 1), "failed": tally.failed,
                       "not_hit": tally.count() - tally.count("hit"), "p50_ms": round(tally.latency_ms(0.5), 1),
                       "p99_ms": round(tally.latency_ms(0.99), 1)}
        print("hits/s:", hits, file=sys.stderr)
        propagation = asyncio.run(_propagation(urls, args.samples))
        print("propagation:", propagation, LAST_SEEN, file=sys.stderr)
        invalidation = asyncio.run(_invalidation(urls, max(5, args.samples // 4)))
        killed = asyncio.run(_kill_load(urls, procs[-1], args.duration, args.clients))
        return {"replicas_hits": hits, "propagation": propagation, "invalidation": invalidation,
                "kill_one_replica": killed, "clients": args.clients, "client_procs": args.procs,
                "duration_s": args.duration, "load_average": os.getloadavg()}
    finally:
        stop(*procs, sim)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of each load phase")
    parser.add_argument("--clients", type=int, default=24, help="concurrent connections in all")
    parser.add_argument("--procs", type=int, default=3, help="client processes")
    parser.add_argument("--samples", type=int, default=40, help="propagation probes")
    args = parser.parse_args(argv)
    r = run(args)
    print(json.dumps(r, indent=2))
    print(f"\n{r['clients']} connections from {r['client_procs']} client processes, {r['duration_s']:g} s per "
          f"phase, load average {' '.join(f'{x:.1f}' for x in r['load_average'])} (shared 2-core box)")
    for n, h in r["replicas_hits"].items():
        print(f"{n} replica(s): {h['hits_per_s']:7.1f} hits/s  p50 {h['p50_ms']:.1f} ms  p99 {h['p99_ms']:.1f} ms  "
              f"failed {h['failed']}")
    p, i, k = r["propagation"], r["invalidation"], r["kill_one_replica"]
    print(f"stored on one, hit on another: p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms  ({p['samples']} probes, "
          f"{p['never_hit']} never hit)")
    print(f"invalidation reaches all:      p50 {i['p50_ms']} ms  p99 {i['p99_ms']} ms  ({i['samples']} probes, "
          f"{i['still_served_after_10s']} still served after 10 s)")
    print(f"one of 3 replicas killed:      {k['failed']} of {k['requests']} requests failed; "
          f"{k['lost_entries']} of {k['answered_misses_to_store']} answered misses lost "
          f"({k['lost_answered_by_killed_replica']} of the {k['answered_misses_by_killed_replica']} the killed "
          "replica answered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
