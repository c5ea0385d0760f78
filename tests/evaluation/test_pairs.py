"""Pair evaluation: the confusion matrix through the real decision path, checked by hand."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from evaluation.replay import pairs
from semcache import load_policies_text
from evaluation.workloads.data import DATA


POLICY = """\
defaults:
  threshold: 0.9
  guards: {numbers: true, negation: false, entities: false, identifiers: false}
categories:
  default: {}
"""


class WordsEmbedder:
    """Bag of words without digits: '5 apples' and '6 apples' embed identically (the guard must act)."""

    dim = 64
    identity = "test-words"

    async def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[i, hash(word) % self.dim] += 1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-9)
        return out


PAIRS = [  # id, a, b, label -> expected decision
    ("1", "how do i bake bread", "how do i bake bread", 1),          # hit, true
    ("2", "how do i bake bread", "How do I bake bread", 0),          # hit (same words), false
    ("3", "what is the capital", "weather forecast tomorrow", 1),    # miss: recall loss
    ("4", "reset my router", "cook pasta quickly", 0),               # miss, correct
    ("5", "buy 5 apples today", "buy 6 apples today", 0),            # similarity 1.0 but numbers guard: miss
]


async def test_confusion_matrix_matches_hand_computed():
    rows = [{"id": i, "a": a, "b": b, "label": lab} for i, a, b, lab in PAIRS]
    outcomes = await pairs.play_pairs(rows, load_policies_text(POLICY, source="test"), WordsEmbedder(),
                                      progress=False)
    assert [o.status for o in outcomes] == ["hit", "hit", "miss", "miss", "miss"]
    assert outcomes[4].stage == "guard"
    c = pairs.confusion(outcomes)
    # hits 2 (true 1, false 1); label-1 pairs 2; label-0 pairs 3
    assert (c["pairs"], c["hits"], c["true_hits"], c["false_hits"]) == (5, 2, 1, 1)
    assert c["precision"] == pytest.approx(0.5)
    assert c["recall"] == pytest.approx(0.5)
    assert c["false_hit_rate"] == pytest.approx(0.5)
    assert c["false_positive_rate"] == pytest.approx(1 / 3)
    # Without guards the 0.9 threshold also serves pair 5: a second false hit.
    row = next(r for r in pairs.sweep(outcomes)["rows"] if r["threshold"] == 0.9)
    assert (row["hits"], row["true_hits"], row["false_hits"]) == (3, 1, 2)


def test_pairs_never_see_each_other():
    """Pair 2's b equals pair 1's a: it must only be matched against pair 2's own a."""
    import asyncio

    rows = [{"id": "x", "a": "alpha beta", "b": "gamma delta", "label": 0},
            {"id": "y", "a": "epsilon zeta", "b": "alpha beta", "label": 0}]
    outcomes = asyncio.run(pairs.play_pairs(rows, load_policies_text(POLICY, source="t"), WordsEmbedder(), False))
    assert [o.status for o in outcomes] == ["miss", "miss"]


def test_sweep_best_f1_and_matched_baseline():
    mk = lambda lab, sim: pairs.PairOutcome("i", lab, "default", "miss", sim, "similarity", "")  # noqa: E731
    outcomes = [mk(1, 0.95), mk(1, 0.85), mk(0, 0.80), mk(0, 0.72)]
    s = pairs.sweep(outcomes)
    assert s["best_f1"]["threshold"] == pytest.approx(0.85)  # both positives, no negative
    assert s["at_precision_0.95"]["recall"] == 1.0
    assert pairs.matched_baseline(s["rows"], 0.0)["threshold"] == pytest.approx(0.85)


@pytest.mark.skipif(not (DATA / "qqp" / "qqp-dev.jsonl").exists(), reason="shared data not present")
def test_cli_json_on_a_qqp_slice(capsys):
    from evaluation.cli import main

    assert main(["eval", "pairs", "--data", str(DATA / "qqp" / "qqp-dev.jsonl"), "--limit", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("pairs", "hits", "precision", "recall", "false_hit_rate"):
        assert key in out
    assert out["pairs"] == 40
    assert out["hits"] == out["true_hits"] + out["false_hits"]
    assert len(out["global_sweep"]["rows"]) == 30
