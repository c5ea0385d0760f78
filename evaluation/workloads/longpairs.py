"""Pairs the embedding cannot tell apart: long prompts whose instruction differs, and long words.

Builds labelled pairs (``{"id", "a", "b", "label", "kind"}``; ``a`` is stored,
``b`` looked up; label 1 = ``a``'s answer is right for ``b``):

* **long prompts** (1k-8k tokens): a generated document, Python file or set of
  RAG passages, followed (or preceded) by a question; ``b`` has the same body
  and the *same question reworded* (label 1), *another question* (label 0),
  or the same question over a body with one sentence replaced in the middle
  (label 0);
* **long words**: short prompts around a DNA sequence, a base64 blob, a
  SHA-256 hash, a long identifier or a UUID; ``b`` carries *another* value
  (label 0) or the same value with the question reworded (label 1).

Each pair is played through a real :class:`semcache.SemanticCache` with the
real embedder (see :mod:`evaluation.replay.pairs`) twice in one run: with the diff
rule off (``guards.diff: false``, the behaviour before it) and on, and the
served-wrongly / legitimate-hit counts are printed side by side::

    PYTHONPATH=$PWD .venv/bin/python -m evaluation.workloads.longpairs --per-kind 20 --seed 0 \\
        --pairs /work/shared/data/qqp/qqp-dev.jsonl --pairs /work/shared/data/paws/paws-dev.jsonl

``--pairs`` adds short paraphrase pairs (a seeded sample of each file) to show
that the rule leaves their decisions as they were.

The generators are deterministic in ``seed`` and used by the tests too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from semcache.config.policy import PolicySet, load_policies_text

_NOUNS = ("cache", "engine", "river", "market", "teacher", "village", "server", "garden", "report", "bridge",
          "council", "harbour", "library", "factory", "farmer", "museum", "station", "forest", "contract",
          "student", "network", "kitchen", "budget", "orchestra", "island", "hospital", "archive", "valley")
_VERBS = ("describes", "improves", "connects", "delays", "supports", "replaces", "measures", "protects",
          "follows", "changes", "reviews", "shapes", "funds", "questions", "explains", "limits")
_ADJS = ("old", "quiet", "regional", "careful", "modern", "fragile", "public", "northern", "busy", "small",
         "annual", "digital", "local", "bright", "complex", "rural")
_PEOPLE = ("Maria Lopez", "Jonas Berg", "Aiko Tanaka", "Samuel Okafor", "Elena Petrova", "Liam Walsh")
_PLACES = ("Lisbon", "Tromso", "Nairobi", "Osaka", "Valparaiso", "Tbilisi")

DOC_QUESTIONS = [
    ("Question: how many times does the word cache appear in the document?",
     "Question: how often does the word cache occur in the document?"),
    ("Question: translate the document into French.", "Question: translate this document to French."),
    ("Question: what is the main argument of the document?",
     "Question: what is the document's main argument?"),
    ("Question: list the people mentioned in the document.",
     "Question: list every person mentioned in the document."),
    ("Question: write a short title for the document.", "Question: write a brief title for this document."),
]
CODE_QUESTIONS = [
    ("Explain what this code does.", "Explain what this code is doing."),
    ("Find the bug in this code.", "Find the bug in the code above."),
    ("Write unit tests for this code.", "Write unit tests for the code above."),
    ("Add type hints to this code.", "Add type annotations to this code."),
    ("Translate this code to JavaScript.", "Rewrite this code in JavaScript."),
]
RAG_QUESTIONS = [
    ("Using only the passages above, who founded the harbour museum?",
     "Using only the passages above, who was the founder of the harbour museum?"),
    ("Using only the passages above, why was the bridge closed?",
     "Using only the passages above, what was the reason the bridge was closed?"),
    ("Using only the passages above, what does the council fund?",
     "Using only the passages above, what is funded by the council?"),
    ("Using only the passages above, summarise the budget dispute.",
     "Using only the passages above, give a summary of the budget dispute."),
]


def _sentence(rng: random.Random) -> str:
    form = rng.randrange(4)
    n1, n2 = rng.choice(_NOUNS), rng.choice(_NOUNS)
    if form == 0:
        return f"The {rng.choice(_ADJS)} {n1} {rng.choice(_VERBS)} the {rng.choice(_ADJS)} {n2} near {rng.choice(_PLACES)}."
    if form == 1:
        return f"{rng.choice(_PEOPLE)} said that every {n1} {rng.choice(_VERBS)} a {n2} in some way."
    if form == 2:
        return f"In the {rng.choice(_ADJS)} season, the {n1} rarely {rng.choice(_VERBS)} the {n2}."
    return f"Critics argue that the {n1} {rng.choice(_VERBS)} the {n2} more than the {rng.choice(_ADJS)} {rng.choice(_NOUNS)}."


def _words_to_sentences(rng: random.Random, words: int) -> list[str]:
    out, n = [], 0
    while n < words:
        s = _sentence(rng)
        out.append(s)
        n += len(s.split())
    return out


def document(rng: random.Random, words: int) -> str:
    """Prose in paragraphs of ~6 sentences, about ``words`` words."""
    sentences = _words_to_sentences(rng, words)
    return "\n\n".join(" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6))


def code_file(rng: random.Random, words: int) -> str:
    """A Python module of small functions, about ``words`` whitespace-separated words."""
    parts, n, i = ['"""Utilities for the billing service."""', "import math", ""], 0, 0
    while n < words:
        name = f"{rng.choice(_ADJS)}_{rng.choice(_NOUNS)}_{i}"
        op = rng.choice("+-*")
        fn = (f"def {name}(values, factor={rng.randrange(2, 9)}):\n"
              f'    """Return the {rng.choice(_ADJS)} {rng.choice(_NOUNS)} score of values."""\n'
              f"    total = 0\n"
              f"    for v in values:\n"
              f"        total = total {op} v * factor\n"
              f"    return math.floor(total / max(len(values), 1))\n")
        parts.append(fn)
        n += len(fn.split())
        i += 1
    return "\n\n".join(parts)


def rag_context(rng: random.Random, words: int) -> str:
    """Numbered passages with titles, as a retriever would paste them."""
    passages, n, i = [], 0, 1
    while n < words:
        body = " ".join(_words_to_sentences(rng, rng.randrange(80, 160)))
        passages.append(f"[Passage {i}] {rng.choice(_ADJS).title()} {rng.choice(_NOUNS)} report\n{body}")
        n += len(body.split())
        i += 1
    return "\n\n".join(passages)


BODIES = {"document": (document, DOC_QUESTIONS), "code": (code_file, CODE_QUESTIONS),
          "rag": (rag_context, RAG_QUESTIONS)}


def _replace_middle_sentence(rng: random.Random, body: str) -> str:
    lines = body.split("\n")
    middle = len(lines) // 2
    for k in range(middle, len(lines)):
        if len(lines[k].split()) > 8 and not lines[k].lstrip().startswith(("def ", "return", "for ", "total")):
            lines[k] = lines[k] + " " + _sentence(rng)
            return "\n".join(lines)
    return body + " " + _sentence(rng)  # pragma: no cover - every generated body has a long middle line


def long_prompt_pairs(per_kind: int, seed: int = 0, min_words: int = 800,
                      max_words: int = 6000) -> list[dict[str, Any]]:
    """``per_kind`` pairs of each (body, variant): reworded (1), other question (0), body edited (0).

    ~0.75 words per BPE token of the engine, so 800-6000 words is ~1k-8k tokens.
    """
    rng = random.Random(seed)
    pairs = []
    for body_kind, (make, questions) in BODIES.items():
        for i in range(per_kind):
            body = make(rng, rng.randrange(min_words, max_words))
            q, reworded = rng.choice(questions)
            other = rng.choice([p[0] for p in questions if p[0] != q])
            front = i % 4 == 3  # a quarter put the question before the body

            def join(question: str, text: str = body) -> str:
                return f"{question}\n\n{text}" if front else f"{text}\n\n{question}"

            a = join(q)
            pid = f"{body_kind}-{i}"
            pairs += [
                {"id": f"{pid}-reworded", "a": a, "b": join(reworded), "label": 1, "kind": f"{body_kind}/reworded"},
                {"id": f"{pid}-other", "a": a, "b": join(other), "label": 0, "kind": f"{body_kind}/other question"},
                {"id": f"{pid}-edited", "a": a, "b": join(q, _replace_middle_sentence(rng, body)), "label": 0,
                 "kind": f"{body_kind}/body edited"},
            ]
    return pairs


def _dna(rng: random.Random) -> str:
    return "".join(rng.choice("ACGT") for _ in range(rng.randrange(120, 400)))


def _b64(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(rng.randrange(90, 300))).decode()


def _sha(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(16)).hexdigest()


def _ident(rng: random.Random) -> str:
    """A camelCase name over 100 characters (one unknown token to the embedder)."""
    name = rng.choice(_NOUNS)
    while len(name) <= 100:
        name += rng.choice(_NOUNS).title()
    return name


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


LONG_WORDS = {
    "dna": (_dna, "What protein does this DNA sequence encode? {}", "Which protein is encoded by this DNA sequence? {}"),
    "base64": (_b64, "Decode this base64 string: {}", "Please decode this base64 string: {}"),
    "hash": (_sha, "Which file in our repo has the SHA-256 hash {}?", "Which file in our repo has SHA-256 hash {}?"),
    "identifier": (_ident, "What does the function {} return?", "What does this function {} return?"),
    "uuid": (_uuid, "Show the order with id {}.", "Show me the order with id {}."),
}


def long_word_pairs(per_kind: int, seed: int = 0) -> list[dict[str, Any]]:
    """``per_kind`` pairs per kind with another value (0) and with the question reworded (1)."""
    rng = random.Random(seed)
    pairs = []
    for kind, (make, template, reworded) in LONG_WORDS.items():
        for i in range(per_kind):
            x, y = make(rng), make(rng)
            a = template.format(x)
            pairs += [
                {"id": f"{kind}-{i}-other", "a": a, "b": template.format(y), "label": 0, "kind": f"{kind}/other value"},
                {"id": f"{kind}-{i}-reworded", "a": a, "b": reworded.format(x), "label": 1, "kind": f"{kind}/reworded"},
            ]
    return pairs


def policies_with_diff(policy_text: str, diff: bool) -> PolicySet:
    """A policy file's text with ``guards.diff`` set in its defaults (off = the behaviour before the rule)."""
    raw = yaml.safe_load(policy_text)
    raw.setdefault("defaults", {}).setdefault("guards", {})["diff"] = diff
    return load_policies_text(yaml.safe_dump(raw), source=f"policy (diff {'on' if diff else 'off'})")


def _row() -> dict[str, int]:
    return {"pairs": 0, "label1": 0, "wrong": 0, "legit_hits": 0}


async def evaluate(pairs: list[dict[str, Any]], policy_path: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Per rule setting and kind: pairs, label-1 pairs, wrong hits (label 0 served) and legitimate
    hits (label 1 served); and per setting the seconds its store+lookup pass took."""
    from evaluation.replay.pairs import PrecomputedEmbedder, embed_all, play_pairs
    from gpu_embed import EmbedderSettings, build_embedder

    policy_text = Path(policy_path).read_text(encoding="utf-8")  # once: it may be a pipe
    embedder = build_embedder(EmbedderSettings(lru_size=0))
    try:
        vectors = await embed_all(embedder, [t for p in pairs for t in (p["a"], p["b"])], progress=False)
        out: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name, diff in (("before (diff off)", False), ("after (diff on)", True)):
            started = time.perf_counter()
            outcomes = await play_pairs(pairs, policies_with_diff(policy_text, diff),
                                        PrecomputedEmbedder(embedder, vectors), progress=False)
            seconds[name] = time.perf_counter() - started
            table: dict[str, dict[str, int]] = defaultdict(_row)
            for pair, o in zip(pairs, outcomes, strict=True):
                row = table[pair["kind"]]
                row["pairs"] += 1
                row["label1"] += o.label
                if o.status == "hit":
                    row["wrong" if o.label == 0 else "legit_hits"] += 1
            out[name] = dict(table)
    finally:
        await embedder.aclose()
    return out, seconds


def format_table(result: dict[str, Any], seconds: dict[str, float]) -> str:
    settings = list(result)
    kinds = sorted({k for s in settings for k in result[s]})
    lines = [f"{'kind':<28}{'pairs':>6}" + "".join(f"{s + ': wrong / legit hits':>40}" for s in settings)]
    for kind in kinds:
        cells = ""
        for s in settings:
            r = result[s][kind]
            cells += f"{r['wrong']:>22} / {r['legit_hits']:<15}"
        lines.append(f"{kind:<28}{result[settings[0]][kind]['pairs']:>6}{cells}")
    for group in sorted({_group(k) for k in kinds}):
        lines.append(f"\n{group}:")
        for s in settings:
            t = _row()
            for kind in kinds:
                if _group(kind) == group:
                    for k, v in result[s][kind].items():
                        t[k] += v
            lines.append(f"  {s}: served wrongly {t['wrong']}/{t['pairs'] - t['label1']} label-0 pairs; "
                         f"legitimate hits {t['legit_hits']}/{t['label1']} label-1 pairs")
    lines.append("\nstore+lookup pass: " + ", ".join(f"{s} {sec:.2f} s" for s, sec in seconds.items()))
    return "\n".join(lines)


def _group(kind: str) -> str:
    head = kind.split("/")[0]
    if head in BODIES:
        return "long prompts (1k-8k tokens)"
    if head in LONG_WORDS:
        return "long words"
    return head


def paraphrase_pairs(path: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of a labelled pair file (QQP, PAWS), kinds named by file and label."""
    from evaluation.replay.pairs import load_pairs

    return [{**p, "kind": f"{path.stem}/label {p['label']}"} for p in load_pairs(path, limit, seed)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-kind", type=int, default=20, help="bodies per body kind / values per long-word kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", type=Path, default=Path("policies/default.yaml"))
    p.add_argument("--pairs", type=Path, action="append", default=[],
                   help="also play a labelled pair file (short paraphrases: QQP, PAWS), before and after")
    p.add_argument("--pairs-limit", type=int, default=2000, help="seeded sample of each --pairs file")
    args = p.parse_args(argv)
    pairs = long_prompt_pairs(args.per_kind, args.seed) + long_word_pairs(args.per_kind, args.seed)
    for path in args.pairs:
        pairs += paraphrase_pairs(path, args.pairs_limit, args.seed)
    print(format_table(*asyncio.run(evaluate(pairs, args.policy))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
