"""Routing on real engines: two llama.cpp replicas, shared long prefixes, multi-turn sessions.

Two replicas of the local engine (:class:`proxy.upstream.local_llm.LocalLLM`,
SmolLM2-135M on llama.cpp, one thread each; its server keeps the KV state of
earlier prompts in a RAM cache and reuses the longest matching prefix). The
workload: ``--docs`` different documents of ``--doc-words`` words used as
system prompts, ``--turns`` questions on each asked as one conversation
(every turn carries the earlier ones), the conversations running at once,
so their turns interleave. Every strategy gets fresh replicas (cold caches)
and the same requests; requests go through the proxy's upstream path
(:class:`proxy.upstream.pool.UpstreamPool`: router, HTTP client, in-flight
counts) but not its semantic cache, so every request is a miss.

TTFT is the time to the first streamed event of the answer (queueing in the
engine included: llama.cpp's server runs one request at a time); "total" is
the wall time of the whole workload per strategy.

    python -m evaluation.bench.bench_routing_local --docs 4 --doc-words 500 --turns 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from proxy.settings import ProxySettings
from proxy.upstream.local_llm import MODEL_ALIAS, LocalLLM
from proxy.upstream.pool import PATHS, UpstreamPool

STRATEGIES = ("round_robin", "least_loaded", "session", "prefix")
_WORDS = ("the customer may return any device within thirty days of delivery provided that the seal is intact "
          "and the invoice number is quoted refunds are paid to the original payment method warranty claims "
          "need a photo of the fault firmware updates are free for five years support answers within one day").split()


def _doc(i: int, words: int) -> str:
    rng = random.Random(i)
    return f"Policy document {i}. " + " ".join(rng.choice(_WORDS) for _ in range(words))


def _pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


async def _session(pool: UpstreamPool, doc: str, questions: list[str], max_tokens: int, start_gap: float,
                   ttfts: list[float]) -> None:
    await asyncio.sleep(start_gap)
    messages: list[dict[str, str]] = [{"role": "system", "content": doc}]
    for q in questions:
        messages.append({"role": "user", "content": q})
        body = {"model": MODEL_ALIAS, "messages": list(messages), "max_tokens": max_tokens, "stream": True,
                "temperature": 0.0}
        t0 = time.perf_counter()
        upstream = await pool.router.route(body)
        response = await pool.open_counted(upstream, PATHS["chat"], body, None)
        first, text = None, b""
        try:
            async for data in response.aiter_bytes():
                text += data
                if first is None and b"data: {" in text:  # not the server's ": ping" comments
                    first = time.perf_counter()
        finally:
            upstream.in_flight -= 1
            await response.aclose()
        ttfts.append(first - t0)
        answer = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                         for line in text.decode().splitlines()
                         if line.startswith("data: {") and json.loads(line[6:])["choices"])
        messages.append({"role": "assistant", "content": answer})


async def run_strategy(name: str, args: argparse.Namespace, docs: list[str],
                       questions: list[list[str]]) -> dict[str, Any]:
    engines = [LocalLLM(threads=1, n_ctx=args.n_ctx) for _ in range(2)]
    try:
        for e in engines:
            await asyncio.to_thread(e.start)
        settings = ProxySettings(upstreams=[e.base_url for e in engines], routing=name,
                                 upstream_metrics_interval_s=0)
        pool = UpstreamPool(settings)
        ttfts: list[float] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(_session(pool, d, qs, args.max_tokens, i * args.stagger_s, ttfts)
                               for i, (d, qs) in enumerate(zip(docs, questions, strict=True))))
        total = time.perf_counter() - t0
        await pool.aclose()
    finally:
        for e in engines:
            e.stop()
    return {"strategy": name, "requests": len(ttfts), "ttft_p50_s": round(_pct(ttfts, 50), 3),
            "ttft_p95_s": round(_pct(ttfts, 95), 3), "total_s": round(total, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=8)
    p.add_argument("--doc-words", type=int, default=750, help="~1,000 SmolLM2 tokens")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--stagger-s", type=float, default=0.5, help="gap between conversation starts")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    docs = [_doc(i, args.doc_words) for i in range(args.docs)]
    questions = [[f"Question {t + 1} about document {i}: what does it say about item {t}?"
                  for t in range(args.turns)] for i in range(args.docs)]
    rows = []
    for name in args.strategies.split(","):
        rows.append(asyncio.run(run_strategy(name, args, docs, questions)))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| strategy | requests | TTFT p50 s | TTFT p95 s | total s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} | {r['requests']} | {r['ttft_p50_s']} | {r['ttft_p95_s']} | {r['total_s']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
