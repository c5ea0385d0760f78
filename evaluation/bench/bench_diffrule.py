"""What the diff rule adds to a lookup decision: CPU time per candidate, against the guards alone.

Times :func:`semcache.decide.diffrule.check` (guards + atoms + token diff; the span
embedding is excluded: it is one embedder call, timed in ``bench_embed``)
against :func:`semcache.decide.guards.check` (the decision before the rule), in the
same run, on:

* short paraphrase pairs from QQP (label 1, the typical hit);
* generated 1k-8k-token prompts (:mod:`evaluation.workloads.longpairs`) whose question
  is reworded, and the worst cases the bounds allow (a change at each end of
  an 8k-token text; two unrelated 8k-token texts);
* two 16,000-character texts of made-up words, one of them all "un..." words: the
  largest pair the guards check on the event loop, every word a candidate for the
  misspelt-request and negating-prefix readings;
* one lookup's work on a long prompt: the ~8k-token reworded pairs each checked as
  4 candidates in a row (the time is per lookup): what the guards' per-text caches
  (:mod:`semcache.textcache`) save within a lookup.

    PYTHONPATH=$PWD .venv/bin/python -m evaluation.bench.bench_diffrule --qqp /work/shared/data/qqp/qqp-dev.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

from evaluation.workloads.longpairs import document, long_prompt_pairs
from semcache.decide import diffrule
from semcache.decide import guards
from semcache.decide.atoms import atoms_in
from semcache.config.policy import load_policies_text
from evaluation.workloads.data import DATA

POLICY = load_policies_text("categories: {default: {threshold: 0.0}}")["default"]


async def _no_embed(texts):
    return np.ones((len(texts), 1), dtype=np.float32)


def _time(fn, pairs, repeat: int) -> float:
    """Median over ``repeat`` passes of the mean microseconds per pair (caches cleared before each pass)."""
    runs = []
    for _ in range(repeat):
        for name in ("_negation_profile", "_prefixed_words", "actions_in", "identifiers_in", "entities_in",
                     "numbers_in"):
            if hasattr(guards, name):  # names differ between versions: the bench also runs on older trees
                getattr(guards, name).cache_clear()
        for cached in (diffrule._tokens, atoms_in):
            cached.cache_clear()
        if hasattr(diffrule, "front_extended"):  # session 14's names rule keeps word sets per text
            from semcache.decide import names

            for cached in (getattr(names, "_words", None), getattr(names, "_cached_words", None)):
                if hasattr(cached, "cache_clear"):  # its cache moved within session 14
                    cached.cache_clear()
        started = time.perf_counter()
        for a, b in pairs:
            fn(a, b)
        runs.append((time.perf_counter() - started) / len(pairs) * 1e6)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", type=int, default=2000, help="QQP pairs")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--qqp", type=Path, default=DATA / "qqp" / "qqp-dev.jsonl", help="QQP pair file")
    args = p.parse_args(argv)
    rng = random.Random(0)
    with args.qqp.open() as fh:
        rows = [json.loads(line) for line in fh]
    short = [(r["b"], r["a"]) for r in rng.sample(rows, args.short) if r["label"] == 1]
    long = [(p["b"], p["a"]) for p in long_prompt_pairs(10, 1, 5500, 6000) if p["kind"].endswith("reworded")]
    body = document(rng, 6000)
    ends = [("Intro. " + body + " Question A?", "Preface. " + body + " Question B?")]
    unrelated = [(document(rng, 6000), document(rng, 6000))]

    def made_up(prefix: str) -> str:
        return " ".join(prefix + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
                        for _ in range(2000))[:16000]

    hostile = [(made_up("un"), made_up(""))]
    loop = asyncio.new_event_loop()

    def rule(a, b):
        return loop.run_until_complete(diffrule.check(POLICY, a, b, 0.95, _no_embed))

    async def guards_only(a, b):
        return guards.check(POLICY.guards, a, b)

    def before(a, b):  # through the same event-loop call, so both sides pay its overhead
        return loop.run_until_complete(guards_only(a, b))

    print("microseconds per candidate (median of passes, caches cold); the box was shared")
    print(f"{'pairs':<44}{'n':>5}{'guards only':>14}{'+ diff rule':>14}")
    for name, pairs in (("QQP paraphrases (short)", short), ("reworded question, ~8k tokens", long),
                        ("change at both ends, ~8k tokens", ends), ("unrelated texts, ~8k tokens", unrelated),
                        ("made-up words, 16k characters each", hostile)):
        print(f"{name:<44}{len(pairs):>5}{_time(before, pairs, args.repeat):>14.1f}"
              f"{_time(rule, pairs, args.repeat):>14.1f}")

    def four(fn):
        return lambda a, b: [fn(a, b) for _ in range(4)]

    print(f"{'one lookup: ~8k-token pair as 4 candidates':<44}{len(long):>5}"
          f"{_time(four(before), long, args.repeat):>14.1f}{_time(four(rule), long, args.repeat):>14.1f}")
    loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
