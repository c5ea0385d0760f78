"""Identical concurrent streamed misses: one upstream stream fanned out vs one stream each.

Starts the engine simulator and two ``semcache serve`` proxies over it (the
default CPU embedder, SQLite): one with coalescing on (the default), the
baseline with ``SEMCACHE_COALESCE=false``. Each round sends ``--clients``
identical streamed chat requests at once (a new question per round, so every
round is a cold miss), to each proxy in turn, and reads every stream to the end.

    .venv/bin/python -m evaluation.bench.bench_stream_coalesce [--clients 32] [--rounds 5] [--decode-ms 10]

Prints per proxy: upstream requests per round (from the simulator's own
counters; the baseline makes fewer than ``--clients`` when a late client's
lookup already finds the first stream's stored answer), time to first byte and
to ``[DONE]`` (p50, p99 over all streams),
whether every client got the same events, and the load average (the box may
be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from evaluation.bench.bench_proxy import MODEL, ROOT, free_port, pct, wait_ready


def _finished(sim_url: str) -> float:
    total = 0.0
    for line in httpx.get(sim_url + "/metrics").text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _one(client: httpx.AsyncClient, body: dict) -> tuple[float, float, bytes]:
    started = time.perf_counter()
    first = None
    data = b""
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        async for part in r.aiter_bytes():
            first = first or time.perf_counter() - started
            data += part
    return first or 0.0, time.perf_counter() - started, data


async def _round(url: str, body: dict, clients: int) -> list[tuple[float, float, bytes]]:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120,
                                 headers={"authorization": "Bearer bench-key"}) as client:
        return await asyncio.gather(*(_one(client, body) for _ in range(clients)))


def _events(data: bytes) -> list[object]:
    """The events without id and created (a fanned-out stream keeps the upstream's; fine either way)."""
    out: list[object] = []
    for line in data.split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[6:].decode()
            out.append(payload if payload == "[DONE]" else
                       {k: v for k, v in json.loads(payload).items() if k not in ("id", "created")})
    return out


def run(args: argparse.Namespace) -> dict:
    sim_port, on_port, off_port = free_port(), free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="semcache-bench-stream-"))
    env = {**os.environ, "SEMCACHE_LOG_LEVEL": "warning"}
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = subprocess.Popen([sys.executable, "-m", "evaluation.engine_sim", "--model", MODEL, "--port", str(sim_port),
                            "--decode-ms-per-token", str(args.decode_ms), "--default-max-tokens", "64"],
                           cwd=ROOT, env=env)

    def serve(port: int, name: str, **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--upstream", f"{sim_url}/v1",
                                 "--port", str(port), "--sqlite-path", str(work / f"{name}.db"),
                                 "--log-level", "warning"], cwd=ROOT, env={**env, **extra_env})

    procs = {"coalesced": serve(on_port, "on"), "baseline (coalesce off)": serve(off_port, "off",
                                                                                SEMCACHE_COALESCE="false")}
    ports = {"coalesced": on_port, "baseline (coalesce off)": off_port}
    try:
        wait_ready(sim_url + "/health", sim)
        for name, proc in procs.items():
            wait_ready(f"http://127.0.0.1:{ports[name]}/readyz", proc)
        stats = {name: {"upstream": [], "ttfb": [], "total": [], "same": True} for name in procs}
        for r in range(args.rounds):
            for name in (list(procs) if r % 2 == 0 else list(procs)[::-1]):  # alternate who goes first
                body = {"model": MODEL, "stream": True, "messages": [
                    {"role": "user", "content": f"Round {r} for {name}: tell me a story about caches."}]}
                before = _finished(sim_url)
                results = asyncio.run(_round(f"http://127.0.0.1:{ports[name]}", body, args.clients))
                s = stats[name]
                s["upstream"].append(_finished(sim_url) - before)
                s["ttfb"] += [f for f, _, _ in results]
                s["total"] += [t for _, t, _ in results]
                events = [_events(d) for _, _, d in results]
                s["same"] = s["same"] and all(e == events[0] and e[-1] == "[DONE]" for e in events)
        report = {"clients": args.clients, "rounds": args.rounds, "decode_ms": args.decode_ms,
                  "loadavg": os.getloadavg()}
        for name, s in stats.items():
            report[name] = {
                "upstream_requests_per_round": sum(s["upstream"]) / len(s["upstream"]),
                "ttfb_ms_p50": pct(s["ttfb"], 0.5), "ttfb_ms_p99": pct(s["ttfb"], 0.99),
                "done_ms_p50": pct(s["total"], 0.5), "done_ms_p99": pct(s["total"], 0.99),
                "all_clients_same_events": s["same"],
            }
        return report
    finally:
        for proc in [*procs.values(), sim]:
            proc.terminate()
        for proc in [*procs.values(), sim]:
            proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decode-ms", type=float, default=10.0, help="simulated decode time per token")
    report = run(parser.parse_args(argv))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
