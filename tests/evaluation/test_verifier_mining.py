"""Mined hard negatives: each question's nearest question of another group, never a group's twin."""

from __future__ import annotations

import random

from evaluation.training.verifier_mining import mined_negatives

GROUPS = {
    "s:join-un": {"questions": ["what year did canada join the united nations?"]},
    "s:join-nato": {"questions": ["what year did canadians join nato?"]},
    "s:everest": {"questions": ["how tall is mount everest?"]},
    "s:pasta": {"questions": ["how long do i boil spaghetti?"]},
}


def test_each_question_is_paired_with_its_nearest_other_group_if_close_enough():
    pairs = mined_negatives("s", GROUPS, random.Random(0), answers={})
    by_a = {p["a"]: p["b"] for p in pairs}
    assert by_a["what year did canada join the united nations?"] == "what year did canadians join nato?"
    assert by_a["what year did canadians join nato?"] == "what year did canada join the united nations?"
    assert "how long do i boil spaghetti?" not in by_a  # nothing of another group is close: no pair
    assert all(p["label"] == 0 and p["kind"] == "mined" for p in pairs)


def test_groups_that_share_a_gold_answer_are_not_negatives():
    answers = {"s:join-un": frozenset({"1945"}), "s:join-nato": frozenset({"1949", "1945"})}
    pairs = mined_negatives("s", GROUPS, random.Random(0), answers=answers)
    assert not any({p["a"], p["b"]} == {"what year did canada join the united nations?",
                                         "what year did canadians join nato?"} for p in pairs)
