"""Offline: the calibrated answer check (``answer_check_max_bad``) on saved IC-Cache answers.

Reads the ``--out`` JSON of two ``iccache_experiment`` runs on different
held-out sets (seed 1 with small+selected / small+nearest, seed 2 with
small+nearest / small+probed), labels every small answer as the proxy's shadow
check would (agreement with the large model's answer >= 0.5; the large answer
here is the reference cut at 96 words, as the simulated large model serves
it), calibrates on one seed's samples and applies the threshold to the
other's (2-fold), next to the fixed threshold 0.75. Served accuracy = intent
accuracy of the small answer where kept, of the large answer where rejected.

    python -m evaluation.experiments.iccache_check_calibration SEED1.json SEED2.json
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np

from evaluation.experiments.iccache_experiment import DATA, embed_all, load_rows, split
from semcache.iccache.answer_check import AnswerCheck
from semcache.iccache.config import SelectionConfig
from semcache.iccache.quality import agreement, follows_examples

FIXED = 0.75


async def label(path: str, seed: int, conditions: list[str], rows: list[dict]) -> np.ndarray:
    """Rows of (follows score, agreed with large, small intent ok, large intent ok, seed)."""
    run = json.loads(open(path).read())
    held, bank_idx = split(rows, 2, seed)
    answer_vecs = await embed_all([r["answer"] for r in rows])
    groups = sorted({rows[i]["group"] for i in bank_idx})
    centroids = np.stack([answer_vecs[[i for i in bank_idx if rows[i]["group"] == g]].mean(0) for g in groups])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    large = await embed_all([" ".join(rows[i]["answer"].split()[:96]) for i in held])
    out = []
    for condition in conditions:
        answers = run["conditions"][condition]
        vecs = await embed_all([t for a in answers for t in (a["text"] or " ", *a["example_answers"])])
        at = 0
        for k, (a, i) in enumerate(zip(answers, held)):
            n = 1 + len(a["example_answers"])
            small, examples = vecs[at], vecs[at + 1: at + n]
            at += n
            intent = rows[i]["group"]
            out.append((follows_examples(small, examples), agreement(small, large[k]) >= 0.5,
                        groups[int(np.argmax(small @ centroids.T))] == intent,
                        groups[int(np.argmax(large[k] @ centroids.T))] == intent, seed))
    return np.array(out, dtype=float)


async def main(args: argparse.Namespace) -> None:
    rows = load_rows(DATA)
    data = np.concatenate([await label(args.seed1, 1, ["small+selected", "small+nearest"], rows),
                           await label(args.seed2, 2, ["small+nearest", "small+probed"], rows)])
    follows, agreed, small_ok, large_ok, seed = (data[:, j] for j in range(5))
    agreed = agreed.astype(bool)
    print(f"samples {len(data)}; agreed with the large answer {agreed.mean():.3f}; "
          f"small intent accuracy {small_ok.mean():.3f} (given agreed {small_ok[agreed].mean():.3f}, "
          f"given not {small_ok[~agreed].mean():.3f})")
    for target in args.targets:
        for train, test in ((1, 2), (2, 1)):
            check = AnswerCheck(recalibrate_every=1)
            for s, a in zip(follows[seed == train], agreed[seed == train]):
                check.record("c", float(s), bool(a))
            t = check.threshold("c", SelectionConfig(answer_check_max_bad=target, answer_check_min_samples=20))
            m = seed == test
            for name, cut in ((f"calibrated t={t:.3f}", t), (f"fixed {FIXED}", FIXED)):
                keep = follows[m] >= cut
                served = np.where(keep, small_ok[m], large_ok[m]).mean()
                print(f"target {target} train seed {train} -> test seed {test}: {name:<22} served accuracy "
                      f"{served:.3f}, kept by small {keep.mean():.2f} (small alone {small_ok[m].mean():.3f})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seed1")
    p.add_argument("seed2")
    p.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    asyncio.run(main(p.parse_args()))
