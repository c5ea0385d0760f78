"""The engine HTTP client: the hand-written HTTP/1.1 client against aiohttp (C parser) and httpx.

What a miss pays to reach the engine and read its answer, per client, in one
run against one engine simulator on loopback (a separate process, answering
at once: decode and prefill cost 0): requests go round-robin over the three
clients (1 request each in turn, a different one first each round), so a busy machine slows all three alike.
Non-streamed and streamed (SSE, 16 tokens) answers; p50/p95 latency in ms.
Then ``--concurrency`` requests at once per client, in turn, for throughput.
Hits never reach an engine, so the client cannot change their latency.

    python -m evaluation.bench.bench_http_client --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from proxy.upstream.http1 import Http1Client
from proxy.upstream.local_llm import free_port

HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def _body(i: int, stream: bool) -> bytes:
    return json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": f"question {i}"}],
                       "max_tokens": 16, "stream": stream}).encode()


def clients(url: str) -> tuple[dict[str, Callable[[bytes], Awaitable[int]]], Callable[[], Awaitable[None]]]:
    h1 = Http1Client(max_connections=512)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=512))

    async def http1(body: bytes) -> int:
        r = await h1.request("POST", url, HEADERS, body)
        n = 0
        async for chunk in r.aiter_bytes():
            n += len(chunk)
        await r.aclose()
        return n

    async def aio(body: bytes) -> int:
        async with session.post(url, data=body, headers=HEADERS) as r:
            n = 0
            async for chunk in r.content.iter_any():
                n += len(chunk)
            return n

    async def hxc(body: bytes) -> int:
        async with hx.stream("POST", url, content=body, headers=HEADERS) as r:
            n = 0
            async for chunk in r.aiter_raw():
                n += len(chunk)
            return n

    async def close() -> None:
        await h1.aclose()
        await session.close()
        await hx.aclose()

    return {"http1 (hand-written)": http1, "aiohttp": aio, "httpx": hxc}, close


def _ms(xs: list[float], q: int) -> float:
    return round(statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000, 3)


async def measure(url: str, requests: int, concurrency: int) -> list[dict]:
    calls, close = clients(url)
    rows = []
    try:
        for c in calls.values():  # warm every pool
            await asyncio.gather(*(c(_body(i, False)) for i in range(8)))
        for stream in (False, True):
            lat: dict[str, list[float]] = {n: [] for n in calls}
            errors = dict.fromkeys(calls, 0)
            names = list(calls)
            for i in range(requests):
                for name in names[i % 3:] + names[:i % 3]:  # each client first in turn: no position bias
                    c = calls[name]
                    t0 = time.perf_counter()
                    try:
                        await c(_body(i, stream))
                    except Exception as exc:  # noqa: BLE001 -- a failed call is a finding, not a crash
                        errors[name] += 1
                        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        continue
                    lat[name].append(time.perf_counter() - t0)
            for name, xs in lat.items():
                rows.append({"client": name, "stream": stream, "p50_ms": _ms(xs, 50), "p95_ms": _ms(xs, 95),
                             "errors": errors[name]})
        for _ in range(2):  # alternate the throughput rounds
            for name, c in calls.items():
                t0 = time.perf_counter()
                await asyncio.gather(*(c(_body(i, False)) for i in range(concurrency * 10)))
                rate = concurrency * 10 / (time.perf_counter() - t0)
                row = next(r for r in rows if r["client"] == name and not r["stream"])
                row.setdefault("req_per_s", []).append(round(rate))
    finally:
        await close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "evaluation.engine_sim", "--port", str(port),
                            "--decode-ms-per-token", "0", "--prefill-ms-per-token", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        rows = asyncio.run(measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests,
                                   args.concurrency))
    finally:
        sim.terminate()
        sim.wait()
    print("| client | answer | p50 ms | p95 ms | failed | req/s at concurrency %d (2 rounds) |\n"
          "|---|---|---|---|---|---|" % args.concurrency)
    for r in rows:
        print(f"| {r['client']} | {'stream' if r['stream'] else 'json'} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['errors']} | {r.get('req_per_s', '')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
