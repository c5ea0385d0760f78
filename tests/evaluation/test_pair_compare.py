"""Before/after on labelled pairs: served by kind, opportunity captured, recall at precision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.replay.pair_compare import compare, format_compare, recall_at_precision

from .test_pairs import WordsEmbedder

LOOSE = "defaults: {threshold: 0.5, guards: {numbers: false, negation: false, diff: false}}\ncategories: {default: {}}\n"
STRICT = "defaults: {threshold: 0.5, guards: {numbers: true, negation: true}}\ncategories: {default: {}}\n"
PAIRS = [
    {"id": "1", "a": "how do I reset my password", "b": "how do I reset my password please", "label": 1,
     "kind": "paraphrase"},
    {"id": "2", "a": "reset password now", "b": "reset password now", "label": 1, "kind": "repeat"},
    {"id": "3", "a": "price of 5 apples", "b": "price of 6 apples", "label": 0, "kind": "numbers"},
    {"id": "4", "a": "how do I turn on wifi", "b": "how do I not turn on wifi", "label": 0, "kind": "negation"},
    {"id": "5", "a": "capital of france", "b": "weather in tokyo today", "label": 1, "kind": "paraphrase"},
]


def test_recall_at_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, -np.inf])
    labels = np.array([1, 1, 0, 1, 1])
    assert recall_at_precision(scores, labels, 0.95) == pytest.approx(2 / 4)  # top two, then a false one
    assert recall_at_precision(scores, labels, 0.75) == pytest.approx(3 / 4)  # 3 of 4 served at p=0.75
    assert recall_at_precision(np.array([0.5]), np.array([0]), 0.95) == 0.0


async def test_before_and_after_on_the_same_pairs(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (tmp_path / "loose.yaml").write_text(LOOSE)
    (tmp_path / "strict.yaml").write_text(STRICT)
    results = await compare(data, [tmp_path / "loose.yaml", tmp_path / "strict.yaml"], progress=False,
                            embedder=WordsEmbedder())
    (loose, lx), (strict, sx) = results
    # The bag-of-words embedder cannot tell 5 from 6 apples or see "not": only the guards can.
    assert lx["kinds"]["numbers"]["served_rate"] == 1.0 and lx["kinds"]["negation"]["served_rate"] == 1.0
    assert sx["kinds"]["numbers"]["served_rate"] == 0.0 and sx["kinds"]["negation"]["served_rate"] == 0.0
    # Pair 2 is an exact repeat, so no opportunity for meaning-matching; pairs 1 and 5 are,
    # and only pair 1 is close enough to be served.
    assert sx["kinds"]["repeat"] == {"pairs": 1, "served": 1, "label": 1, "served_rate": 1.0}
    assert sx["opportunity"] == {"positives_not_exact": 2, "captured": 1, "rate": 0.5}
    assert strict.policy_result["false_hits"] == 0 and loose.policy_result["false_hits"] == 2
    table = format_compare(results)
    assert "loose.yaml" in table and "negation (label 0, n=1)" in table
