"""Benchmark: lookup latency and memory at 10k / 100k / 1M entries, HNSW vs flat.

Real-like vectors: a few thousand real QQP questions are embedded with the
default MiniLM model; each stored vector is a real one plus Gaussian noise
(cosine ~0.85 to its source), each query a real one plus less noise (~0.9),
so neighbourhoods look like paraphrase clusters rather than uniform noise.

For each size it prints, in one run:
* raw index search (k=4) p50/p99 for the exact flat index and for HNSW
  (same vectors, same queries), HNSW recall@1 against flat, build time, memory;
* the decision time of a full ``SemanticCache.lookup`` (request
  normalisation, category rules, key hashing, exact-repeat check, HNSW search
  (inline up to 100k entries per partition, in a worker thread above), TTL
  check, guards, document fetch from an in-memory store), excluding
  embedding: the embedder returns precomputed vectors.

    python -m evaluation.bench.bench_lookup --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np

from semcache import CacheEntry, CacheRequest, SemanticCache, load_policies_text
from semcache.index import FlatIndex, HNSWParams
from semcache.stores import MemoryStore
from evaluation.workloads.data import DATA

THRESHOLD = 0.72
POLICY = f"categories: {{default: {{threshold: {THRESHOLD}, ttl_seconds: null, quota: {{max_entries: 2000000}}}}}}"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def real_vectors(n: int) -> tuple[list[str], np.ndarray]:
    from gpu_embed import EmbedderSettings, build_embedder

    texts, seen = [], set()
    with (DATA / "qqp" / "qqp-dev.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            for t in (row["a"], row["b"]):
                if t not in seen:
                    seen.add(t)
                    texts.append(t)
            if len(texts) >= n:
                break
    embedder = build_embedder(EmbedderSettings(backend="onnx-fp32", warmup=False))

    async def run():
        try:
            return np.concatenate([await embedder.embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
        finally:
            await embedder.aclose()

    return texts, asyncio.run(run())


def noisy(base: np.ndarray, idx: np.ndarray, sigma: float, rng) -> np.ndarray:
    out = base[idx] + rng.normal(scale=sigma, size=(len(idx), base.shape[1])).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def pct(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


class PrecomputedEmbedder:
    """Returns vectors computed beforehand, so a lookup's time excludes embedding."""

    def __init__(self, vectors: dict[str, np.ndarray], dim: int):
        self._vectors, self._dim = vectors, dim

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> str:
        return "bench/precomputed"

    async def embed(self, texts):
        if len(texts) == 1:  # the lookup path: no copy, so the figure is the cache's own time
            return self._vectors[texts[0]][None, :]
        return np.stack([self._vectors[t] for t in texts])


async def bench_size(n: int, base: np.ndarray, texts: list[str], queries: int, threads: int, rng) -> dict:
    dim = base.shape[1]
    s_src = rng.integers(len(base), size=n)
    stored = noisy(base, s_src, 0.0316, rng)
    q_src = rng.integers(len(base), size=queries)
    qvecs = noisy(base, q_src, 0.025, rng)
    # Queries reword their source question slightly, so they are not exact repeats.
    qtexts = [f"{texts[i]} please" for i in q_src]
    embedder = PrecomputedEmbedder(dict(zip(qtexts, qvecs)), dim)
    hnsw = HNSWParams(build_threads=threads, initial_capacity=n)
    cache = SemanticCache(policies=load_policies_text(POLICY), store=MemoryStore(), embedder=embedder,
                          hnsw=hnsw, purge_interval_s=0)
    await cache.start()
    probe = await cache.lookup(CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": qtexts[0]}]}))
    partition = probe.context.partition
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"}, "finish_reason": "stop"}]}

    rss0 = rss_mb()
    entries = [
        CacheEntry.model_construct(
            id=f"e{i}", tenant="anonymous", namespace="", partition=partition, category="default",
            policy_version="1", model="m", endpoint="chat", query=texts[s_src[i]], vector=stored[i],
            response=answer, chunks=None, embedder=embedder.identity, created_at=0.0, expires_at=None,
            last_hit_at=0.0, hit_count=0, prompt_tokens=0, completion_tokens=0, utility=0.0, utility_uses=0,
            trust=1.0,
        )
        for i in range(n)
    ]
    for e in entries:
        await cache.doc_store.put(e)
    t0 = time.perf_counter()
    for start in range(0, n, 50_000):
        cache.catalog.add_many(entries[start:start + 50_000], capacity_hint=n)
    build_s = time.perf_counter() - t0
    rss_hnsw = rss_mb() - rss0
    del entries

    flat = FlatIndex(dim, capacity=n)
    flat.add([f"e{i}" for i in range(n)], stored)

    nq_flat = min(queries, 200 if n >= 1_000_000 else queries)
    # Separate loops: a flat search streams the whole matrix through the CPU caches, so
    # interleaving it would time HNSW on caches the flat scan just evicted.
    hnsw_times, found = [], []
    for j in range(queries):
        t = time.perf_counter()
        got = cache.index.search(partition, qvecs[j], 4)
        hnsw_times.append(time.perf_counter() - t)
        found.append(got)
    flat_times, agree, near, near_agree = [], 0, 0, 0
    for j in range(nq_flat):
        t = time.perf_counter()
        exact = flat.search(qvecs[j], 4)
        flat_times.append(time.perf_counter() - t)
        same = bool(found[j]) and found[j][0][0] == exact[0][0]
        agree += same
        # What decides hits: recall where the true neighbour is above the threshold.
        if exact[0][1] >= THRESHOLD:
            near += 1
            near_agree += same

    lookup_times, hits = [], 0
    for j in range(queries):
        req = CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": qtexts[j]}]})
        t = time.perf_counter()
        res = await cache.lookup(req)
        lookup_times.append(time.perf_counter() - t)
        hits += res.status == "hit"
    row = {
        "entries": n,
        "flat_p50_ms": pct(flat_times)[0], "flat_p99_ms": pct(flat_times)[1],
        "flat_mb": flat.nbytes / 2**20,
        "hnsw_p50_ms": pct(hnsw_times)[0], "hnsw_p99_ms": pct(hnsw_times)[1],
        "hnsw_recall_at_1": agree / nq_flat, "hnsw_build_s": build_s,
        "hnsw_recall_above_threshold": near_agree / near if near else float("nan"),
        "index_mb": cache.index.stats()["bytes"] / 2**20,
        "cache_rss_mb": rss_hnsw,
        "lookup_p50_ms": pct(lookup_times)[0], "lookup_p99_ms": pct(lookup_times)[1],
        "lookup_hit_rate": hits / queries,
    }
    await cache.close()
    del flat
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--real", type=int, default=4000, help="real questions embedded as cluster centres")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="HNSW build threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    texts, base = real_vectors(args.real)
    print(f"{len(base)} real MiniLM vectors (dim {base.shape[1]}); HNSW M=16 ef_construction=100 ef=40; k=4")
    print("recall@1: all queries / queries whose exact neighbour is above the threshold; index MB: vectors and"
          " graph; process MB: RSS growth incl. entry metadata and the in-memory document store")
    header = (f"{'entries':>9} | {'flat p50/p99 ms':>16} | {'flat MB':>8} | {'HNSW p50/p99 ms':>16} | {'recall@1':>11} "
              f"| {'build s':>7} | {'index MB':>8} | {'process MB':>10} | {'lookup p50/p99 ms':>18} | {'hit rate':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        row = asyncio.run(bench_size(n, base, texts, args.queries, args.threads, rng))
        rows.append(row)
        print(f"{n:>9,} | {row['flat_p50_ms']:>7.3f} / {row['flat_p99_ms']:<6.3f} | {row['flat_mb']:>8.0f} "
              f"| {row['hnsw_p50_ms']:>7.3f} / {row['hnsw_p99_ms']:<6.3f} "
              f"| {row['hnsw_recall_at_1']:>5.3f}/{row['hnsw_recall_above_threshold']:<5.3f} "
              f"| {row['hnsw_build_s']:>7.1f} | {row['index_mb']:>8.0f} | {row['cache_rss_mb']:>10.0f} "
              f"| {row['lookup_p50_ms']:>8.3f} / {row['lookup_p99_ms']:<7.3f} | {row['lookup_hit_rate']:>8.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
