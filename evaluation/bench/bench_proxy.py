"""Proxy load benchmark: hit latency, hit throughput at 32 clients, miss overhead.

Starts the engine simulator and ``semcache serve`` (SQLite store, default CPU
embedder) as child processes, then drives them with a minimal keep-alive
HTTP/1.1 client on raw sockets (uvloop), several processes for the
concurrent phase, so the load generator costs far less CPU than the proxy.

    .venv/bin/python -m evaluation.bench.bench_proxy [--duration 10] [--clients 32] [--procs 2]
    .venv/bin/python -m evaluation.bench.bench_proxy --live-streams 8   # dashboards' cost to serving

Prints, from one run: hit p50/p99 with 1 client; hits/s and p99 with N
clients; miss p50 through the proxy and directly against the simulator
(same prompts, interleaved, each side on its own warm keep-alive
connection) and the difference (the miss overhead), also as the median of
per-prompt differences; the same for a second proxy with speculative
forwarding off (``SEMCACHE_SPECULATIVE_FORWARD=false``: the lookup finishes
before the upstream call starts), for no-store requests, and for requests
that skip the cache entirely (the bare HTTP hop); the load average (the box
is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
MODEL = "sim-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chat_request(port: int, prompt: str, extra_headers: str = "") -> bytes:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{extra_headers}"
            f"authorization: Bearer bench-key\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}").encode()


class Conn:
    """One keep-alive connection; ``call`` sends a request and returns (seconds, status, headers)."""

    def __init__(self, port: int):
        self.port = port

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def call(self, raw: bytes) -> tuple[float, int, bytes]:
        t0 = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return time.perf_counter() - t0, int(head[9:12]), head

    def close(self) -> None:
        self.writer.close()


def machine() -> dict:
    """The CPU a run's latencies belong to: its model, cores and the int8 kernels the models get.

    Latency moves with it: the verifier took ~2.4 ms a pair on a VNNI box and ~5.6 ms on an
    AVX2-only AMD EPYC, same code.
    """
    from gpu_embed.hardware import cpu_count, int8_variant

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model, "cores": cpu_count(), "int8_variant": int8_variant()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


async def _sequential(port: int, raws: list[bytes]) -> list[tuple[float, int, bytes]]:
    conn = await Conn(port).open()
    try:
        return [await conn.call(raw) for raw in raws]
    finally:
        conn.close()


async def _hammer(port: int, raw: bytes, connections: int, duration: float) -> list[float]:
    conns = [await Conn(port).open() for _ in range(connections)]
    latencies: list[float] = []
    stop = time.perf_counter() + duration

    async def loop(conn: Conn) -> None:
        while time.perf_counter() < stop:
            seconds, status, _ = await conn.call(raw)
            if status != 200:
                raise RuntimeError(f"status {status}")
            latencies.append(seconds)

    await asyncio.gather(*(loop(c) for c in conns))
    for c in conns:
        c.close()
    return latencies


async def _paired(proxy_port: int, sim_port: int,
                  pairs: list[tuple[bytes, bytes]]) -> tuple[list[float], list[float]]:
    """Time each (to proxy, to simulator) pair on two warm keep-alive connections, alternating order."""
    proxy, sim = await Conn(proxy_port).open(), await Conn(sim_port).open()
    warm = chat_request(sim_port, "warm-up")
    await sim.call(warm)
    await proxy.call(warm.replace(f"127.0.0.1:{sim_port}".encode(), f"127.0.0.1:{proxy_port}".encode()))
    via_proxy: list[float] = []
    direct: list[float] = []
    try:
        for i, (to_proxy, to_sim) in enumerate(pairs):
            order = [(proxy, to_proxy, via_proxy), (sim, to_sim, direct)]
            for conn, raw, into in order if i % 2 else order[::-1]:
                seconds, status, head = await conn.call(raw)
                if status != 200 or (conn is proxy and b"x-semcache-status: miss" not in head.lower()):
                    raise RuntimeError(f"miss phase: status {status}, head {head[:200]!r}")
                into.append(seconds)
    finally:
        proxy.close()
        sim.close()
    return via_proxy, direct


def _worker(port: int, raw: bytes, connections: int, duration: float, out: mp.Queue) -> None:
    import uvloop

    out.put(uvloop.run(_hammer(port, raw, connections, duration)))


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"child exited with {proc.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s")


def _live_reader(port: int, token: str, streams: int, ready: mp.Event, stop: mp.Event, out: mp.Queue) -> None:
    """Keep ``streams`` dashboards' ``/admin/live`` streams open (in their own process) until ``stop``."""
    async def one(client: httpx.AsyncClient) -> int:
        events = 0
        async with client.stream("GET", "/admin/live", headers={"authorization": f"Bearer {token}"}) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"/admin/live: status {resp.status_code}")
            async for chunk in resp.aiter_bytes():
                events += chunk.count(b"data: ")
                if events and not ready.is_set():
                    ready.set()
                if stop.is_set():
                    break
        return events

    async def main() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None) as client:
            out.put(sum(await asyncio.gather(*(one(client) for _ in range(streams)))))

    asyncio.run(main())


def _hit_phases(args: argparse.Namespace, port: int, raw: bytes) -> tuple[list[float], list[float]]:
    """Single-client hit latencies, then hit latencies of ``args.clients`` clients in ``args.procs`` processes."""
    import uvloop

    single = [s for s, _, _ in uvloop.run(_sequential(port, [raw] * args.single))]
    queue: mp.Queue = mp.Queue()
    per = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
    workers = [mp.Process(target=_worker, args=(port, raw, n, args.duration, queue)) for n in per]
    for w in workers:
        w.start()
    many = [x for _ in workers for x in queue.get()]
    for w in workers:
        w.join()
    return single, many


def run_live_streams(args: argparse.Namespace) -> dict:
    """Hit p50 and hits/s with ``args.live_streams`` dashboards streaming vs none, alternating, same proxy."""
    import uvloop

    sim_port, proxy_port, token = free_port(), free_port(), "bench-admin"
    work = Path(tempfile.mkdtemp(prefix="semcache-bench-"))
    env = {**os.environ, "SEMCACHE_LOG_LEVEL": "warning"}
    sim = subprocess.Popen([sys.executable, "-m", "evaluation.engine_sim", "--model", MODEL, "--port", str(sim_port),
                            "--prefill-ms-per-token", "0", "--decode-ms-per-token", str(args.decode_ms)],
                           cwd=ROOT, env=env)
    proxy = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--upstream", f"http://127.0.0.1:{sim_port}/v1",
                              "--port", str(proxy_port), "--sqlite-path", str(work / "cache.db"),
                              "--log-level", "warning"], cwd=ROOT,
                             env={**env, "SEMCACHE_ADMIN_TOKEN": token,
                                  "SEMCACHE_DASHBOARD_INTERVAL_S": str(args.live_interval)})
    rounds: dict[str, list[tuple[list[float], list[float]]]] = {"closed": [], "open": []}
    events = 0
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/health", sim)
        wait_ready(f"http://127.0.0.1:{proxy_port}/readyz", proxy)
        raw = chat_request(proxy_port, "What is the capital of France?")
        if b"x-semcache-status: hit" not in uvloop.run(_sequential(proxy_port, [raw, raw]))[1][2].lower():
            raise SystemExit("priming failed: the second request was not a hit")
        uvloop.run(_sequential(proxy_port, [raw] * 200))  # warm-up
        for mode in ["closed", "open"] * args.rounds:  # alternated, so drift on a shared box hits both
            if mode == "closed":
                rounds[mode].append(_hit_phases(args, proxy_port, raw))
                continue
            ready, stop, out = mp.Event(), mp.Event(), mp.Queue()
            reader = mp.Process(target=_live_reader, args=(proxy_port, token, args.live_streams, ready, stop, out))
            reader.start()
            if not ready.wait(30):
                raise SystemExit("the /admin/live streams did not start")
            rounds[mode].append(_hit_phases(args, proxy_port, raw))
            stop.set()
            events += out.get(timeout=30)
            reader.join(timeout=30)
    finally:
        for p in (proxy, sim):
            p.terminate()
            p.wait(timeout=20)
    result: dict = {"live_streams": args.live_streams, "live_interval_s": args.live_interval,
                    "live_events_received": events, "clients": args.clients, "rounds": args.rounds}
    for mode, runs in rounds.items():
        single = [x for s, _ in runs for x in s]
        many = [x for _, m in runs for x in m]
        result[mode] = {"hit_p50_ms_1_client": pct(single, 0.50), "hit_p99_ms_1_client": pct(single, 0.99),
                        "hits_per_s": len(many) / (args.duration * len(runs)),
                        "hit_p50_ms_n_clients": pct(many, 0.50), "hit_p99_ms_n_clients": pct(many, 0.99)}
    result["load_average"], result["machine"] = os.getloadavg(), machine()
    return result


def run(args: argparse.Namespace) -> dict:
    import uvloop

    sim_port, proxy_port, plain_port = free_port(), free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="semcache-bench-"))
    env = {**os.environ, "SEMCACHE_LOG_LEVEL": "warning"}
    sim = subprocess.Popen([sys.executable, "-m", "evaluation.engine_sim", "--model", MODEL, "--port", str(sim_port),
                            "--prefill-ms-per-token", "0", "--decode-ms-per-token", str(args.decode_ms)],
                           cwd=ROOT, env=env)

    def serve(port: int, name: str, **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--upstream",
                                 f"http://127.0.0.1:{sim_port}/v1", "--port", str(port),
                                 "--sqlite-path", str(work / f"{name}.db"), "--log-level", "warning"],
                                cwd=ROOT, env={**env, **extra_env})

    proxy = serve(proxy_port, "cache")
    # The baseline for speculative forwarding: the same proxy, deciding before it forwards.
    plain = serve(plain_port, "plain", SEMCACHE_SPECULATIVE_FORWARD="false")
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/health", sim)
        wait_ready(f"http://127.0.0.1:{proxy_port}/readyz", proxy)
        wait_ready(f"http://127.0.0.1:{plain_port}/readyz", plain)
        hit_raw = chat_request(proxy_port, "What is the capital of France?")
        first = uvloop.run(_sequential(proxy_port, [hit_raw, hit_raw]))
        if b"x-semcache-status: hit" not in first[1][2].lower():
            raise SystemExit("priming failed: the second request was not a hit")
        uvloop.run(_sequential(proxy_port, [hit_raw] * 200))  # warm-up
        single, many = _hit_phases(args, proxy_port, hit_raw)

        def misses(tag: str, headers: str, port: int = proxy_port) -> tuple[list[float], list[float]]:
            """Same new prompts through the proxy and directly, alternating which goes first.

            Both sides are measured the same way: one keep-alive connection each
            (the proxy keeps its own to the simulator), opened and warmed before.
            """
            pairs = [(chat_request(port, f"Unique {tag} prompt number {i}: what is {i} plus {i + 7}?",
                                   headers),
                      chat_request(sim_port, f"Unique {tag} prompt number {i}: what is {i} plus {i + 7}?"))
                     for i in range(args.misses)]
            return uvloop.run(_paired(port, sim_port, pairs))

        via_proxy, direct = misses("miss", "")
        plain_proxy, plain_direct = misses("plain", "", plain_port)
        nostore_proxy, nostore_direct = misses("nostore", "cache-control: no-store\r\n")
        # Forced category + no-cache + no-store: no embedding, no search, no store --
        # what the HTTP hop through the proxy costs by itself.
        bare_proxy, bare_direct = misses("bare", "cache-control: no-cache, no-store\r\n"
                                         "x-semcache-category: default\r\n")
        return {
            "hit_p50_ms_1_client": pct(single, 0.50), "hit_p99_ms_1_client": pct(single, 0.99),
            "clients": args.clients, "hits_per_s": len(many) / args.duration,
            "hit_p50_ms_n_clients": pct(many, 0.50), "hit_p99_ms_n_clients": pct(many, 0.99),
            "miss_p50_ms_proxy": statistics.median(via_proxy) * 1000, "miss_p50_ms_direct":
                statistics.median(direct) * 1000,
            "miss_overhead_p50_ms": (statistics.median(via_proxy) - statistics.median(direct)) * 1000,
            "miss_overhead_paired_p50_ms": statistics.median(p - d for p, d in zip(via_proxy, direct)) * 1000,
            "load_average": os.getloadavg(), "machine": machine(),
            "misses_measured": len(via_proxy), "sim_decode_ms_per_token": args.decode_ms,
            "miss_overhead_p50_ms_no_store": (statistics.median(nostore_proxy)
                                              - statistics.median(nostore_direct)) * 1000,
            "miss_overhead_p50_ms_no_speculation": (statistics.median(plain_proxy)
                                                    - statistics.median(plain_direct)) * 1000,
            "miss_overhead_paired_p50_ms_no_speculation": statistics.median(
                p - d for p, d in zip(plain_proxy, plain_direct)) * 1000,
            "miss_overhead_p50_ms_forward_only": (statistics.median(bare_proxy)
                                                  - statistics.median(bare_direct)) * 1000,
        }
    finally:
        for p in (proxy, plain, sim):
            p.terminate()
            p.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the concurrent phase")
    parser.add_argument("--clients", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--single", type=int, default=2000, help="single-client hit requests")
    parser.add_argument("--misses", type=int, default=300, help="miss requests (each also sent directly)")
    parser.add_argument("--decode-ms", type=float, default=0.5, help="simulator decode time per token")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--live-streams", type=int, default=0,
                        help="instead: hit p50 and hits/s with N dashboards' /admin/live streams open vs closed")
    parser.add_argument("--live-interval", type=float, default=0.2, help="/admin/live interval (s) for --live-streams")
    parser.add_argument("--rounds", type=int, default=2, help="closed/open rounds for --live-streams (alternated)")
    args = parser.parse_args(argv)
    if args.live_streams:
        r = run_live_streams(args)
        if args.json:
            print(json.dumps(r, indent=2))
            return 0
        print(f"/admin/live streams open: {r['live_streams']} (every {r['live_interval_s']} s; "
              f"{r['live_events_received']} snapshots received); {r['rounds']} alternated rounds of each")
        for mode in ("closed", "open"):
            m = r[mode]
            print(f"streams {mode:<6}  hit p50 {m['hit_p50_ms_1_client']:.2f} ms  p99 {m['hit_p99_ms_1_client']:.2f} ms"
                  f" (1 client)   {m['hits_per_s']:.0f} hits/s  p50 {m['hit_p50_ms_n_clients']:.2f} ms "
                  f"p99 {m['hit_p99_ms_n_clients']:.2f} ms ({r['clients']} clients)")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in r['load_average'])}")
        return 0
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"hit latency, 1 client:        p50 {r['hit_p50_ms_1_client']:.2f} ms   p99 {r['hit_p99_ms_1_client']:.2f} ms")
    print(f"hits, {r['clients']} clients:          {r['hits_per_s']:.0f} hits/s   p50 "
          f"{r['hit_p50_ms_n_clients']:.2f} ms   p99 {r['hit_p99_ms_n_clients']:.2f} ms")
    print(f"miss p50:                     proxy+sim {r['miss_p50_ms_proxy']:.2f} ms   sim direct "
          f"{r['miss_p50_ms_direct']:.2f} ms   overhead {r['miss_overhead_p50_ms']:.2f} ms "
          f"({r['misses_measured']} misses)")
    print(f"miss overhead, paired:        p50 {r['miss_overhead_paired_p50_ms']:.2f} ms "
          "(median of per-prompt differences)")
    print(f"miss overhead, no speculation: {r['miss_overhead_p50_ms_no_speculation']:.2f} ms "
          f"(paired {r['miss_overhead_paired_p50_ms_no_speculation']:.2f} ms; speculative_forward off: "
          "embedding + search before forwarding)")
    print(f"load average at the end:      {' '.join(f'{x:.2f}' for x in r['load_average'])}")
    print(f"miss overhead, no-store:      {r['miss_overhead_p50_ms_no_store']:.2f} ms (lookup + forward only)")
    print(f"miss overhead, forward only:  {r['miss_overhead_p50_ms_forward_only']:.2f} ms "
          "(category forced, no-cache + no-store: no embedding, no search)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
