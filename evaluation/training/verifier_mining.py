"""Mined hard negatives for the cross-encoder: each question's nearest question of *another* group.

The cross-encoder only ever judges what the bi-encoder's pre-filter lets
through: the nearest cached questions, cosine >= ~0.7. The group pairs of
:mod:`evaluation.training.verifier_data` draw their negatives from a few dozen random
questions, so on ComQA they are mostly easy ("who sang respect?" vs "how
tall is everest?"), and the model learned to trust a shared topic: on the
held-out ComQA stream it served "what year did canada join the united
nations?" the answer of "what year did canadians join nato?" (p 0.96) and
"first vice president of india?" that of "who was first president india?".

Here each sampled question is embedded (MiniLM, one text per run, so the
vectors do not depend on batch-mates) and paired with its nearest question
of another group of the same set and split, if that is at least
:data:`MIN_COSINE` close. Where the set has gold answers (ComQA), a pair
whose groups share an answer is skipped: crowd clusters split some questions
in two, and those are not negatives.
"""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np

from evaluation.workloads.data import DATA

MIN_COSINE = 0.6
"""Below the pre-filters the policies use (0.70): a pair the cache could meet, with some margin."""
PER_GROUP = {"bitext_cs_4k5": 100, "stackfaq": 4, "comqa": 2}
"""Questions per group that get a mined negative (Bitext has 27 intents of ~170 questions)."""


def gold_answers(source: str) -> dict[str, frozenset[str]]:
    """``group -> its gold answers`` (case-folded) of ``qa/<source>``, groups named as :func:`load_groups` does."""
    out: dict[str, set[str]] = {}
    for line in (DATA / "qa" / source / "qa.jsonl").open(encoding="utf-8"):
        row = json.loads(line) if line.strip() else None
        if row and row.get("group"):
            answers = row.get("answers") or [row.get("answer") or ""]
            out.setdefault(f"{source}:{row['group']}", set()).update(" ".join(str(a).lower().split()) for a in answers)
    return {k: frozenset(v) for k, v in out.items()}


def _vectors(texts: list[str]) -> np.ndarray:
    from gpu_embed import EmbedderSettings, build_embedder

    async def run() -> np.ndarray:
        embedder = build_embedder(EmbedderSettings(lru_size=0))
        try:
            return np.stack([(await embedder.embed([t]))[0] for t in texts])  # one per run: deterministic
        finally:
            await embedder.aclose()

    return asyncio.run(run())


def mined_negatives(source: str, groups: dict[str, dict], rng: random.Random,
                    answers: dict[str, frozenset[str]] | None = None) -> list[dict]:
    """Negative pairs ``{a, b, label: 0, kind: "mined"}``: sampled questions of ``groups`` and their
    nearest question of another group (``groups``: one set, one split, as :func:`load_groups` gives;
    ``answers``: each group's gold answers, by default :func:`gold_answers` of ``source``)."""
    owners = [(q, name) for name in sorted(groups) for q in groups[name]["questions"]]
    if len(owners) < 2:
        return []
    texts = [q for q, _ in owners]
    vectors = _vectors(texts)
    owner = np.array([name for _, name in owners])
    answers = gold_answers(source) if answers is None else answers
    out = []
    for name in sorted(groups):
        rows = np.flatnonzero(owner == name)
        for i in rng.sample(list(rows), min(PER_GROUP.get(source, 2), len(rows))):
            sims = vectors @ vectors[i]
            sims[owner == name] = -1.0
            j = int(np.argmax(sims))
            if sims[j] < MIN_COSINE:
                continue
            mine, theirs = answers.get(name), answers.get(str(owner[j]))
            if mine is not None and theirs is not None and mine & theirs:
                continue  # a cluster split in two: the same answer, not a negative
            out.append({"a": texts[i], "b": texts[j], "label": 0, "source": source, "kind": "mined"})
    return out
