"""The cross-encoder's ORT session: one spinning thread (before) vs all cores, not spinning (after).

    .venv/bin/python -m evaluation.bench.bench_verifier_threads [--rounds 3]

In process, through :meth:`SemanticCache.lookup` with the shipped default policy
and the default CPU embedder (the path of a first-seen rewording: embed, index,
guards, the model), two caches that differ only in the verifier's session
options, the same 10 cached questions:

* **first-seen rewordings** (``bench_verifier_hit.unique_rewordings``: 350 texts,
  each new to the embedder and the model; memos cleared between rounds) and
  **near misses** (``near_misses``: 540 texts, the model judges up to 4
  candidates), one lookup at a time: p50 of the lookup and of one model run;
* **8 lookups at once** (the near misses in groups of 8, ``asyncio.gather``):
  lookups per second, so a change that helps one request cannot hide a loss
  under concurrency.

The two sessions alternate by round so load on the shared box hits both alike.
Prints the CPU and int8 variant the figures belong to.

Why it matters: ORT's intra-op threads spin for a while after a run. With one
spinning thread per session the model's run waits for the embedder's
spinning threads; with several spinning threads it is worse (measured: a
first-seen rewording 14 -> 20 ms p50 on 2 cores). Scores are identical for
any thread count (checked on 600 calibration pairs: max difference 0.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from evaluation.bench.bench_proxy import machine
from evaluation.bench.bench_verifier_hit import QUESTIONS, near_misses, unique_rewordings
from semcache import CacheRequest, SemanticCache, load_policies
from semcache.stores import MemoryStore
from semcache.verifier import VerifierGate
from semcache.verifier.cross_encoder import DEFAULT_DIR, CrossEncoderVerifier

POLICY = Path(__file__).parents[2] / "policies" / "default.yaml"
SIDES = {"before: 1 thread, spinning": {"threads": 1, "spinning": True},
         "after: all cores, not spinning": {"threads": None, "spinning": False}}


def _request(text: str) -> CacheRequest:
    return CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": text}]})


def _answer(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "m", "usage": {},
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


class _Timed:
    """Wraps the model's ``scores`` to time each run (one pair per run, as served)."""

    def __init__(self, model: CrossEncoderVerifier):
        self.model, self.runs = model, []
        inner = model.scores

        def scores(pairs):
            start = time.perf_counter()
            try:
                return inner(pairs)
            finally:
                self.runs.append((time.perf_counter() - start) * 1e3)

        model.scores = scores


async def _cache(embedder, model: CrossEncoderVerifier) -> SemanticCache:
    cache = SemanticCache(policies=load_policies(POLICY), store=MemoryStore(), embedder=embedder,
                          purge_interval_s=0, verifier=VerifierGate(cross_encoder=model))
    await cache.start()
    for q in QUESTIONS:
        await cache.store(_request(q), await cache.lookup(_request(q)), response=_answer(q))
    return cache


async def _one_at_a_time(cache, texts) -> list[float]:
    out = []
    for text in texts:
        start = time.perf_counter()
        await cache.lookup(_request(text))
        out.append((time.perf_counter() - start) * 1e3)
    return out


async def _eight_at_once(cache, texts) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), 8):
        await asyncio.gather(*(cache.lookup(_request(t)) for t in texts[i:i + 8]))
    return len(texts) / (time.perf_counter() - start)


async def run(rounds: int) -> dict:
    from gpu_embed import EmbedderSettings, build_embedder

    embedder = build_embedder(EmbedderSettings(lru_size=0))  # every text is embedded: first-seen
    timed = {name: _Timed(CrossEncoderVerifier.load(DEFAULT_DIR, **opts)) for name, opts in SIDES.items()}
    caches = {name: await _cache(embedder, t.model) for name, t in timed.items()}
    unique, near = unique_rewordings(350), near_misses(540)
    got = {name: {"unique": [], "near": [], "runs": [], "concurrent": []} for name in SIDES}
    try:
        for r in range(rounds):
            for name in (list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]):
                t, cache, g = timed[name], caches[name], got[name]
                t.model.memo.clear()
                t.runs.clear()
                g["unique"] += await _one_at_a_time(cache, unique)
                g["near"] += await _one_at_a_time(cache, near)
                g["runs"] += t.runs
                t.model.memo.clear()
                g["concurrent"].append(await _eight_at_once(cache, near))
    finally:
        for cache in caches.values():
            await cache.close()
        await embedder.aclose()
    return {"machine": machine(), "rounds": rounds, **{
        name: {"first_seen_rewording_p50_ms": round(statistics.median(g["unique"]), 2),
               "near_miss_p50_ms": round(statistics.median(g["near"]), 2),
               "model_run_p50_ms": round(statistics.median(g["runs"]), 2),
               "lookups_per_s_8_at_once": round(statistics.median(g["concurrent"]), 1)}
        for name, g in got.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.rounds)), indent=1))


if __name__ == "__main__":
    main()
