"""Labelled query pairs for the cross-encoder verifier: training, calibration and held-out test.

A pair ``{"a": cached query, "b": new query, "label": 1 if a's answer is right
for b, "source", "kind"}``. Sources (all under ``../shared/data`` or ``$SEMCACHE_DATA``):

* rewording groups of ``qa/bitext_cs_4k5`` (27 support intents), ``qa/stackfaq``
  (125 threads) and ``qa/comqa`` (WikiAnswers clusters): two questions of one
  group are a positive; a question of another group is a negative, a *hard*
  one when it comes from the same Bitext category (``track_refund`` vs
  ``get_refund``) or is the most word-overlapping of a sample of other groups;
  the train split also gets *mined* negatives, each sampled question's nearest
  question (MiniLM cosine) of another group (:mod:`evaluation.training.verifier_mining`);
* QQP dev and PAWS dev pairs (split by pair id like :mod:`evaluation.training.train_verifier`);
* GPTCache's paraphrase pairs (all positive);
* pairs made by rule (:mod:`evaluation.training.verifier_rules`) from group questions:
  negations and antonyms, changed numbers, dates, units, entities and scope
  words (negatives), case, punctuation and filler words (positives); and
  GSM8K problems with one number changed (negatives);
* *word swaps* (every split): a group question with one content word replaced
  by a word of a sibling intent's or a look-alike group's question, which its
  own group never uses ("cancel purchase" -> "track purchase"; in the held-out
  splits a look-alike's word only where it stands next to the same word there:
  "the nile river" -> "the colorado river"), half of them
  dressed in filler words or another case (:func:`swap_pairs`). In the train
  split 30% of the other negatives are dressed the same way, so form changes
  stop meaning "same question" (they were on positives only).

Whole groups are split, never pairs of one group: a group's name hashed with
the seed puts it in ``train`` (70%), ``calib`` (15%: what ``semcache calibrate``
sees) or ``test`` (15%: what ``semcache eval pairs`` reports). Everything is
seeded, so the same seed gives the same pairs. Rule-made negatives
(:data:`TRAP_KINDS`) carry ``"trap": true``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from pathlib import Path

from evaluation.training.verifier_mining import mined_negatives
from evaluation.training.verifier_rules import NEGATIVE_RULES, POSITIVE_RULES, dress, swap_word
from evaluation.workloads.data import DATA

SPLITS = ("train", "calib", "test")
_WORD = re.compile(r"[a-z0-9]+")


def split_of(name: str, seed: int) -> str:
    """``train`` / ``calib`` / ``test`` for a group (or pair id), stable for a seed."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "train" if u < 0.70 else "calib" if u < 0.85 else "test"


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_groups(name: str) -> dict[str, dict]:
    """``group -> {"questions": [...], "category": ...}`` for a ``qa/<name>`` set (groups of 2+ only)."""
    groups: dict[str, dict] = {}
    for row in _read(DATA / "qa" / name / "qa.jsonl"):
        if not row.get("group"):
            continue
        g = groups.setdefault(f"{name}:{row['group']}", {"questions": [], "category": None})
        g["questions"].append(row["question"].strip())
        if name == "bitext_cs_4k5":
            g["category"] = row["category"]  # intents share a category (ACCOUNT, REFUND, ...)
    return {k: {**v, "questions": list(dict.fromkeys(v["questions"]))}
            for k, v in groups.items() if len(set(v["questions"])) >= 2 and len(v["questions"]) < 500}


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _closest(query: str, pool: list[str], rng: random.Random, sample: int = 40) -> str:
    """The most word-overlapping of ``sample`` random texts of ``pool`` (a lexical hard negative)."""
    words = _words(query)
    cands = rng.sample(pool, min(sample, len(pool)))
    return max(cands, key=lambda t: len(words & _words(t)) / (len(words | _words(t)) or 1))


def group_pairs(groups: dict[str, dict], per_group: int, rng: random.Random, source: str) -> list[dict]:
    """Positives within each group and as many negatives (hard where possible) from other groups."""
    out: list[dict] = []
    by_category: dict[str, list[str]] = defaultdict(list)
    for name, g in groups.items():
        if g["category"]:
            by_category[g["category"]].append(name)
    names = sorted(groups)
    all_questions = [(q, n) for n in names for q in groups[n]["questions"]]
    for name in names:
        qs = groups[name]["questions"]
        n = min(per_group, len(qs) * (len(qs) - 1) // 2)
        for _ in range(n):
            a, b = rng.sample(qs, 2)
            out.append({"a": a, "b": b, "label": 1, "source": source, "kind": "paraphrase"})
        siblings = [o for o in by_category.get(groups[name]["category"], []) if o != name]
        for i in range(n):
            a = rng.choice(qs)
            if siblings and i % 2 == 0:
                other = groups[rng.choice(siblings)]["questions"]
                b, kind = _closest(a, other, rng), "same_category"
            else:
                pool = [q for q, g in rng.sample(all_questions, min(60, len(all_questions))) if g != name]
                if not pool:
                    continue
                b, kind = _closest(a, pool, rng, sample=len(pool)), "other_group"
            out.append({"a": a, "b": b, "label": 0, "source": source, "kind": kind})
    return out


def rule_pairs(questions: list[str], n_neg: int, n_pos: int, rng: random.Random, source: str) -> list[dict]:
    """Up to ``n_neg`` rule negatives and ``n_pos`` rule positives from ``questions``."""
    out: list[dict] = []
    for rules, n, label in ((NEGATIVE_RULES, n_neg, 0), (POSITIVE_RULES, n_pos, 1)):
        made, tries = 0, 0
        while made < n and tries < n * 20:
            tries += 1
            q = rng.choice(questions)
            kind, rule = rng.choice(rules)
            changed = rule(q, rng)
            if changed is None or changed.strip() == q.strip():
                continue
            a, b = (q, changed) if rng.random() < 0.5 else (changed, q)
            out.append({"a": a, "b": b, "label": label, "source": source, "kind": kind})
            made += 1
    return out


def _dressed(pair: dict, rng: random.Random) -> dict:
    """``pair`` with a form change (:func:`dress`) on one of its sides."""
    side = rng.choice("ab")
    return {**pair, side: dress(pair[side], rng), "dressed": True}


def _marks(name: str, groups: dict[str, dict], by_category: dict[str, list[str]]) -> frozenset[str] | None:
    """The words that mark intent ``name`` against its siblings (same category): used by 5%+ of
    its questions and by under a fifth as many of each sibling's; ``None`` without siblings.

    Swapping one of these for a sibling's ("cancel" -> "track" purchase) changes the intent;
    swapping a word they share ("money back" -> "money compensation") often does not."""
    siblings = [o for o in by_category.get(groups[name]["category"], []) if o != name]
    if not siblings:
        return None

    def shares(group: str) -> dict[str, float]:
        qs = groups[group]["questions"]
        counts: dict[str, int] = defaultdict(int)
        for q in qs:
            for w in set(_WORD.findall(q.lower())):
                counts[w] += 1
        return {w: c / len(qs) for w, c in counts.items()}

    own, others = shares(name), [shares(o) for o in siblings]
    return frozenset(w for w, f in own.items() if f >= 0.05 and all(o.get(w, 0.0) * 5 <= f for o in others))


def swap_pairs(groups: dict[str, dict], n: int, rng: random.Random, source: str,
               in_context: bool = False) -> list[dict]:
    """Up to ``n`` one-word-swap negatives ``{a: question, b: question with one word swapped}``.

    The donor of the new word is a question of a sibling intent (same Bitext
    category) when there is one, else the most word-overlapping of a sample of
    other groups' questions: the swaps a cache meets are between look-alikes.
    A word any question of the own group uses is never inserted (it may be a
    paraphrase's synonym). Half the pairs get a form change on one side. ``in_context``: a
    look-alike's word only where it shares a neighbour with the word it replaces
    (:func:`verifier_rules.swap_word`)."""
    names = sorted(groups)
    if len(names) < 2:
        return []
    vocab = {name: frozenset(w for q in groups[name]["questions"] for w in _WORD.findall(q.lower())) for name in names}
    by_category: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if groups[name]["category"]:
            by_category[groups[name]["category"]].append(name)
    marks = {name: _marks(name, groups, by_category) for name in names}
    out: list[dict] = []
    for _ in range(n * 5):
        if len(out) >= n:
            break
        name = rng.choice(names)
        q = rng.choice(groups[name]["questions"])
        siblings = [o for o in by_category.get(groups[name]["category"], []) if o != name]
        if siblings:
            sibling = rng.choice(siblings)
            donor = rng.choice(groups[sibling]["questions"])
            changed = swap_word(q, donor, rng, vocab[name], removable=marks[name], insertable=marks[sibling])
        else:
            others = [o for o in rng.sample(names, min(40, len(names))) if o != name]
            donor = _closest(q, [rng.choice(groups[o]["questions"]) for o in others], rng)
            changed = swap_word(q, donor, rng, vocab[name], in_context=in_context)
        if changed is None:
            continue
        pair = {"a": q, "b": changed, "label": 0, "source": source, "kind": "word_swap"}
        if rng.random() < 0.5:
            pair = {**pair, "a": changed, "b": q}
        out.append(_dressed(pair, rng) if rng.random() < 0.5 else pair)
    return out


def _labelled_sets(split: str, seed: int, rng: random.Random, qqp_n: int) -> list[dict]:
    out = []
    for name, path, limit in (("qqp", "qqp/qqp-dev.jsonl", qqp_n), ("paws", "paws/paws-dev.jsonl", None),
                              ("gptcache", "paraphrases/gptcache-mock.jsonl", None)):
        rows = [r for r in _read(DATA / path) if split_of(f"{name}:{r['id']}", seed) == split]
        if limit is not None and len(rows) > limit:
            rows = rng.sample(rows, limit)
        kind = "paraphrase" if name == "gptcache" else name
        out += [{"a": r["a"], "b": r["b"], "label": int(r["label"]), "source": name, "kind": kind} for r in rows]
    return out


def _math_pairs(split: str, seed: int, n: int, rng: random.Random) -> list[dict]:
    """GSM8K problems and the same problem with one number changed (the answer differs)."""
    from evaluation.training.verifier_rules import change_number

    rows = [r for r in _read(DATA / "qa" / "gsm8k" / "qa.jsonl") if split_of(f"gsm8k:{r['id']}", seed) == split]
    out = []
    for r in rng.sample(rows, min(n, len(rows))):
        changed = change_number(r["question"], rng)
        if changed and changed != r["question"]:
            out.append({"a": r["question"], "b": changed, "label": 0, "source": "gsm8k", "kind": "math_numbers"})
    return out


# pairs per group (positives; as many negatives), rule pairs and word swaps, per split
_SIZES = {
    "train": dict(bitext=110, stackfaq=12, comqa=2, neg=5000, pos=3000, qqp=9000, math=600, swap=3600),
    "calib": dict(bitext=60, stackfaq=10, comqa=2, neg=700, pos=400, qqp=1200, math=100, swap=600),
    "test": dict(bitext=60, stackfaq=10, comqa=2, neg=700, pos=400, qqp=1200, math=200, swap=600),
}
_SWAP_SHARE = {"bitext_cs_4k5": 0.4, "stackfaq": 0.2, "comqa": 0.4}
_DRESSED_NEGATIVES = 0.3  # of the train split's group, mined and rule negatives
_GROUP_SOURCES = ("bitext_cs_4k5", "stackfaq", "comqa", "rules")


TRAP_KINDS = frozenset({kind for kind, _ in NEGATIVE_RULES} | {"math_numbers", "word_swap"})
"""Negatives made by rule to be hard (``"trap": true``): ``semcache calibrate`` bounds the share of them
served (``max_trap_rate``) apart from the false-hit rate of the other pairs, whose mix is traffic's."""


def build(split: str, seed: int = 0, *, mine: bool = True) -> list[dict]:
    """All pairs of one split, shuffled; deterministic for a seed.

    The train split also gets mined hard negatives (:mod:`evaluation.training.verifier_mining`:
    each sampled question's nearest question of another group), unless ``mine`` is off,
    and 30% of its group, mined and rule negatives dressed in a form change.
    """
    rng = random.Random(f"{seed}:{split}")
    # Word swaps and dressing draw from their own streams: the pairs the other sources make
    # stay exactly those of earlier versions (a held-out figure stays comparable).
    swap_rng, dress_rng = random.Random(f"{seed}:{split}:swap"), random.Random(f"{seed}:{split}:dress")
    size = _SIZES[split]
    pairs: list[dict] = []
    swaps: list[dict] = []
    questions: list[str] = []
    for name in ("bitext_cs_4k5", "stackfaq", "comqa"):
        groups = {k: v for k, v in load_groups(name).items() if split_of(k, seed) == split}
        pairs += group_pairs(groups, size[name.split("_")[0]], rng, name)
        if split == "train" and mine:  # held-out splits stay as they were: figures stay comparable
            pairs += mined_negatives(name, groups, rng)
        questions += [q for g in groups.values() for q in g["questions"]]
        # Held-out swaps read like questions someone asks (the traps calibration bounds); the train
        # split keeps the swaps the shipped model was trained on.
        swaps += swap_pairs(groups, int(size["swap"] * _SWAP_SHARE[name]), swap_rng, name,
                            in_context=split != "train")
    pairs += rule_pairs(questions, size["neg"], size["pos"], rng, "rules")
    if split == "train":  # held-out splits keep their negatives as they were: figures stay comparable
        pairs = [_dressed(p, dress_rng) if p["label"] == 0 and p["source"] in _GROUP_SOURCES
                 and dress_rng.random() < _DRESSED_NEGATIVES else p for p in pairs]
    pairs += swaps
    pairs += _labelled_sets(split, seed, rng, size["qqp"])
    pairs += _math_pairs(split, seed, size["math"], rng)
    pairs = [p for p in pairs if p["a"] and p["b"]]
    rng.shuffle(pairs)
    for i, p in enumerate(pairs):
        p["id"] = f"{split}-{i}"
        if p["label"] == 0 and p["kind"] in TRAP_KINDS:
            p["trap"] = True
    return pairs


def write(path: Path, pairs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    import argparse
    from collections import Counter

    parser = argparse.ArgumentParser(description="write the verifier's train/calib/test pairs as JSON lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(".semcache/verifier-pairs"))
    args = parser.parse_args(argv)
    for split in SPLITS:
        pairs = build(split, args.seed)
        write(args.out / f"{split}.jsonl", pairs)
        # Queries only: without QQP (noisy duplicate labels) and PAWS (scrambled Wikipedia
        # sentences), the closest to a cache's traffic; what the policies are calibrated on.
        write(args.out / f"{split}-queries.jsonl", [p for p in pairs if p["source"] not in ("qqp", "paws")])
        kinds = Counter((p["kind"], p["label"]) for p in pairs)
        print(split, len(pairs), dict(sorted(kinds.items())))


if __name__ == "__main__":
    main()
