"""``semcache calibrate`` for a category decided by the cross-encoder: the pre-filter stays, the cut-off moves."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semcache.config.calibrate_cli import calibrate_text
from semcache.config.policy import load_policies_text

POLICY = """\
defaults: {guards: {numbers: true, negation: true}}
categories:
  default:
    threshold: 0.7
    max_false_hit_rate: 0.05
    verifier: {enabled: true, model: cross-encoder, min_probability: 0.5}
"""


class OverlapModel:
    """Stands in for the cross-encoder (same method): P(right) = word Jaccard of the two queries."""

    def __init__(self):
        self.seen = 0

    def probabilities_of(self, triples, *, both_orders=False):  # symmetric: either order is the same
        self.seen += len(triples)
        out = []
        for q, c, _ in triples:
            a, b = set(re.findall(r"\w+", q.lower())), set(re.findall(r"\w+", c.lower()))
            out.append(len(a & b) / len(a | b))
        return np.array(out)


def _word(i: int, j: int, tag: str) -> str:
    return tag + "".join(chr(97 + int(d)) for d in f"{i:04d}{j}")


def test_cut_off_is_calibrated_on_what_passes_the_pre_filter_and_guards():
    rng = np.random.default_rng(0)
    pairs, cos = [], []
    for i in range(600):
        shared = int(rng.integers(1, 9))  # of 8 words; 6 or more: the same question
        words = [_word(i, j, "x") for j in range(8)]  # letters only: the numbers guard stays out of it
        other = words[:shared] + [_word(i, j, "y") for j in range(8 - shared)]
        label = int(shared >= 6 or (shared == 5 and rng.random() < 0.7))  # 5 shared: 30% wrong
        pairs.append({"a": " ".join(words), "b": " ".join(other), "label": label})
        cos.append(0.95 if i % 3 else 0.6)  # a third is under the 0.7 pre-filter: never served
    pairs.append({"a": "turn on the light w", "b": "do not turn on the light w", "label": 0})  # a guard stops it
    cos.append(0.99)
    model = OverlapModel()
    text, summary = calibrate_text(POLICY, pairs, np.array(cos), cross_encoder=model, data="synthetic")
    policy = load_policies_text(text).default
    ev = summary["default"]
    assert model.seen == 400  # only pre-filtered, guard-passing candidates are scored
    assert policy.verifier.model == "cross-encoder" and policy.threshold == 0.7
    assert policy.verifier.min_probability == pytest.approx(ev["value"], abs=1e-6) and ev["score"] == "verifier"
    # 6 of 8 words shared (Jaccard 0.6) is the loosest cut-off before the 30%-wrong group.
    assert ev["value"] == pytest.approx(0.6) and ev["upper_bound"] <= 0.05 and ev["false_hits"] == 0
    # What the cut-off serves, counted by hand among the 400 candidates, matches the evidence.
    served = [p for p, c in zip(pairs, cos) if c >= 0.7 and "not" not in p["b"]
              and model.probabilities_of([(p["b"], p["a"], c)])[0] >= ev["value"]]
    assert len(served) == ev["served"] and sum(1 - p["label"] for p in served) == ev["false_hits"]


def test_the_under_load_floor_of_a_verifier_category_is_a_verifier_cut_off():
    rng = np.random.default_rng(1)
    pairs, cos = [], []
    for i in range(900):
        shared = int(rng.integers(3, 9))
        words = [_word(i, j, "x") for j in range(8)]
        other = words[:shared] + [_word(i, j, "y") for j in range(8 - shared)]
        label = int(shared >= 6 or (shared == 5 and rng.random() < 0.6))  # 5 shared: 40% wrong
        pairs.append({"a": " ".join(words), "b": " ".join(other), "label": label})
        cos.append(0.95)
    policy_text = POLICY + "    under_load: {enabled: true, max_false_hit_rate: 0.20}\n"
    text, summary = calibrate_text(policy_text, pairs, np.array(cos), cross_encoder=OverlapModel(), data="synthetic")
    policy = load_policies_text(text).default
    normal, loaded = summary["default"], summary["default under_load"]
    assert loaded["score"] == "verifier" and policy.under_load.relaxes == "verifier"
    # The looser budget admits the 5-shared group (Jaccard 0.4545) that the 5% target keeps out.
    assert normal["value"] == pytest.approx(0.6) and loaded["value"] == pytest.approx(5 / 11, abs=1e-4)
    assert policy.under_load.probability_floor(policy.verifier.min_probability) == pytest.approx(loaded["value"])
    assert policy.under_load.floor(policy.threshold) == policy.threshold == 0.7  # the pre-filter never moves


def test_a_verifier_category_without_its_model_is_an_error():
    from semcache.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the model"):
        calibrate_text(POLICY, [{"a": "x", "b": "y", "label": 1}], np.array([0.9]))


def test_the_policys_opening_comments_survive_recalibration():
    text = "# What this policy is for.\n# Rebuild: semcache calibrate ...\n\n" + POLICY
    pairs = [{"a": f"x{i} same words here", "b": f"x{i} same words here ok", "label": 1} for i in range(50)]
    once, _ = calibrate_text(text, pairs, np.full(50, 0.95), cross_encoder=OverlapModel(), data="d1")
    twice, _ = calibrate_text(once, pairs, np.full(50, 0.95), cross_encoder=OverlapModel(), data="d2")
    for out, data in ((once, "d1"), (twice, "d2")):
        assert out.startswith("# What this policy is for.\n# Rebuild: semcache calibrate ...\n#\n")
        assert out.count("# calibrated by") == 1 and f"from {data}:" in out
    assert load_policies_text(twice).default.verifier.model == "cross-encoder"
