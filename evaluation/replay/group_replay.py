"""Replay held-out rewording groups through the cache: paraphrase opportunity captured and false hits.

``semcache eval groups --policy P [--compare P0] [--seed 0]``

The issue #17 table, on this project's own held-out data: the questions of
the ``test``-split groups of ``qa/stackfaq``, ``qa/comqa`` and
``qa/bitext_cs_4k5`` (whole groups, never trained or calibrated on: see
:mod:`evaluation.training.verifier_data`) are asked once each, in a seeded random
order, of one cache (one tenant: a FAQ shared by its users); a miss stores
its answer, a hit is right only when the entry answers the same group. Per
source: the oracle hit rate (the group was asked before), exact match (this
very text was), the cache's hit rate and false-hit rate, and the paraphrase
opportunity captured, ``(hit rate - exact) / (oracle - exact)``.

A second false-hit rate judges by the gold answers instead of the group
label: a hit on another group is false only if that group's answers differ
(as sets, case-folded). It differs from the first only on ComQA, whose crowd
clusters split some questions in two with the same answer ("who wrote the
song respect?" is in two clusters, both answered "otis redding"): serving
one cluster's answer to the other is not a wrong answer. Both are printed. A fourth
stream asks each ``test``-split GSM8K problem and then the same problem with
one number changed: every hit on a variant is false.

Runs in-process (no HTTP; the decision is the same code the proxy runs) on
the default embedder; all policies of one run see the same vectors.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluation.workloads.data import DATA
from evaluation.replay.pairs import MODEL, PrecomputedEmbedder, embed_all
from evaluation.training.verifier_data import load_groups, split_of
from evaluation.training.verifier_mining import gold_answers
from semcache import CacheRequest, SemanticCache, load_policies
from semcache.stores.memory import MemoryStore

SOURCES = ("stackfaq", "comqa", "bitext_cs_4k5")


@dataclass
class StreamResult:
    requests: int = 0
    oracle: int = 0
    exact: int = 0
    hits: int = 0
    false_hits: int = 0
    false_by_answer: int = 0
    """False hits whose served group has other gold answers than the asker's (see the module doc)."""

    def summary(self) -> dict[str, Any]:
        n = max(1, self.requests)
        room = self.oracle - self.exact
        return {**asdict(self), "oracle_rate": round(self.oracle / n, 4), "exact_rate": round(self.exact / n, 4),
                "hit_rate": round(self.hits / n, 4),
                "false_hit_rate": round(self.false_hits / self.hits, 4) if self.hits else 0.0,
                "false_hit_rate_by_answer": round(self.false_by_answer / self.hits, 4) if self.hits else 0.0,
                "opportunity_captured": round((self.hits - self.exact) / room, 4) if room > 0 else None,
                "right_opportunity_captured": (round((self.hits - self.false_hits - self.exact) / room, 4)
                                               if room > 0 else None)}


def group_stream(source: str, seed: int, split: str = "test") -> list[tuple[str, str]]:
    """``(group, question)`` of every ``split`` group of ``qa/<source>`` (held out: ``test``), shuffled."""
    groups = {k: v for k, v in load_groups(source).items() if split_of(k, seed) == split}
    stream = [(name, q) for name, g in groups.items() for q in g["questions"]]
    random.Random(f"{seed}:{source}").shuffle(stream)
    return stream


def math_stream(seed: int, n: int = 300, split: str = "test") -> list[tuple[str, str]]:
    """A held-out GSM8K problem, then the same problem with one number changed (another group)."""
    from evaluation.training.verifier_rules import change_number

    rows = [json.loads(line) for line in (DATA / "qa" / "gsm8k" / "qa.jsonl").open(encoding="utf-8") if line.strip()]
    rows = [r for r in rows if split_of(f"gsm8k:{r['id']}", seed) == split]
    rng = random.Random(f"{seed}:gsm8k")
    out = []
    for r in rng.sample(rows, min(n, len(rows))):
        changed = change_number(r["question"], rng)
        if changed and changed != r["question"]:
            out += [(f"{r['id']}", r["question"]), (f"{r['id']}:changed", changed)]
    return out


def _request(text: str) -> CacheRequest:
    return CacheRequest("chat", {"model": MODEL, "messages": [{"role": "user", "content": text}]}, tenant="faq")


def _answer(group: str) -> dict[str, Any]:
    return {"id": "chatcmpl-eval", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": group}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


async def replay(stream: list[tuple[str, str]], policy_path: Path, embedder: Any,
                 answers: dict[str, frozenset[str]] | None = None) -> StreamResult:
    cache = SemanticCache(policies=load_policies(policy_path), store=MemoryStore(), embedder=embedder,
                          purge_interval_s=0)
    await cache.start()
    seen_groups: set[str] = set()
    seen_texts: set[str] = set()
    out = StreamResult()
    try:
        for group, text in stream:
            out.requests += 1
            out.oracle += group in seen_groups
            out.exact += text in seen_texts
            result = await cache.lookup(_request(text))
            if result.status == "hit":
                out.hits += 1
                served = result.entry.response["choices"][0]["message"]["content"]
                out.false_hits += served != group
                gold = (answers or {}).get(group)
                out.false_by_answer += served != group and (gold is None or answers.get(served) != gold)
            else:
                await cache.store(_request(text), result, response=_answer(group))
            seen_groups.add(group)
            seen_texts.add(text)
    finally:
        await cache.close()
    return out


async def evaluate(policies: list[Path], seed: int, split: str = "test") -> dict[str, dict[str, dict[str, Any]]]:
    from gpu_embed import EmbedderSettings, build_embedder

    streams = {source: group_stream(source, seed, split) for source in SOURCES}
    streams["gsm8k_numbers"] = math_stream(seed, split=split)
    real = build_embedder(EmbedderSettings(lru_size=0))
    try:
        vectors = await embed_all(real, [t for s in streams.values() for _, t in s], progress=False)
        embedder = PrecomputedEmbedder(real, vectors)
        answers = {source: gold_answers(source) for source in SOURCES}
        return {str(p): {name: (await replay(stream, p, embedder, answers.get(name))).summary()
                         for name, stream in streams.items()} for p in policies}
    finally:
        await real.aclose()


def format_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| stream | policy | requests | oracle | exact | hit rate (false-hit rate) | false-hit rate by gold "
             "answer | opportunity captured (right hits only) |", "|---|---|---|---|---|---|---|---|"]
    streams = next(iter(results.values())).keys()
    for stream in streams:
        for policy, per in results.items():
            r = per[stream]
            cap = "-" if r["opportunity_captured"] is None else f"{r['opportunity_captured']:.3f} ({r['right_opportunity_captured']:.3f})"
            lines.append(f"| {stream} | {Path(policy).name} | {r['requests']} | {r['oracle_rate']:.3f} | "
                         f"{r['exact_rate']:.3f} | {r['hit_rate']:.3f} ({r['false_hit_rate']:.3f}) | "
                         f"{r['false_hit_rate_by_answer']:.3f} | {cap} |")
    return "\n".join(lines)


def run_cli(args: Any) -> int:
    policies = [*(args.compare or []), args.policy]
    results = asyncio.run(evaluate(policies, args.seed, args.split))
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("groups", help="replay held-out rewording groups: opportunity captured, false hits",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", type=Path, required=True, help="policy YAML (after)")
    p.add_argument("--compare", type=Path, action="append", help="policy YAML to run first on the same stream (before)")
    p.add_argument("--seed", type=int, default=0, help="the split seed (the verifier's training used 0)")
    p.add_argument("--split", choices=("test", "calib"), default="test",
                   help="which held-out groups: test (report) or calib (choose a cut-off on)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_cli)
