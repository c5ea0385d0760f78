"""Clopper-Pearson bound and the max_false_hit_rate operating point."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcache.config.calibration import choose, clopper_pearson_upper


@pytest.mark.parametrize(("k", "n", "expected"), [
    (0, 10, 1 - 0.05 ** (1 / 10)),   # closed form when k = 0
    (0, 149, 1 - 0.05 ** (1 / 149)),
    (3, 100, 0.0757108),             # scipy.stats.beta.ppf(0.95, 4, 97)
    (20, 1000, 0.0289301),           # scipy.stats.beta.ppf(0.95, 21, 980)
])
def test_clopper_pearson_upper_matches_reference(k, n, expected):
    assert clopper_pearson_upper(k, n, 0.95) == pytest.approx(expected, abs=1e-6)


def test_bound_edges():
    assert clopper_pearson_upper(5, 5) == 1.0
    assert clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(1, 50, 0.99) > clopper_pearson_upper(1, 50, 0.9)


def _synthetic(seed: int, n: int):
    # Scores uniform on [0, 1]; P(wrong | s) = 0.3 (1 - s)^2, so serving s >= t has a
    # true false-hit rate of 0.1 (1 - t)^2 (the integral over [t, 1] / (1 - t)).
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=n)
    labels = (rng.uniform(size=n) >= 0.3 * (1 - scores) ** 2).astype(int)
    return scores, labels


def test_chosen_cutoff_meets_target_in_95_percent_of_seeds():
    target, seeds = 0.02, 200
    t_star = 1 - math.sqrt(target / 0.1)  # the loosest cut-off with true rate <= target
    met, values = 0, []
    for seed in range(seeds):
        scores, labels = _synthetic(seed, 2000)
        op = choose(scores, labels, target)
        if op.value is None:  # serving nothing: an early false hit stopped the sequence
            met += 1
            continue
        true_rate = 0.1 * (1 - op.value) ** 2
        met += true_rate <= target
        values.append(op.value)
        assert op.upper_bound <= target and op.estimated_rate <= op.upper_bound
    assert met / seeds >= 0.95
    assert len(values) >= 0.9 * seeds  # it does pick a cut-off almost always
    # ... and it is not trivially conservative: the median cut-off is near the ideal one.
    assert t_star <= float(np.median(values)) < t_star + 0.2


def test_too_little_evidence_serves_nothing():
    scores, labels = _synthetic(0, 100)  # fewer than ln(0.05)/ln(0.98) = 149 points
    op = choose(scores, labels, 0.02)
    assert op.value is None and op.served == 0


def test_unservable_pairs_are_not_counted():
    scores = np.linspace(1, 0, 1000)
    labels = np.ones(1000, int)
    labels[::10] = 0  # 10% wrong everywhere ...
    servable = labels == 1  # ... but a guard catches every wrong one
    assert choose(scores, labels, 0.02).value is None
    op = choose(scores, labels, 0.02, servable=servable)
    assert op.value == pytest.approx(0.0) and op.false_hits == 0 and op.served == 900


def test_calibrate_text_writes_threshold_and_evidence():
    import yaml

    from semcache.config.calibrate_cli import calibrate_text
    from semcache.config.policy import load_policies_text

    policy = "defaults: {threshold: 0.9}\ncategories:\n  faq: {max_false_hit_rate: 0.02, match: {keywords: [faq]}}\n  default: {}\n"
    scores, labels = _synthetic(1, 2000)
    pairs = [{"a": f"faq question {i}", "b": f"faq question {i}?", "label": int(y), "category": "faq"}
             for i, y in enumerate(labels)]
    text, summary = calibrate_text(policy, pairs, scores, data="synthetic.jsonl")
    chosen = load_policies_text(text)["faq"]
    ev = summary["faq"]
    assert chosen.threshold == pytest.approx(ev["value"], abs=1e-6) and 0.4 < chosen.threshold < 0.9
    assert chosen.calibration.upper_bound <= 0.02 and chosen.calibration.served == ev["served"] > 149
    assert load_policies_text(text)["default"].threshold == 0.9  # no target: untouched
    assert "clopper-pearson" in text.lower() and yaml.safe_load(text)["categories"]["faq"]["max_false_hit_rate"] == 0.02


def test_calibrate_command_registers_as_subcommand():
    import argparse

    from semcache.config.calibrate_cli import register, run

    parser = argparse.ArgumentParser(prog="semcache")
    register(parser.add_subparsers())
    args = parser.parse_args(["calibrate", "--data", "d.jsonl", "--policy", "in.yaml", "--out", "o.yaml"])
    assert args.handler is run and args.confidence == 0.95 and args.data == "d.jsonl"


def test_calibrate_text_writes_the_under_load_floor_from_its_own_budget():
    from semcache.config.calibrate_cli import calibrate_text
    from semcache.config.policy import load_policies_text

    policy = ("categories:\n  default:\n    threshold: 0.9\n    max_false_hit_rate: 0.02\n"
              "    under_load: {enabled: true, max_false_hit_rate: 0.08}\n")
    scores, labels = _synthetic(2, 3000)
    pairs = [{"a": f"q {i}", "b": f"q {i}?", "label": int(y)} for i, y in enumerate(labels)]
    text, summary = calibrate_text(policy, pairs, scores)
    chosen = load_policies_text(text)["default"]
    floor = chosen.under_load.calibration
    assert floor.upper_bound <= 0.08 and floor.value == summary["default under_load"]["value"]
    assert floor.value < chosen.threshold  # a looser budget gives a looser (lower) cut-off
    assert chosen.under_load.floor(chosen.threshold) == pytest.approx(floor.value)


def test_one_false_hit_at_the_very_top_does_not_end_the_sequence():
    # Regression: the start rounded "a quarter of the target" down to zero false hits, so with
    # target 0.25 the sequence started at 11 pairs and a single wrong pair among them ended it
    # (the QQP under-load calibration served nothing). 5% wrong everywhere, the top one wrong.
    scores = np.linspace(1, 0, 2000)
    labels = np.ones(2000, int)
    labels[::20] = 0
    op = choose(scores, labels, 0.25)
    assert op.value is not None and op.served > 1000 and op.upper_bound <= 0.25


def test_no_pairs_at_all_serves_nothing():
    """Regression (#13 item 9): an empty category raised IndexError in choose()."""
    op = choose([], [], 0.05)
    assert op.value is None and (op.n_labelled, op.served, op.false_hits) == (0, 0, 0)
    op = choose(np.array([0.9, 0.8]), np.array([1, 1]), 0.05, servable=np.array([False, False]))
    assert op.value is None and op.served == 0


def test_target_in_defaults_gives_categories_without_pairs_the_safe_threshold():
    """Regression (#13 item 9): ``max_false_hit_rate`` in ``defaults`` reaches categories no pair
    belongs to; they get threshold 1.0 (serve nothing semantically), never a traceback."""
    from semcache.config.calibrate_cli import calibrate_text
    from semcache.config.policy import load_policies_text

    policy = ("defaults: {threshold: 0.9, max_false_hit_rate: 0.02}\ncategories:\n"
              "  code: {match: {keywords: [python]}}\n"
              "  private: {cacheable: false, match: {keywords: [password]}}\n  default: {}\n")
    scores, labels = _synthetic(2, 2000)
    pairs = [{"a": f"question {i}", "b": f"question {i}?", "label": int(y)} for i, y in enumerate(labels)]
    text, summary = calibrate_text(policy, pairs, scores)
    calibrated = load_policies_text(text)
    assert calibrated["code"].threshold == 1.0 and summary["code"]["n_labelled"] == 0
    assert summary["code"]["served"] == 0 and calibrated["code"].calibration.served == 0
    assert "private" not in summary and calibrated["private"].calibration is None  # never serves anyway
    assert 0.4 < calibrated["default"].threshold < 0.9 and summary["default"]["served"] > 149


def test_calibrate_command_reports_bad_data_without_a_traceback(tmp_path, capsys):
    from semcache.config.calibrate_cli import main

    policy = tmp_path / "p.yaml"
    policy.write_text("defaults: {max_false_hit_rate: 0.05}\ncategories:\n  default: {}\n")
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"a": "x", "b": "y", "label": 1}\n{"a": "x", "label": 1}\n')
    out = tmp_path / "out.yaml"
    assert main(["--data", str(bad), "--policy", str(policy), "--out", str(out)]) == 2
    assert "pairs.jsonl:2: expected a JSON object" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing.jsonl"), "--policy", str(policy), "--out", str(out)]) == 2
    assert "missing.jsonl: cannot read" in capsys.readouterr().err
    assert not out.exists()


def test_calibrate_command_rejects_a_confidence_outside_0_1(capsys):
    from semcache.config.calibrate_cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--data", "d.jsonl", "--policy", "p.yaml", "--out", "o.yaml", "--confidence", "1.5"])
    assert exit_.value.code == 2 and "expected a number between 0 and 1" in capsys.readouterr().err
