"""The long-prompt and long-word pair generators (evaluation/workloads/longpairs.py) build what they claim."""

from __future__ import annotations

from evaluation.workloads.longpairs import long_prompt_pairs, long_word_pairs
from semcache.decide.diffrule import text_diff


def test_long_prompt_pairs_share_a_1k_to_8k_token_body_and_differ_only_in_the_question_or_one_sentence():
    pairs = long_prompt_pairs(2, seed=3)
    assert {p["kind"].split("/")[0] for p in pairs} == {"document", "code", "rag"}
    for p in pairs:
        diff = text_diff(p["b"], p["a"])
        assert 1000 <= diff.cached_tokens <= 9000, (p["id"], diff.cached_tokens)
        assert diff.bounded and 0 < diff.changed <= 40 and len(diff.spans) == 1, p["id"]
        assert p["label"] == (1 if p["kind"].endswith("reworded") else 0)


def test_long_word_pairs_carry_a_word_the_embedder_cannot_read():
    pairs = long_word_pairs(3, seed=4)
    others = [p for p in pairs if p["label"] == 0]
    assert len(others) == 15 and all(p["a"] != p["b"] for p in others)
    for p in pairs:
        if p["kind"].startswith(("dna", "identifier")):
            assert max(len(w) for w in p["a"].split()) > 100
