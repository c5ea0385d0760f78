"""Pair evaluation: the real lookup decision on labelled pairs, plus a global-threshold sweep.

Each pair ``{"id", "a", "b", "label"}`` is played through a real
:class:`semcache.SemanticCache` built from a policy file: ``a`` is stored in
its own tenant (tenant = pair id, so pairs never see each other), then ``b``
is looked up. Whatever the policy does (category, threshold, guards,
verifier) decides; we record status, similarity, stage and reason.

Definitions (used everywhere in evaluation/):

* a **hit** is a lookup of ``b`` answered from ``a``'s entry;
* a **true hit** is a hit on a label-1 pair, a **false hit** one on a label-0 pair;
* ``precision = true hits / hits``;
* ``recall = true hits / label-1 pairs``;
* ``false_hit_rate = false hits / hits`` (= 1 - precision): the share of
  served cached answers that are wrong, which is what a user experiences.
  ``false_positive_rate = false hits / label-0 pairs`` is reported beside it.

Vectors come from the real embedder: every distinct text is embedded once
up front, in batches, and the cache sees them through :class:`PrecomputedEmbedder`,
which has the real embedder's identity (same model, same numbers, no fakes).

The baseline is one global similarity threshold with no guards, swept from
0.70 to 0.99 on the same recorded similarities.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcache import CacheRequest, SemanticCache, load_policies
from semcache.config.policy import PolicySet
from semcache.stores.memory import MemoryStore

MODEL = "eval-model"
SWEEP = [round(0.70 + 0.01 * i, 2) for i in range(30)]


class PrecomputedEmbedder:
    """Serves vectors the real embedder computed beforehand; falls back to it for new texts."""

    def __init__(self, real: Any, vectors: dict[str, np.ndarray]):
        self._real = real
        self._vectors = vectors

    @property
    def dim(self) -> int:
        return self._real.dim

    @property
    def identity(self) -> str:
        return self._real.identity

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            for text, vec in zip(missing, await self._real.embed(missing), strict=True):
                self._vectors[text] = vec
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32)


async def embed_all(embedder: Any, texts: Sequence[str], batch: int = 256,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """One ``embed`` call per ``batch`` distinct texts; returns text -> unit vector."""
    unique = list(dict.fromkeys(texts))
    out: dict[str, np.ndarray] = {}
    bar = _bar(len(unique), "embedding", progress)
    for i in range(0, len(unique), batch):
        chunk = unique[i:i + batch]
        for text, vec in zip(chunk, await embedder.embed(chunk), strict=True):
            out[text] = vec
        bar.update(len(chunk))
    bar.close()
    return out


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=not enabled or total < 2000, leave=False)


@dataclass(slots=True)
class PairOutcome:
    id: str
    label: int
    category: str
    status: str
    similarity: float | None
    stage: str
    reason: str


def load_pairs(path: Path, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Read a pair file; with ``limit``, a seeded random sample of that many pairs."""
    with Path(path).open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def _request(text: str, tenant: str) -> CacheRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return CacheRequest(endpoint="chat", body=body, tenant=tenant)


def _response(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-eval", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"answer to: {text}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


async def play_pairs(pairs: list[dict[str, Any]], policies: PolicySet, embedder: Any,
                     progress: bool = True) -> list[PairOutcome]:
    """Store each ``a`` in tenant ``id``, look up ``b``, record the decision."""
    cache = SemanticCache(policies=policies, store=MemoryStore(), embedder=embedder, purge_interval_s=0)
    await cache.start()
    outcomes = []
    bar = _bar(len(pairs), "pairs", progress)
    try:
        for pair in pairs:
            tenant = f"pair-{pair['id']}"
            stored_req = _request(pair["a"], tenant)
            first = await cache.lookup(stored_req)
            await cache.store(stored_req, first, response=_response(pair["a"]))
            result = await cache.lookup(_request(pair["b"], tenant))
            outcomes.append(PairOutcome(str(pair["id"]), int(pair["label"]), result.category, result.status,
                                        result.similarity, result.stage, result.reason))
            bar.update(1)
    finally:
        bar.close()
        await cache.close()
    return outcomes


@dataclass(slots=True)
class Confusion:
    pairs: int = 0
    positives: int = 0
    hits: int = 0
    true_hits: int = 0
    false_hits: int = 0

    def add(self, label: int, hit: bool) -> None:
        self.pairs += 1
        self.positives += label
        if hit:
            self.hits += 1
            self.true_hits += label
            self.false_hits += 1 - label

    def summary(self) -> dict[str, Any]:
        negatives = self.pairs - self.positives
        precision = self.true_hits / self.hits if self.hits else 0.0
        recall = self.true_hits / self.positives if self.positives else 0.0
        return {
            **asdict(self),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "false_hit_rate": self.false_hits / self.hits if self.hits else 0.0,
            "false_positive_rate": self.false_hits / negatives if negatives else 0.0,
        }


def confusion(outcomes: list[PairOutcome]) -> dict[str, Any]:
    """Overall and per-category confusion of the policy's decisions."""
    overall, per = Confusion(), defaultdict(Confusion)
    stages: dict[str, int] = defaultdict(int)
    for o in outcomes:
        overall.add(o.label, o.status == "hit")
        per[o.category].add(o.label, o.status == "hit")
        stages[o.stage] += 1
    return {**overall.summary(), "categories": {k: v.summary() for k, v in sorted(per.items())},
            "decided_by": dict(sorted(stages.items()))}


def sweep(outcomes: list[PairOutcome], thresholds: Sequence[float] = SWEEP) -> dict[str, Any]:
    """A single global threshold on the recorded similarities (no guards)."""
    rows = []
    for t in thresholds:
        c = Confusion()
        for o in outcomes:
            c.add(o.label, o.similarity is not None and o.similarity >= t - 1e-9)
        rows.append({"threshold": t, **c.summary()})
    best = max(rows, key=lambda r: (r["f1"], r["threshold"]))

    def recall_at(p: float) -> dict[str, Any] | None:
        ok = [r for r in rows if r["hits"] and r["precision"] >= p]
        return max(ok, key=lambda r: (r["recall"], r["threshold"])) if ok else None

    return {"rows": rows, "best_f1": best, "at_precision_0.95": recall_at(0.95),
            "at_precision_0.90": recall_at(0.90)}


def matched_baseline(sweep_rows: list[dict[str, Any]], false_hit_rate: float) -> dict[str, Any] | None:
    """The global threshold (highest among ties) with the most recall whose false-hit rate is at most ``false_hit_rate``."""
    ok = [r for r in sweep_rows if r["hits"] and r["false_hit_rate"] <= false_hit_rate + 1e-12]
    return max(ok, key=lambda r: (r["recall"], r["threshold"])) if ok else None


@dataclass
class PairReport:
    data: str
    policy: str
    embedder: str
    policy_result: dict[str, Any]
    sweep: dict[str, Any]
    matched: dict[str, Any] | None = field(default=None)

    def as_json(self) -> dict[str, Any]:
        top = {k: self.policy_result[k] for k in ("pairs", "positives", "hits", "true_hits", "false_hits",
                                                    "precision", "recall", "f1", "false_hit_rate",
                                                    "false_positive_rate")}
        return {**top, "data": self.data, "policy": self.policy, "embedder": self.embedder,
                "categories": self.policy_result["categories"], "decided_by": self.policy_result["decided_by"],
                "global_sweep": self.sweep, "global_at_equal_false_hit_rate": self.matched}


async def evaluate_pairs(data: Path, policy: Path, *, limit: int | None = None, seed: int = 0,
                         embedder: Any | None = None, progress: bool = True) -> PairReport:
    """Run the whole pair evaluation; builds (and closes) the default embedder if none given."""
    pairs = load_pairs(data, limit, seed)
    policies = load_policies(policy)
    own = embedder is None
    if own:
        from gpu_embed import EmbedderSettings, build_embedder

        embedder = build_embedder(EmbedderSettings(lru_size=0))
    try:
        vectors = await embed_all(embedder, [t for p in pairs for t in (p["a"], p["b"])], progress=progress)
        outcomes = await play_pairs(pairs, policies, PrecomputedEmbedder(embedder, vectors), progress)
    finally:
        if own:
            await embedder.aclose()
    result = confusion(outcomes)
    swept = sweep(outcomes)
    return PairReport(str(data), str(policy), embedder.identity, result, swept,
                      matched_baseline(swept["rows"], result["false_hit_rate"]))


def format_report(r: PairReport) -> str:
    """Plain-text tables for the terminal and RESULTS.md."""
    lines = [f"pairs: {r.data}  policy: {r.policy}  embedder: {r.embedder}",
             "false_hit_rate = false hits / hits; FPR = false hits / label-0 pairs", "",
             f"{'category':<14}{'pairs':>7}{'hits':>7}{'true':>7}{'false':>7}{'prec':>8}{'recall':>8}"
             f"{'FHR':>8}{'FPR':>8}"]

    def row(name: str, s: dict[str, Any]) -> str:
        return (f"{name:<14}{s['pairs']:>7}{s['hits']:>7}{s['true_hits']:>7}{s['false_hits']:>7}"
                f"{s['precision']:>8.3f}{s['recall']:>8.3f}{s['false_hit_rate']:>8.3f}"
                f"{s['false_positive_rate']:>8.3f}")

    for name, s in r.policy_result["categories"].items():
        lines.append(row(name, s))
    lines.append(row("ALL (policy)", r.policy_result))
    lines.append(f"decided by stage: {r.policy_result['decided_by']}")
    lines += ["", "global threshold, no guards:", f"{'threshold':<14}{'hits':>7}{'prec':>8}{'recall':>8}{'FHR':>8}"]
    for s in r.sweep["rows"]:
        if round(s["threshold"] * 100) % 5 == 0:
            lines.append(f"{s['threshold']:<14.2f}{s['hits']:>7}{s['precision']:>8.3f}{s['recall']:>8.3f}"
                         f"{s['false_hit_rate']:>8.3f}")
    best = r.sweep["best_f1"]
    lines.append(f"best F1: threshold {best['threshold']:.2f} (F1 {best['f1']:.3f}, precision "
                 f"{best['precision']:.3f}, recall {best['recall']:.3f})")
    for p in ("0.95", "0.90"):
        at = r.sweep[f"at_precision_{p}"]
        lines.append(f"recall at precision >= {p}: " + (f"{at['recall']:.3f} (threshold {at['threshold']:.2f})"
                                                         if at else "unreachable"))
    m = r.matched
    lines.append(f"global threshold at the policy's false-hit rate ({r.policy_result['false_hit_rate']:.3f}): "
                 + (f"threshold {m['threshold']:.2f}, recall {m['recall']:.3f} vs policy "
                    f"{r.policy_result['recall']:.3f}" if m else "none reaches it"))
    return "\n".join(lines)


def run_cli(args: Any) -> int:
    if args.compare:
        from evaluation.replay.pair_compare import compare, format_compare

        results = asyncio.run(compare(args.data, [*args.compare, args.policy], limit=args.limit, seed=args.seed,
                                      progress=not args.json))
        print(json.dumps([{**r.as_json(), **extra} for r, extra in results], indent=1) if args.json
              else format_compare(results))
        return 0
    report = asyncio.run(evaluate_pairs(args.data, args.policy, limit=args.limit, seed=args.seed,
                                        progress=not args.json))
    print(json.dumps(report.as_json(), indent=1) if args.json else format_report(report))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pairs", help="evaluate the lookup decision on labelled pairs",
                       description="Store a, look up b, for every labelled pair; print hits, precision, recall "
                                   "and false-hit rate per category, and a global-threshold sweep baseline.")
    p.add_argument("--data", type=Path, required=True, help='JSONL of {"id","a","b","label"}')
    p.add_argument("--policy", type=Path, default=Path("policies/default.yaml"), help="policy YAML")
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded random sample of N pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", type=Path, action="append", default=[], metavar="POLICY",
                   help="also run this policy (before) on the same vectors: a before/after table with "
                        "served-by-kind, opportunity captured and recall at precision 0.95/0.98")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_cli)
