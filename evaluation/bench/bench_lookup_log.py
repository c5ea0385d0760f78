"""Benchmark: what the lookup log (what-if tuning) costs a lookup, and what a what-if replay costs.

One cache, ``--entries`` entries in one partition (a flat matrix up to 2048,
an HNSW graph above), vectors precomputed (the lookup's time excludes
embedding, so the log's share is not hidden behind the embedder). Lookups
alternate in blocks between the log off (``capacity=0``) and on, so load on
the (shared) machine hits both sides alike. Printed: p50/p99 of the
caller's lookup time each way; the background guard checks' time per lookup
(off the caller's path); and the time of :func:`semcache.observe.whatif.predict`
over a full 10k-record ring.

    python -m evaluation.bench.bench_lookup_log --entries 5000 --lookups 4000
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from evaluation.bench.bench_lookup import PrecomputedEmbedder, noisy, pct
from semcache import CacheEntry, CacheRequest, SemanticCache, load_policies_text
from semcache.observe.lookup_log import LookupLog
from semcache.stores import MemoryStore
from semcache.observe.whatif import predict

POLICY = "categories: {default: {threshold: 0.8, ttl_seconds: null, quota: {max_entries: 2000000}}}"
WORDS = "cache answer model engine token prompt vector index store policy guard tenant stream".split()


def text(i: int, rng) -> str:
    return " ".join(rng.choice(WORDS, size=8)) + f" item{i}"


async def run(entries: int, lookups: int, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = 384
    base = rng.normal(size=(entries, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    texts = [text(i, rng) for i in range(entries)]
    q_src = rng.integers(entries, size=lookups)
    half = lookups // 2  # paraphrase-like: half at cosine ~0.86 to their source (hits), half ~0.74 (misses)
    qvecs = np.concatenate([noisy(base, q_src[:half], 0.03, rng), noisy(base, q_src[half:], 0.047, rng)])
    order = rng.permutation(lookups)
    q_src, qvecs = q_src[order], qvecs[order]
    qtexts = [f"{texts[i]} please" for i in q_src]
    embedder = PrecomputedEmbedder(dict(zip(qtexts, qvecs)), dim)
    cache = SemanticCache(policies=load_policies_text(POLICY), store=MemoryStore(), embedder=embedder,
                          purge_interval_s=0)
    await cache.start()
    req = lambda t: CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": t}]})  # noqa: E731
    cache.lookup_log = LookupLog(0)
    partition = (await cache.lookup(req(qtexts[0]))).context.partition
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"}, "finish_reason": "stop"}]}
    rows = [CacheEntry.model_construct(
        id=f"e{i}", tenant="anonymous", namespace="", partition=partition, category="default",
        policy_version="1", model="m", endpoint="chat", query=texts[i], vector=base[i], response=answer,
        chunks=None, embedder=embedder.identity, created_at=0.0, expires_at=None, last_hit_at=0.0,
        hit_count=0, prompt_tokens=0, completion_tokens=0, utility=0.0, utility_uses=0, trust=1.0)
        for i in range(entries)]
    for e in rows:
        await cache.doc_store.put(e)
    cache.catalog.add_many(rows, capacity_hint=entries)

    on_log = LookupLog(10_000)
    off_log = LookupLog(0)
    times: dict[str, list[float]] = {"off": [], "on": []}
    settle_s = 0.0
    for start in range(0, lookups, block):
        for side in ("off", "on") if (start // block) % 2 == 0 else ("on", "off"):
            cache.lookup_log = on_log if side == "on" else off_log
            for t in qtexts[start:start + block]:
                t0 = time.perf_counter()
                await cache.lookup(req(t))
                times[side].append(time.perf_counter() - t0)
            if side == "on":
                t0 = time.perf_counter()
                await on_log.settle()
                settle_s += time.perf_counter() - t0
    records = on_log.records("default")
    hits = sum(r.status == "hit" for r in records)
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        pred = predict(records, 0.7)
    predict_ms = (time.perf_counter() - t0) / reps * 1000
    await cache.close()
    off, on = pct(times["off"]), pct(times["on"])
    print(f"entries {entries}, lookups {len(times['on'])} per side (blocks of {block}, alternating), "
          f"recorded hit rate {hits / len(records):.3f}")
    print(f"lookup p50/p99 ms, log off: {off[0]:.3f} / {off[1]:.3f}")
    print(f"lookup p50/p99 ms, log on : {on[0]:.3f} / {on[1]:.3f}   (+{on[0] - off[0]:.3f} ms p50)")
    print(f"background guard checks: {1000 * settle_s / len(times['on']):.3f} ms per lookup (off the caller's path)")
    print(f"what-if replay of {len(records)} records at threshold 0.7: {predict_ms:.1f} ms "
          f"(predicted hits {pred.hits}, undetermined {pred.undetermined})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=5000)
    ap.add_argument("--lookups", type=int, default=4000)
    ap.add_argument("--block", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    asyncio.run(run(args.entries, args.lookups, args.block, args.seed))


if __name__ == "__main__":
    main()
