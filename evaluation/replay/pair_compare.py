"""Before/after on labelled pairs: ``semcache eval pairs --data P --policy AFTER --compare BEFORE``.

Both policies see the same pairs and the same vectors (embedded once), in
one run. Beside the confusion of :mod:`evaluation.replay.pairs`, per policy:

* served by ``kind`` (a pair file's optional field: ``negation``, ``numbers``,
  ``paraphrase``, ...): for label-0 kinds that is *traps served*, for label-1
  kinds *should-hit pairs served*;
* ``opportunity``: the share of what meaning-matching could add over exact
  match that the policy captures: (true hits not from the exact stage) /
  (label-1 pairs that are not exact repeats);
* recall at precision 0.95 and 0.98 of the policy's score: the verifier's
  probability where the category uses it (pairs under the similarity
  pre-filter or stopped by a guard count as never served), else the cosine.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.replay.pairs import (PairOutcome, PairReport, PrecomputedEmbedder, confusion, embed_all, load_pairs,
                              matched_baseline, play_pairs, sweep)
from semcache import load_policies
from semcache.decide import guards

PRECISIONS = (0.95, 0.98)


def by_kind(pairs: list[dict], outcomes: list[PairOutcome]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"pairs": 0, "served": 0, "label": None})
    for p, o in zip(pairs, outcomes, strict=True):
        r = rows[str(p.get("kind", "unlabelled"))]
        r["pairs"] += 1
        r["served"] += o.status == "hit"
        r["label"] = int(p["label"]) if r["label"] in (None, int(p["label"])) else "mixed"
    return {k: {**v, "served_rate": v["served"] / v["pairs"]} for k, v in sorted(rows.items())}


def opportunity(pairs: list[dict], outcomes: list[PairOutcome]) -> dict[str, Any]:
    exact = [o.stage == "exact" for o in outcomes]  # found as an exact repeat (same normalised text)
    room = sum(1 for p, e in zip(pairs, exact) if p["label"] == 1 and not e)
    got = sum(1 for p, o, e in zip(pairs, outcomes, exact) if p["label"] == 1 and not e and o.status == "hit")
    return {"positives_not_exact": room, "captured": got, "rate": got / room if room else 0.0}


def recall_at_precision(scores: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """Most recall of a cut-off on ``scores`` (``-inf`` = never served) with precision >= ``precision``."""
    keep = np.isfinite(scores)
    order = np.argsort(-scores[keep], kind="stable")
    y = labels[keep][order]
    tp = np.cumsum(y == 1)
    ok = tp / np.arange(1, len(y) + 1) >= precision
    return float(tp[ok].max() / max(1, labels.sum())) if ok.any() else 0.0


def policy_scores(pairs: list[dict], vectors: dict[str, np.ndarray], policies) -> np.ndarray:
    """The score the ``default`` category decides on (pair files carry no category), ``-inf``
    where the pre-filter or a guard stops a pair."""
    from semcache.verifier import CrossEncoderVerifier, Verifier, policy_probabilities

    policy = policies.get("default")
    cos = np.array([float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs])
    ok = np.array([guards.check(policy.guards, p["b"], p["a"]).passed for p in pairs])
    scores = cos.copy()
    if policy.verifier.enabled:
        ok &= cos >= policy.threshold
        model = CrossEncoderVerifier.load() if policy.verifier.model == "cross-encoder" else Verifier.load()
        idx = np.flatnonzero(ok)
        scores = np.full(len(pairs), -np.inf)
        triples = [(pairs[i]["b"], pairs[i]["a"], cos[i]) for i in idx]
        scores[idx] = policy_probabilities(policy.verifier, model, triples)
    scores[~ok] = -np.inf
    return scores


async def compare(data: Path, policy_paths: list[Path], *, limit: int | None = None, seed: int = 0,
                  progress: bool = True, embedder: Any | None = None) -> list[tuple[PairReport, dict[str, Any]]]:
    """One :class:`PairReport` (plus kinds, opportunity, recall at precision) per policy, same vectors.

    Builds (and closes) the default embedder unless one is given."""
    pairs = load_pairs(data, limit, seed)
    own = embedder is None
    if own:
        from gpu_embed import EmbedderSettings, build_embedder

        embedder = build_embedder(EmbedderSettings(lru_size=0))
    out = []
    try:
        vectors = await embed_all(embedder, [t for p in pairs for t in (p["a"], p["b"])], progress=progress)
        labels = np.array([int(p["label"]) for p in pairs])
        for path in policy_paths:
            policies = load_policies(path)
            outcomes = await play_pairs(pairs, policies, PrecomputedEmbedder(embedder, vectors), progress)
            result, swept = confusion(outcomes), sweep(outcomes)
            report = PairReport(str(data), str(path), embedder.identity, result, swept,
                                matched_baseline(swept["rows"], result["false_hit_rate"]))
            scores = policy_scores(pairs, vectors, policies)
            extra = {"kinds": by_kind(pairs, outcomes), "opportunity": opportunity(pairs, outcomes),
                     "recall_at_precision": {str(p): recall_at_precision(scores, labels, p) for p in PRECISIONS}}
            out.append((report, extra))
    finally:
        if own:
            await embedder.aclose()
    return out


def format_compare(results: list[tuple[PairReport, dict[str, Any]]]) -> str:
    names = [Path(r.policy).name for r, _ in results]
    width = max(14, *(len(n) + 2 for n in names))
    lines = [f"pairs: {results[0][0].data}  embedder: {results[0][0].embedder}", "",
             f"{'':<28}" + "".join(f"{n:>{width}}" for n in names)]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:<28}" + "".join(f"{v:>{width}}" for v in values))

    row("hits", [str(r.policy_result["hits"]) for r, _ in results])
    for key in ("precision", "recall", "false_hit_rate"):
        row(key, [f"{r.policy_result[key]:.3f}" for r, _ in results])
    row("opportunity captured", [f"{e['opportunity']['rate']:.3f}" for _, e in results])
    for p in PRECISIONS:
        row(f"recall at precision {p}", [f"{e['recall_at_precision'][str(p)]:.3f}" for _, e in results])
    lines += ["", "served by kind (label 0: traps served; label 1: should-hit served)"]
    for kind, first in results[0][1]["kinds"].items():
        row(f"{kind} (label {first['label']}, n={first['pairs']})",
            [f"{e['kinds'][kind]['served_rate']:.3f}" for _, e in results])
    return "\n".join(lines)
