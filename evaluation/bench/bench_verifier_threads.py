"""The verifier and embedder's ORT sessions: spinning between runs (before) vs stopping when a run returns.

    .venv/bin/python -m evaluation.bench.bench_verifier_threads [--rounds 3]

In process, through :meth:`SemanticCache.lookup` with the shipped default policy
and the default CPU embedder (the path of a first-seen rewording: embed, index,
guards, the model), three caches that differ only in session options, the same
10 cached questions:

* before: the model on one thread, both sessions spinning between runs (ORT's default);
* the model on all cores and stopping when a run returns, the embedder spinning;
* after (the defaults): both on all cores, both stopping when a run returns
  (``session.force_spinning_stop``: threads spin inside a run only).

Measured per side: **first-seen rewordings** (``bench_verifier_hit.unique_rewordings``:
350 texts, each new to the embedder and the model; memos cleared between
rounds) and **near misses** (``near_misses``: 540 texts, the model judges up to
4 candidates), one lookup at a time: p50 of the lookup and of one model run;
and **8 lookups at once** (the near misses in groups of 8, ``asyncio.gather``):
lookups per second, so a change that helps one request cannot hide a loss
under concurrency. The sides rotate by round so load on the shared box hits
them alike. Prints the CPU and int8 variant the figures belong to.

Why: ORT's intra-op threads keep spinning for a while after a run, so the
embedder's threads hold the cores while the model runs next, and the model's
while the next embedding runs. Scores are identical for any thread count
(checked on 600 calibration pairs: max difference 0.0).
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
SIDES = {"before: model on 1 thread; both spin between runs": {"threads": 1, "spin_between_runs": True},
         "model on all cores, stops spinning; embedder spins": {"threads": None, "spin_between_runs": False},
         "after: both stop spinning when a run returns": {"threads": None, "spin_between_runs": False}}
EMBEDDER_SPINS = {"after: both stop spinning when a run returns": False}  # the others: the embedder spins


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

    embedders = {spin: build_embedder(EmbedderSettings(lru_size=0, onnx_spin_between_runs=spin))  # lru off: new texts
                 for spin in (True, False)}
    timed = {name: _Timed(CrossEncoderVerifier.load(DEFAULT_DIR, **opts)) for name, opts in SIDES.items()}
    caches = {name: await _cache(embedders[EMBEDDER_SPINS.get(name, True)], t.model) for name, t in timed.items()}
    unique, near = unique_rewordings(350), near_misses(540)
    got = {name: {"unique": [], "near": [], "runs": [], "concurrent": []} for name in SIDES}
    try:
        for r in range(rounds):
            for name in list(SIDES)[r % len(SIDES):] + list(SIDES)[:r % len(SIDES)]:  # rotate the order
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
        for embedder in embedders.values():
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
