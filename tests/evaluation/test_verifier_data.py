"""The cross-encoder's training data: rules that change or keep meaning, and group-level splits."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.training import verifier_data, verifier_rules
from evaluation.training.verifier_data import SPLITS, split_of

DATA = Path(os.environ.get("SEMCACHE_DATA") or verifier_data.DATA)


def test_negative_rules_change_what_is_asked():
    rng = random.Random(0)
    assert verifier_rules.negate("Can I delete my account?", rng) in ("Can not I delete my account?",
                                                                      "Can I not delete my account?",
                                                                      "Can't I delete my account?",
                                                                      "Can not delete my account?")
    assert verifier_rules.negate("Why isn't my order here?", rng) == "Why is my order here?"
    assert verifier_rules.antonym("How do I enable dark mode?", rng) == "How do I disable dark mode?"
    assert verifier_rules.antonym("Turn on 2FA", rng) == "Turn off 2FA"
    changed = verifier_rules.change_number("I paid 12 dollars for 3 items", rng)
    assert changed != "I paid 12 dollars for 3 items" and changed.startswith("I paid ")
    assert verifier_rules.change_date("What happened in 1999?", rng) != "What happened in 1999?"
    assert verifier_rules.change_entity("What is the capital of France?", rng) != "What is the capital of France?"
    assert verifier_rules.scope("Who was the first president?", rng) == "Who was the last president?"
    assert verifier_rules.change_unit("How many km is a marathon?", rng) == "How many miles is a marathon?"
    # A rule that does not apply says so instead of returning the text unchanged.
    assert verifier_rules.change_number("no digits here", rng) is None
    assert verifier_rules.negate("tell me a joke", rng) is None


def test_positive_rules_keep_the_words():
    rng = random.Random(1)
    text = "What is the capital of Italy?"
    for rule in (verifier_rules.recase, verifier_rules.repunctuate, verifier_rules.filler):
        out = rule(text, rng)
        assert "capital" in out.lower() and "italy" in out.lower()
    assert verifier_rules.contract(text, rng) == "What's the capital of Italy?"


@given(st.text(min_size=1, max_size=30), st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_split_is_a_function_of_group_and_seed(name, seed):
    s = split_of(name, seed)
    assert s in SPLITS and split_of(name, seed) == s


def test_split_sizes_are_about_70_15_15():
    counts = {s: 0 for s in SPLITS}
    for i in range(20000):
        counts[split_of(f"g{i}", 0)] += 1
    assert 0.68 < counts["train"] / 20000 < 0.72
    assert 0.13 < counts["calib"] / 20000 < 0.17 and 0.13 < counts["test"] / 20000 < 0.17


@pytest.mark.skipif(not (DATA / "qa" / "stackfaq" / "qa.jsonl").exists(), reason="shared data absent")
def test_no_rewording_group_is_in_two_splits(monkeypatch):
    monkeypatch.setattr(verifier_data, "DATA", DATA)
    groups = verifier_data.load_groups("stackfaq")
    question_split: dict[str, set[str]] = {}
    for name, g in groups.items():
        for q in g["questions"]:
            question_split.setdefault(q, set()).add(split_of(name, 0))
    rng = random.Random(0)
    by_split = {s: verifier_data.group_pairs({k: v for k, v in groups.items() if split_of(k, 0) == s}, 4, rng, "x")
                for s in SPLITS}
    for s, pairs in by_split.items():
        assert pairs and {p["label"] for p in pairs} == {0, 1}
        for p in pairs:
            # Every text of a split's pairs comes from that split's groups only.
            assert s in question_split[p["a"]] and s in question_split[p["b"]]
