"""Verifier training and evaluation helpers: context features, the validation split, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.bench.bench_verifier import recall_at, recall_interval
from evaluation.training.train_verifier import VALIDATION, is_held_out, is_validation
from semcache.verifier.features import FEATURES, pair_features


def row(a: str, b: str) -> dict[str, float]:
    return dict(zip(FEATURES, pair_features(a, b, 0.95, None)))


def test_context_features_count_the_words_that_need_unseen_context():
    shown = row("What is the output of the following program?", "What does this program print?")
    assert shown["context_refs"] == 1.0 and shown["self_refs"] == 0.0
    mine = row("Why does my code crash when I run it?", "Why does the code crash?")
    assert mine["self_refs"] == 2.0 and mine["context_refs"] == 0.0
    general = row("What is the capital of France?", "Which city is the capital of France?")
    assert general["self_refs"] == 0.0 and general["context_refs"] == 0.0
    # Apostrophes are dropped before matching, so "I'm" counts as a self reference.
    assert row("I'm tired, why?", "why tired")["self_refs"] == 1.0


def test_validation_part_is_deterministic_seeded_and_about_the_right_size():
    keys = [f"qqp:{i}" for i in range(20000)]
    val = np.array([is_validation(k, 0) for k in keys])
    assert abs(val.mean() - VALIDATION) < 0.01
    assert [is_validation(k, 0) for k in keys[:500]] == list(val[:500])
    assert [is_validation(k, 1) for k in keys[:500]] != list(val[:500])
    # Independent of the held-out hash: validation pairs are not just the held-out ones relabelled.
    held = np.array([is_held_out(i, 0) for i in range(20000)])
    assert 0.05 < val[~held].mean() < 0.25


def test_recall_interval_brackets_the_point_estimate_and_pairs_the_scorers():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 4000)
    good = labels + rng.normal(0, 0.6, len(labels))
    perfect = labels.astype(float)
    point, _ = recall_at(good, labels, 0.9)
    iv = recall_interval({"good": good, "same": good.copy(), "perfect": perfect}, labels, 0.9, rounds=60)
    assert iv["good"][0] <= point <= iv["good"][1] and iv["good"][0] < iv["good"][1]
    assert iv["same"] == iv["good"]  # same resamples for every scorer
    assert iv["perfect"] == [1.0, 1.0]


def test_recall_at_is_zero_when_the_precision_is_never_reached():
    labels = np.array([0, 1, 0, 1])
    assert recall_at(np.array([0.9, 0.8, 0.7, 0.6]), labels, 0.95) == (0.0, None)
    assert recall_at(np.array([0.9, 0.8, 0.7, 0.6]), labels, 0.5)[0] == pytest.approx(1.0)


def test_the_training_command_the_issue_names_still_runs():
    import subprocess
    import sys

    for module in ("evaluation.train_verifier", "evaluation.training.train_verifier"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "--cross-encoder" in out.stdout, out.stderr
