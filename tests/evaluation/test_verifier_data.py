"""The cross-encoder's training data: rules that change or keep meaning, and group-level splits."""

from __future__ import annotations

import os
import random
import re
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


def test_a_word_swap_replaces_one_content_word_with_one_the_own_group_never_uses():
    rng = random.Random(0)
    own = frozenset({"how", "do", "i", "cancel", "my", "purchase", "order", "void"})
    for _ in range(50):
        out = verifier_rules.swap_word("How do I cancel my purchase?", "How can I track my parcel?", rng, own)
        assert out in ("How do I track my purchase?", "How do I parcel my purchase?",
                       "How do I cancel my track?", "How do I cancel my parcel?")
    # Function words and request filler are never swapped, nor a word for its own misspelling.
    assert verifier_rules.swap_word("I need help with my order", "I want assistance with my orders", rng) is None
    # Where intents are known, only the words that mark them are exchanged.
    out = verifier_rules.swap_word("How do I cancel my purchase?", "How can I track my parcel?", rng, own,
                                   removable=frozenset({"cancel"}), insertable=frozenset({"track"}))
    assert out == "How do I track my purchase?"
    assert verifier_rules.swap_word("Cancel my purchase", "track it", rng, removable=frozenset({"cancel"})) == "Track my purchase"


def test_a_held_out_look_alike_swap_puts_the_new_word_where_the_donor_has_it():
    """In context, the new word must share a neighbour with the old one: a question someone could
    ask ("the colorado river"), not "what was kanye wests first amitabh?"."""
    rng = random.Random(0)
    outs = {verifier_rules.swap_word("what sea does the nile river flow to?", "where does the colorado river start?",
                                     rng, in_context=True) for _ in range(30)}
    assert outs == {"what sea does the colorado river flow to?", "what sea does the nile river start to?"}
    assert verifier_rules.swap_word("what was kanye wests first song?", "what is the real name of amitabh?", rng,
                                    in_context=True) is None
    assert verifier_rules.swap_word("what was kanye wests first song?", "what is the real name of amitabh?",
                                    random.Random(1)) is not None  # the train split's swaps, as the model saw them
    # Where intents are known (Bitext), the marks decide and no neighbour is needed.
    assert verifier_rules.swap_word("Cancel my purchase", "I want to track it", rng, removable=frozenset({"cancel"}),
                                    insertable=frozenset({"track"}), in_context=True) == "Track my purchase"


def test_dressing_changes_only_the_form():
    rng = random.Random(3)
    for _ in range(40):
        out = verifier_rules.dress("How do I cancel my subscription?", rng)
        words = set(re.findall(r"[a-z]+", out.lower()))
        assert {"cancel", "subscription"} <= words and "renew" not in words


@pytest.mark.skipif(not (DATA / "qa" / "bitext_cs_4k5" / "qa.jsonl").exists(), reason="shared data absent")
def test_word_swaps_stay_inside_their_split_and_mark_intents(monkeypatch):
    monkeypatch.setattr(verifier_data, "DATA", DATA)
    groups = verifier_data.load_groups("bitext_cs_4k5")
    by_category: dict[str, list[str]] = {}
    for name, g in groups.items():
        by_category.setdefault(g["category"], []).append(name)
    # "cancel" tells cancel_order from its ORDER siblings; a word every ORDER intent uses does not.
    marks = verifier_data._marks("bitext_cs_4k5:cancel_order", groups, by_category)
    assert "cancel" in marks and "order" not in marks and "purchase" not in marks
    test_groups = {k: v for k, v in groups.items() if split_of(k, 0) == "test"}
    elsewhere = {q for k, g in groups.items() if k not in test_groups for q in g["questions"]} - {
        q for g in test_groups.values() for q in g["questions"]}
    pairs = verifier_data.swap_pairs(test_groups, 60, random.Random(0), "bitext_cs_4k5")
    assert pairs == verifier_data.swap_pairs(test_groups, 60, random.Random(0), "bitext_cs_4k5")  # seeded
    assert len(pairs) == 60 and all(p["label"] == 0 and p["kind"] == "word_swap" for p in pairs)
    for p in pairs:
        # A held-out question against itself with one word changed: no other split's question.
        assert p["a"] != p["b"] and p["a"] not in elsewhere and p["b"] not in elsewhere
        words_a, words_b = (set(re.findall(r"[a-z]+", p[s].lower())) for s in "ab")
        assert words_a ^ words_b


def test_swaps_and_dressing_leave_the_other_held_out_pairs_as_they_were(monkeypatch):
    if not (DATA / "qa" / "comqa" / "qa.jsonl").exists():
        pytest.skip("shared data absent")
    monkeypatch.setattr(verifier_data, "DATA", DATA)
    monkeypatch.setitem(verifier_data._SIZES, "test", {**verifier_data._SIZES["test"], "swap": 0})
    without = verifier_data.build("test", 0)
    monkeypatch.setitem(verifier_data._SIZES, "test", {**verifier_data._SIZES["test"], "swap": 600})
    with_swaps = verifier_data.build("test", 0)
    key = lambda p: (p["a"], p["b"], p["label"], p["kind"])  # noqa: E731
    assert sorted(map(key, without)) == sorted(key(p) for p in with_swaps if p["kind"] != "word_swap")
    assert sum(p["kind"] == "word_swap" for p in with_swaps) == 600
