"""``semcache eval groups``: oracle, exact and hit counting on a stream we can reason about."""

from __future__ import annotations

from evaluation.replay.group_replay import StreamResult, group_stream, replay
from evaluation.training.verifier_data import split_of
from tests.semcache.fakes import HashEmbedder

POLICY = """
defaults: {threshold: 0.8}
categories:
  default: {}
"""


async def test_hits_are_right_only_for_the_same_group_and_the_opportunity_is_what_exact_match_leaves(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    stream = [
        ("reset", "how do I reset my password"),
        ("reset", "how do I reset my password"),          # exact repeat: a right hit, no opportunity
        ("reset", "how do I reset my password please"),   # reworded: opportunity, a right hit here
        ("delete", "how do I delete my password please"), # another group, close words: a false hit here
        ("delete", "remove the account entirely"),         # group seen, far words: a missed opportunity
    ]
    r = await replay(stream, path, HashEmbedder())
    assert (r.requests, r.oracle, r.exact) == (5, 3, 1)
    summary = r.summary()
    assert r.hits >= 2 and summary["hit_rate"] == r.hits / 5
    assert summary["false_hit_rate"] == r.false_hits / r.hits
    assert summary["opportunity_captured"] == round((r.hits - 1) / 2, 4)
    assert summary["right_opportunity_captured"] == round((r.hits - r.false_hits - 1) / 2, 4)


def test_an_empty_stream_has_no_opportunity():
    assert StreamResult().summary()["opportunity_captured"] is None


def test_the_stream_holds_only_test_split_groups_in_a_seeded_order():
    a, b = group_stream("stackfaq", 0), group_stream("stackfaq", 0)
    assert a == b and a
    assert all(split_of(group, 0) == "test" for group, _ in a)
    assert group_stream("stackfaq", 1) != a
    calib = group_stream("stackfaq", 0, "calib")  # what a cut-off may be chosen on: never the test groups
    assert calib and all(split_of(group, 0) == "calib" for group, _ in calib)
    assert not {g for g, _ in calib} & {g for g, _ in a}


def test_the_command_is_registered_with_its_handler():
    import argparse

    from evaluation.cli import register_eval
    from evaluation.replay.group_replay import run_cli

    parser = argparse.ArgumentParser()
    register_eval(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "groups", "--policy", "p.yaml", "--compare", "q.yaml"])
    assert args.handler is run_cli and [str(p) for p in args.compare] == ["q.yaml"] and args.split == "test"
    assert parser.parse_args(["eval", "groups", "--policy", "p.yaml", "--split", "calib"]).split == "calib"


async def test_a_hit_on_another_group_with_the_same_gold_answer_is_not_false_by_answer(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    stream = [("a", "who wrote the song respect"), ("b", "who wrote the song respect please")]
    same = await replay(stream, path, HashEmbedder(), {"a": frozenset({"otis redding"}), "b": frozenset({"otis redding"})})
    other = await replay(stream, path, HashEmbedder(), {"a": frozenset({"otis redding"}), "b": frozenset({"aretha"})})
    unknown = await replay(stream, path, HashEmbedder(), {})
    assert same.false_hits == other.false_hits == unknown.false_hits == 1  # by the group label: false
    assert (same.false_by_answer, other.false_by_answer, unknown.false_by_answer) == (0, 1, 1)
