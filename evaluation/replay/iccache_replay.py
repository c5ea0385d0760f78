"""IC-Cache replay through the live proxy: large only vs cache only vs cache + IC-Cache, one run.

Data: ``qa/bitext_cs_4k5``. A bank of questions (``--bank``) is first sent
through each caching proxy so their reference answers, from the *large*
model, become cache entries (and IC-Cache examples). Then the same workload
is replayed against each system: held-out questions never seen before, with
``--repeat-rate`` of requests repeating an earlier workload question
verbatim, arriving as a Poisson process at ``--rate`` requests/s.

* large model: the engine simulator answering with the reference answers at
  GPU-like speed, ``--large-batch`` requests at a time (a busy shared GPU);
* small model: SmolLM2-135M-Instruct on llama.cpp (this machine's CPU);
* ``large-only``: the client talks to the large engine directly;
* ``cache-only``: ``semcache serve`` in front of it (no IC-Cache);
* ``cache+ic``: ``semcache serve --iccache``: misses may go to the small model with examples.

Per request: route (cache hit / small / large), latency, answer. Quality is
intent accuracy (the intent whose centroid of bank reference answers is
nearest to the answer, MiniLM) and MiniLM similarity to the held-out
reference. Throughput = requests / time from the first send to the last answer.

    python -m evaluation.replay.iccache_replay --out /tmp/icreplay.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from evaluation.experiments.iccache_experiment import DATA, SYSTEM, embed_all, load_rows, split
from evaluation.replay.systems import Process, engine_sim
from proxy.upstream.local_llm import MODEL_ALIAS, LocalLLM

LARGE = "sim-model"
POLICY = """\
defaults:
  threshold: 0.95
  ttl_seconds: null
  cache_truncated: true
categories:
  default: {}
"""


def iccache_yaml(args: argparse.Namespace) -> str:
    return f"""\
models:
  - {{name: {LARGE}, role: large, prompt_cost_per_1k: 1.0, completion_cost_per_1k: 3.0,
     nominal_latency_s: {args.max_tokens * args.large_decode_ms / 1000:.2f}, context_tokens: 8192}}
  - {{name: {MODEL_ALIAS}, role: small, prompt_cost_per_1k: 0.05, completion_cost_per_1k: 0.15,
     nominal_latency_s: {args.small_latency_s}, context_tokens: 2048}}
selection: {{max_examples: 3, length_weight: 1.0, diversity: 0.0, min_similarity: 0.5, token_budget: 700}}
router: {{cost_weight: {args.cost_weight}, latency_weight: {args.latency_weight}, alpha: 0.1}}
shadow_fraction: 0
scrape_interval_s: 0.25
"""


def workload(rows: list[dict], held: list[int], n: int, repeat_rate: float, rate: float, seed: int
             ) -> list[tuple[float, int]]:
    """(send offset s, row index): fresh held-out questions, some repeated verbatim, Poisson arrivals."""
    rng = random.Random(seed)
    fresh = list(held)
    rng.shuffle(fresh)
    out, seen, t = [], [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate)
        if seen and (rng.random() < repeat_rate or not fresh):
            row = rng.choice(seen)
        else:
            row = fresh.pop()
            seen.append(row)
        out.append((t, row))
    return out


async def ask(client: httpx.AsyncClient, url: str, question: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": LARGE, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}
    started = time.perf_counter()
    r = await client.post(url + "/chat/completions", json=body)
    r.raise_for_status()
    data = r.json()
    status = r.headers.get("x-semcache-status", "direct")
    route = "cache" if status == "hit" else r.headers.get("x-semcache-route", "large")
    return {"text": data["choices"][0]["message"]["content"] or "", "latency_s": time.perf_counter() - started,
            "route": route, "examples": int(r.headers.get("x-semcache-examples", 0)), "model": data.get("model")}


async def drive(url: str, rows: list[dict], plan: list[tuple[float, int]], max_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()

        async def one(offset: float, row: int) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            out = await ask(client, url, rows[row]["question"], max_tokens)
            out["row"] = row
            return out

        answers = await asyncio.gather(*(one(o, r) for o, r in plan))
        return {"answers": answers, "makespan_s": time.perf_counter() - start}


async def warm(url: str, rows: list[dict], bank: list[int], max_tokens: int) -> None:
    """Send the bank questions through a caching proxy: their large-model answers get cached."""
    sem = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(i: int) -> None:
            async with sem:
                await ask(client, url, rows[i]["question"], max_tokens)

        await asyncio.gather(*(one(i) for i in bank))


def serve(args: argparse.Namespace, work: Path, name: str, large_url: str, small_url: str | None) -> Process:
    (work / "policy.yaml").write_text(POLICY)
    cmd = [sys.executable, "-m", "proxy", "serve", "--upstream", f"{LARGE}={large_url}/v1", "--port", "{port}",
           "--policies", str(work / "policy.yaml"), "--sqlite-path", str(work / f"{name}.db"),
           "--admin-token", "replay", "--log-level", "warning"]
    if small_url is not None:
        (work / "iccache.yaml").write_text(iccache_yaml(args))
        cmd += ["--upstream", f"{MODEL_ALIAS}={small_url}", "--iccache", str(work / "iccache.yaml")]
    return Process(cmd, "/readyz", work / f"{name}.log")


async def score(rows: list[dict], bank: list[int], result: dict[str, Any]) -> dict[str, Any]:
    cache_dir = Path(tempfile.gettempdir())
    a_vecs = await embed_all([r["answer"] for r in rows], cache_dir / f"iccache_{Path(DATA).parent.name}_a.npy")
    groups = sorted({rows[i]["group"] for i in bank})
    centroids = np.stack([a_vecs[[i for i in bank if rows[i]["group"] == g]].mean(0) for g in groups])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    answers = result["answers"]
    vecs = await embed_all([a["text"] or " " for a in answers])
    intents = [groups[k] for k in np.argmax(vecs @ centroids.T, axis=1)]
    correct = np.array([intents[n] == rows[a["row"]]["group"] for n, a in enumerate(answers)])
    sims = np.array([float(vecs[n] @ a_vecs[a["row"]]) for n, a in enumerate(answers)])
    lat = np.array([a["latency_s"] for a in answers])
    routes = [a["route"] for a in answers]
    by_route = {r: {"n": int(sum(x == r for x in routes)),
                    "intent_accuracy": float(correct[[x == r for x in routes]].mean()) if r in routes else None,
                    "latency_p50_s": float(np.median(lat[[x == r for x in routes]])) if r in routes else None}
                for r in ("cache", "small", "large")}
    upstream = sum(x in ("small", "large") for x in routes)
    return {"requests": len(answers), "intent_accuracy": float(correct.mean()), "similarity": float(sims.mean()),
            "hit_rate": routes.count("cache") / len(answers),
            "offload_rate": routes.count("small") / upstream if upstream else 0.0,
            "throughput_rps": len(answers) / result["makespan_s"], "makespan_s": result["makespan_s"],
            "latency_p50_s": float(np.median(lat)), "latency_p95_s": float(np.percentile(lat, 95)),
            "latency_mean_s": float(lat.mean()), "by_route": by_route}


async def run(args: argparse.Namespace, small_url: str) -> dict[str, Any]:
    rows = load_rows(Path(args.data))
    held, bank_all = split(rows, args.per_intent, args.seed)
    bank = random.Random(args.seed).sample(bank_all, min(args.bank, len(bank_all)))
    plan = workload(rows, held, args.requests, args.repeat_rate, args.rate, args.seed)
    work = Path(tempfile.mkdtemp(prefix="icreplay-"))
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "systems": {}}
    # The bank is answered once, by a fast instance of the same large model behind a plain
    # caching proxy; both caching systems then start from a copy of that cache.
    started = time.perf_counter()
    with engine_sim(Path(args.data), work / "warm-sim.log", decode_ms=0.0, max_batch=64) as fast, \
            serve(args, work, "warm", fast.url, None) as warm_proxy:
        await warm(warm_proxy.url + "/v1", rows, bank, args.max_tokens)
    print(f"bank of {len(bank)} large answers cached in {time.perf_counter() - started:.0f} s", flush=True)
    with engine_sim(Path(args.data), work / "large.log", decode_ms=args.large_decode_ms,
                    max_batch=args.large_batch) as large:
        for system in args.systems:
            if system == "large-only":
                url = large.url + "/v1"
                result = await drive(url, rows, plan, args.max_tokens)
            else:
                for suffix in ("", "-wal", "-shm"):
                    if (work / f"warm.db{suffix}").exists():
                        shutil.copy(work / f"warm.db{suffix}", work / f"{system}.db{suffix}")
                with serve(args, work, system, large.url, small_url if system == "cache+ic" else None) as proxy:
                    url = proxy.url + "/v1"
                    await asyncio.sleep(1.0)  # the IC-Cache scraper's first look at the engines
                    result = await drive(url, rows, plan, args.max_tokens)
            out["systems"][system] = await score(rows, bank_all, result)
            out["systems"][system]["raw"] = result["answers"]
            s = out["systems"][system]
            print(f"{system:>11}: intent acc {s['intent_accuracy']:.3f} sim {s['similarity']:.3f} "
                  f"hit {s['hit_rate']:.2f} offload {s['offload_rate']:.2f} "
                  f"{s['throughput_rps']:.2f} req/s p50 {s['latency_p50_s']:.2f} s p95 {s['latency_p95_s']:.2f} s",
                  flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--per-intent", type=int, default=4, help="held-out questions per intent (the fresh requests)")
    p.add_argument("--bank", type=int, default=1350, help="bank questions answered (and cached) before the replay")
    p.add_argument("--requests", type=int, default=120)
    p.add_argument("--repeat-rate", type=float, default=0.25)
    p.add_argument("--rate", type=float, default=1.0, help="requests per second (Poisson)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--large-batch", type=int, default=1, help="requests the large engine runs at once")
    p.add_argument("--large-decode-ms", type=float, default=25.0)
    p.add_argument("--small-latency-s", type=float, default=4.0, help="the small model's nominal latency")
    p.add_argument("--latency-weight", type=float, default=0.1, help="router cost units per second of latency")
    p.add_argument("--cost-weight", type=float, default=0.5, help="lambda: reward = quality - lambda x cost")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", nargs="+", default=["large-only", "cache-only", "cache+ic"])
    p.add_argument("--small-url", default="", help="OpenAI base URL of the small model (default: start SmolLM2)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.small_url:
        results = asyncio.run(run(args, args.small_url))
    else:
        with LocalLLM(threads=2) as engine:
            results = asyncio.run(run(args, engine.base_url))
    summary = {k: {m: v for m, v in s.items() if m != "raw"} for k, s in results["systems"].items()}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
