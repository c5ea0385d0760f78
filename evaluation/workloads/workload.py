"""Workloads with ground truth, built from the shared data (``semcache eval workload``).

A workload is a list of requests, each with an arrival time, a category, an
**intent** (the ground truth: two requests with the same intent may share a
cached answer, any other hit is a false hit), the text, and token counts.

Intents per category (``../shared/data``, see its README):

=========  ==========================================================  ===============
category   intents                                                     popularity
=========  ==========================================================  ===============
qa         QQP questions joined into clusters (transitive closure of   Zipf s=0.9
           label-1 pairs); unpaired questions are singleton intents
support    Bitext customer-support intents (~167 rewordings each)      Zipf s=0.7
code       StackFAQ threads (10-11 human rewordings) + Arena coding    Zipf s=1.1 (power law)
chat       Arena creative writing, MT-Bench, AlpacaEval (singletons)   uniform
math       Arena math + GSM8K (singletons: numbers matter)              Zipf s=0.5
factual    ComQA clusters of rewordings                                Zipf s=0.8
=========  ==========================================================  ===============

Each request picks a category by the mix, then an intent by that category's
Zipf popularity over a shuffled pool. The first request of an intent uses a
random rewording; later ones use a *different* random rewording with
probability ``paraphrase_rate`` (when the intent has several) and repeat the
first text otherwise (an exact repeat). Arrivals and token counts come from
a BurstGPT-format trace (:mod:`evaluation.workloads.traces`); the response length is
fixed per intent (the trace row of its first request, capped) because
``max_tokens`` is part of every cache key and a paraphrase asks for the same
answer. Known limit: QQP labels are incomplete, so a few "false hits" in
``qa`` are unlabelled duplicates.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluation.workloads import traces
from evaluation.workloads.data import DATA

MIX = {"qa": 0.25, "support": 0.2, "code": 0.2, "chat": 0.15, "math": 0.1, "factual": 0.1}
ZIPF = {"qa": 0.9, "support": 0.7, "code": 1.1, "chat": 0.0, "math": 0.5, "factual": 0.8}


@dataclass(slots=True)
class Request:
    i: int
    t: float
    category: str
    intent: str
    text: str
    request_tokens: int
    response_tokens: int


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _qqp_clusters(path: Path) -> list[list[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for row in _jsonl(path):
        a, b = find(row["a"]), find(row["b"])
        if row["label"] == 1 and a != b:
            parent[a] = b
    groups: dict[str, list[str]] = defaultdict(list)
    for text in parent:
        groups[find(text)].append(text)
    return list(groups.values())


def _grouped(rows: list[dict[str, Any]], text_key: str = "question") -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        groups[row.get("group") or row["id"]].append(row[text_key])
    return list(groups.values())


def load_intents(data: Path = DATA) -> dict[str, list[list[str]]]:
    """category -> list of intents, each a list of rewordings."""
    arena = _jsonl(data / "prompts" / "arena-hard.jsonl")

    def arena_of(cat: str) -> list[list[str]]:
        return [[r["prompt"]] for r in arena if r.get("category") == cat]

    raw = {
        "qa": _qqp_clusters(data / "qqp" / "qqp-dev.jsonl"),
        "support": _grouped(_jsonl(data / "qa" / "bitext_cs_4k5" / "qa.jsonl")),
        "code": _grouped(_jsonl(data / "qa" / "stackfaq" / "qa.jsonl")) + arena_of("coding"),
        "chat": arena_of("creative_writing") + [[r["prompt"]] for r in _jsonl(data / "prompts" / "mtbench-vicuna.jsonl")]
                + [[r["question"]] for r in _jsonl(data / "qa" / "alpaca_eval_gpt4turbo" / "qa.jsonl")],
        "math": arena_of("math") + [[r["question"]] for r in _jsonl(data / "qa" / "gsm8k" / "qa.jsonl")],
        "factual": _grouped(_jsonl(data / "qa" / "comqa" / "qa.jsonl")),
    }
    return {c: _distinct(groups) for c, groups in raw.items()}


def _distinct(groups: list[list[str]]) -> list[list[str]]:
    """Drop texts already claimed by an earlier intent: one text must have one intent."""
    seen: set[str] = set()
    out = []
    for group in groups:
        texts = [t for t in dict.fromkeys(group) if " ".join(t.lower().split()) not in seen]
        seen.update(" ".join(t.lower().split()) for t in texts)
        if texts:
            out.append(texts)
    return out


def build(arrivals: list[traces.Arrival], intents: dict[str, list[list[str]]], *, mix: dict[str, float] = MIX,
          zipf: dict[str, float] = ZIPF, paraphrase_rate: float = 0.5, pool: int = 3000,
          max_response_tokens: int = 256, seed: int = 0) -> list[Request]:
    """One request per arrival (see the module docstring for the sampling rules)."""
    rng = random.Random(seed)
    names = [c for c in mix if mix[c] > 0 and intents.get(c)]
    pools, weights = {}, {}
    for c in names:
        chosen = rng.sample(intents[c], min(pool, len(intents[c])))
        pools[c] = chosen
        weights[c] = [1.0 / (rank + 1) ** zipf.get(c, 0.0) for rank in range(len(chosen))]
    first_text: dict[str, str] = {}
    length: dict[str, int] = {}
    out = []
    for i, arrival in enumerate(arrivals):
        c = rng.choices(names, weights=[mix[n] for n in names])[0]
        k = rng.choices(range(len(pools[c])), weights=weights[c])[0]
        intent, texts = f"{c}-{k}", pools[c][k]
        if intent not in first_text:
            first_text[intent] = rng.choice(texts)
            length[intent] = min(max_response_tokens, arrival.response_tokens)
            text = first_text[intent]
        elif len(texts) > 1 and rng.random() < paraphrase_rate:
            text = rng.choice([t for t in texts if t != first_text[intent]])
        else:
            text = first_text[intent]
        out.append(Request(i, arrival.timestamp, c, intent, text, arrival.request_tokens, length[intent]))
    return out


def answer_book(requests: list[Request]) -> list[dict[str, str]]:
    """A distinct answer of the intent's response length for every distinct text (engine-sim ``--answers``)."""
    book, seen = [], set()
    for r in requests:
        key = " ".join(r.text.lower().split())
        if key in seen:
            continue
        seen.add(key)
        filler = " ".join(["token"] * max(0, r.response_tokens - 3))
        book.append({"question": r.text, "answer": f"answer {len(book)} {filler}".strip()})
    return book


def write(requests: list[Request], out: Path, arrivals: list[traces.Arrival], meta: dict[str, Any]) -> None:
    """``out/requests.jsonl``, ``out/answers.jsonl``, ``out/trace.csv`` and ``out/meta.json``."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "requests.jsonl").open("w", encoding="utf-8") as fh:
        for r in requests:
            fh.write(json.dumps(asdict(r)) + "\n")
    with (out / "answers.jsonl").open("w", encoding="utf-8") as fh:
        for row in answer_book(requests):
            fh.write(json.dumps(row) + "\n")
    traces.write_csv(arrivals, out / "trace.csv")
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read(path: Path) -> list[Request]:
    """Requests of a workload directory (or of its ``requests.jsonl``)."""
    path = Path(path)
    path = path / "requests.jsonl" if path.is_dir() else path
    return [Request(**row) for row in _jsonl(path)]


def summary(requests: list[Request]) -> dict[str, Any]:
    by_cat: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "intents": set(), "texts": set()})
    for r in requests:
        s = by_cat[r.category]
        s["requests"] += 1
        s["intents"].add(r.intent)
        s["texts"].add(r.text)
    return {c: {"requests": s["requests"], "intents": len(s["intents"]), "distinct_texts": len(s["texts"])}
            for c, s in sorted(by_cat.items())}


def run_cli(args: Any) -> int:
    if args.trace:
        arrivals = traces.read_burstgpt(args.trace, limit=args.requests)
    else:
        arrivals = traces.generate(args.requests, rate=args.rate, seed=args.seed)
    requests = build(arrivals, load_intents(args.data), paraphrase_rate=args.paraphrase_rate, pool=args.pool,
                     max_response_tokens=args.max_response_tokens, seed=args.seed)
    meta = {"requests": len(requests), "trace": str(args.trace or f"generated rate={args.rate}/s"),
            "paraphrase_rate": args.paraphrase_rate, "pool": args.pool, "seed": args.seed, "mix": MIX,
            "zipf": ZIPF, "duration_s": requests[-1].t if requests else 0, "categories": summary(requests)}
    write(requests, args.out, arrivals, meta)
    print(json.dumps(meta, indent=1))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("workload", help="build a workload with ground-truth intents from the shared data",
                       description="Write OUT/requests.jsonl (arrival, category, intent, text, tokens), "
                                   "OUT/answers.jsonl (engine-sim --answers), OUT/trace.csv (BurstGPT format).")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--requests", type=int, default=20000, help="number of requests (default 20000)")
    p.add_argument("--trace", type=Path, help="BurstGPT-format CSV for arrivals and tokens (default: generate)")
    p.add_argument("--rate", type=float, default=20.0, help="calm arrival rate of a generated trace, per second")
    p.add_argument("--paraphrase-rate", type=float, default=0.5)
    p.add_argument("--pool", type=int, default=3000, help="intents per category in play")
    p.add_argument("--max-response-tokens", type=int, default=256)
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=run_cli)
