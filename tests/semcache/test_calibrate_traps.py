"""``max_trap_rate``: trap pairs bound the share of traps served, the other pairs the false-hit rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcache.config.calibrate_cli import calibrate_text, read_pairs
from semcache.config.calibration import clopper_pearson_upper, trap_cut
from semcache.config.policy import load_policies_text
from semcache.errors import ConfigError, PolicyError

POLICY = "categories:\n  default:\n    threshold: 0.5\n    max_false_hit_rate: 0.02\n{extra}"


def _data(seed: int, traps: int = 1500):
    """Workload pairs (right ones score high, wrong ones low) and traps spread over the upper scores."""
    rng = np.random.default_rng(seed)
    right = rng.uniform(0.55, 1.0, 1500)
    wrong = rng.uniform(0.5, 0.6, 500)
    trap_scores = rng.uniform(0.5, 0.9, traps)  # made to look right: most above the wrong workload pairs
    pairs = ([{"a": "q", "b": "q", "label": 1}] * len(right) + [{"a": "q", "b": "q", "label": 0}] * len(wrong)
             + [{"a": "q", "b": "q", "label": 0, "trap": True}] * traps)
    return pairs, np.r_[right, wrong, trap_scores]


def test_trap_pairs_bound_the_cut_off_and_the_rest_give_the_false_hit_rate():
    pairs, scores = _data(0)
    text, summary = calibrate_text(POLICY.format(extra="    max_trap_rate: 0.02\n"), pairs, scores)
    ev = summary["default"]
    traps = scores[[bool(p.get("trap")) for p in pairs]]
    # At most the traps whose bound stays <= 2% are served: by hand, from the traps' own scores.
    assert ev["traps"]["n"] == 1500 and ev["traps"]["served"] == int((traps >= ev["value"]).sum())
    floor = trap_cut(traps, 0.02)
    assert 0 < ev["traps"]["served"] <= floor.served and ev["traps"]["upper_bound"] <= 0.02
    assert floor.value <= ev["value"] < floor.value + 0.02  # the traps bind, not the workload pairs
    # The false-hit evidence is the workload pairs' only (2,000 of them), above the trap floor.
    assert ev["n_labelled"] == 2000 and ev["false_hits"] == 0 and ev["served"] > 149
    policy = load_policies_text(text).default
    assert policy.threshold == pytest.approx(ev["value"], abs=1e-6) and policy.calibration.traps.served == ev["traps"]["served"]


def test_without_a_trap_budget_every_pair_counts_toward_the_false_hit_rate():
    pairs, scores = _data(1)
    _, summary = calibrate_text(POLICY.format(extra=""), pairs, scores)
    ev = summary["default"]
    assert "traps" not in ev and ev["n_labelled"] == len(pairs)


def test_a_looser_trap_budget_gives_a_looser_cut_off_until_the_false_hit_rate_binds():
    pairs, scores = _data(2)
    cuts = [calibrate_text(POLICY.format(extra=f"    max_trap_rate: {b}\n"), pairs, scores)[1]["default"]["value"]
            for b in (0.01, 0.05, 0.3, 0.9)]
    assert cuts[0] > cuts[1] > cuts[2] >= cuts[3] >= 0.55  # the wrong workload pairs (< 0.6) stop it


def test_too_few_traps_to_show_the_budget_serve_nothing():
    pairs, scores = _data(3, traps=20)  # 0 of 20 served has an upper bound of 14%
    text, summary = calibrate_text(POLICY.format(extra="    max_trap_rate: 0.02\n"), pairs, scores)
    assert summary["default"]["value"] == 1.0 and load_policies_text(text).default.threshold == 1.0


def test_the_under_load_floor_has_its_own_trap_budget():
    pairs, scores = _data(4)
    extra = ("    max_trap_rate: 0.02\n"
             "    under_load: {enabled: true, max_false_hit_rate: 0.05, max_trap_rate: 0.1}\n")
    text, summary = calibrate_text(POLICY.format(extra=extra), pairs, scores)
    policy = load_policies_text(text).default
    floor = policy.under_load.calibration
    assert floor.traps.upper_bound <= 0.1 and floor.value < policy.calibration.value
    assert floor.traps.served > policy.calibration.traps.served


def test_trap_evidence_must_meet_its_budget_and_name_it():
    base = ("categories:\n  default:\n    threshold: 0.8\n    max_false_hit_rate: 0.02\n{budget}"
            "    calibration: {{score: similarity, value: 0.8, n_labelled: 10, served: 5, false_hits: 0,\n"
            "                  estimated_rate: 0, upper_bound: 0.01, traps: {{n: 100, served: 1, estimated_rate: 0.01,"
            " upper_bound: 0.05}}}}\n")
    with pytest.raises(PolicyError, match="max_trap_rate"):
        load_policies_text(base.format(budget=""))
    with pytest.raises(PolicyError, match="exceeds"):
        load_policies_text(base.format(budget="    max_trap_rate: 0.02\n"))
    assert load_policies_text(base.format(budget="    max_trap_rate: 0.05\n")).default.max_trap_rate == 0.05


def test_a_trap_pair_must_be_a_negative(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"a": "x", "b": "y", "label": 1, "trap": true}\n')
    with pytest.raises(ConfigError, match="trap"):
        read_pairs(path)
    path.write_text('{"a": "x", "b": "y", "label": 0, "trap": true}\n{"a": "x", "b": "y", "label": 1}\n')
    assert [p.get("trap") for p in read_pairs(path)] == [True, None]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=0, max_size=400),
       st.sampled_from([0.01, 0.02, 0.05, 0.2]))
def test_trap_cut_is_the_loosest_cut_off_whose_bound_meets_the_budget(scores, target):
    bound = trap_cut(scores, target)
    s = np.array(scores)
    if bound.value is None:  # not even zero served can be shown within the budget
        assert clopper_pearson_upper(0, len(s)) > target
        return
    served = int((s >= bound.value).sum())
    assert served == bound.served and clopper_pearson_upper(served, len(s)) <= target
    if math.isfinite(bound.value):  # one step looser serves at least one more trap, past the budget
        assert clopper_pearson_upper(int((s >= np.nextafter(bound.value, -np.inf)).sum()), len(s)) > target \
            or int((s >= np.nextafter(bound.value, -np.inf)).sum()) == served
