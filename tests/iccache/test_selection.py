"""Selection: tenant scopes, token budget, determinism, diversity, utility; prompt order."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from semcache.entries.entry import CacheEntry
from semcache.iccache import ExampleBank, SelectionConfig, scope_of, select_examples, token_budget, with_examples
from tests.iccache.helpers import DIM, example, unit

CFG = SelectionConfig(candidates=8, max_examples=3, token_budget=1000, diversity=0.0, duplicate_similarity=0.999)


def _select(bank, vector, scope="tenant:a/", config=CFG, budget=1000):
    return select_examples(bank, scope=scope, category="support", vector=vector, config=config, budget=budget)


def test_examples_never_cross_tenants_but_shared_namespaces_are_shared():
    bank = ExampleBank(DIM)
    bank.add(example("a1", unit(1, 0.1), scope=scope_of("a")))
    bank.add(example("b1", unit(1, 0.0), scope=scope_of("b")))  # closer, but tenant b's
    bank.add(example("faq", unit(1, 0.2), scope=scope_of("a", shared_namespace="faq")))
    assert _select(bank, unit(1, 0), scope=scope_of("a")).ids == ["a1"]
    assert _select(bank, unit(1, 0), scope=scope_of("b")).ids == ["b1"]
    assert _select(bank, unit(1, 0), scope=scope_of("b", shared_namespace="faq")).ids == ["faq"]
    # Another category of the same tenant is another partition too.
    assert select_examples(bank, scope=scope_of("a"), category="code", vector=unit(1, 0),
                           config=CFG, budget=1000).ids == []


def test_selection_stays_within_the_token_budget():
    bank = ExampleBank(DIM)
    for i, tokens in enumerate([300, 250, 200, 120]):
        bank.add(example(f"e{i}", unit(1, 0.1 * i), tokens=tokens))
    for budget in (0, 100, 130, 330, 450, 600, 2000):
        sel = _select(bank, unit(1, 0), budget=budget)
        assert sel.tokens == sum(e.tokens for e in sel.examples) <= budget
    assert _select(bank, unit(1, 0), budget=330).ids  # something fits, so something is chosen


def test_budget_leaves_room_for_the_request_and_the_answer():
    cfg = SelectionConfig(token_budget=1500, answer_reserve=200)
    assert token_budget(cfg, context_tokens=2048, request_tokens=100) == 1500
    assert token_budget(cfg, context_tokens=2048, request_tokens=600) == 2048 - 600 - 200
    assert token_budget(cfg, context_tokens=2048, request_tokens=3000) == 0


def test_selection_is_deterministic_whatever_the_insertion_order():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exs = [example(f"e{i:02d}", vectors[i], tokens=int(rng.integers(20, 200))) for i in range(40)]
    query = vectors[0] + 0.3 * vectors[1]
    query /= np.linalg.norm(query)
    results = set()
    for seed in range(5):
        random.Random(seed).shuffle(exs)
        bank = ExampleBank(DIM)
        for ex in exs:
            bank.add(ex)
        cfg = SelectionConfig(candidates=16, max_examples=3, diversity=0.3)
        results.add(tuple(_select(bank, query, config=cfg, budget=400).ids))
    assert len(results) == 1 and len(next(iter(results))) >= 2
    # Exact ties (same vector, same stats) break on the id.
    bank = ExampleBank(DIM)
    for id in ("z", "m", "a"):
        bank.add(example(id, unit(1, 0)))
    one = SelectionConfig(candidates=8, max_examples=1, diversity=0.0)
    assert _select(bank, unit(1, 0), config=one).ids == ["a"]


def test_near_duplicates_are_not_both_spent():
    bank = ExampleBank(DIM)
    bank.add(example("dup1", unit(1, 0.01)))
    bank.add(example("dup2", unit(1, 0.011)))
    bank.add(example("other", unit(1, 0.6)))
    cfg = SelectionConfig(candidates=8, max_examples=2, diversity=0.3, duplicate_similarity=0.97)
    assert sorted(_select(bank, unit(1, 0), config=cfg).ids) == ["dup1", "other"]


def test_outcomes_move_utility_and_ranking():
    bank = ExampleBank(DIM)
    bank.add(example("near", unit(1, 0.05)))
    bank.add(example("next", unit(1, 0.15)))
    cfg = SelectionConfig(candidates=8, max_examples=1, utility_weight=0.5, diversity=0.0)
    assert _select(bank, unit(1, 0), config=cfg).ids == ["near"]
    before = bank.get("near").utility()
    for _ in range(6):
        bank.record_outcome(["near"], 0.0)
        bank.record_outcome(["next"], 1.0)
    assert bank.get("near").utility() < before < bank.get("next").utility()
    assert bank.get("next").accepted == 6 and bank.get("near").accepted == 0
    assert _select(bank, unit(1, 0), config=cfg).ids == ["next"]
    bank.record_feedback(["near"], positive=True)
    assert bank.get("near").feedback_positive == 1 and bank.get("near").scored == 7


def test_disabled_category_selects_nothing():
    bank = ExampleBank(DIM)
    bank.add(example("e", unit(1)))
    assert _select(bank, unit(1), config=SelectionConfig(enabled=False)).ids == []


def _entry(id: str, model: str, **extra) -> CacheEntry:
    return CacheEntry(
        id=id, tenant="a", partition="p", category="support", policy_version="1", model=model,
        endpoint="chat", query="where is my order", vector=unit(1), embedder="test",
        response={"choices": [{"message": {"role": "assistant", "content": "It ships today."}}]},
        created_at=time.time(), completion_tokens=5, **extra,
    )


def test_bank_admits_only_large_model_answers():
    bank = ExampleBank(DIM)
    assert bank.add_entry(_entry("s", "tiny"), large_models={"big"}) is None
    ex = bank.add_entry(_entry("l", "big"), large_models={"big"})
    assert ex is not None and ex.answer == "It ships today." and ex.scope == scope_of("a")
    assert ex.tokens == 5 + bank.count_tokens("where is my order")
    from semcache.entries.entry import Feedback
    assert bank.add_entry(_entry("bad", "big", feedback=Feedback(negative=2)), large_models={"big"}) is None
    assert list(bank) == [ex]


def test_examples_go_after_the_system_prompt_without_touching_the_callers_turns():
    bank = ExampleBank(DIM)
    exs = [example("e1", unit(1)), example("e2", unit(0, 1))]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "where is my order?"}]
    out = with_examples(messages, exs)
    assert out[0] == messages[0]
    assert [m["content"] for m in out[1:5]] == ["question e1", "answer e1", "question e2", "answer e2"]
    assert [m["role"] for m in out[1:5]] == ["user", "assistant", "user", "assistant"]
    assert out[5:] == messages[1:]
    assert len(messages) == 4  # the caller's list is not modified
    assert with_examples(messages, exs) == out


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_prompt_order_puts_the_best_example_last_or_first(order):
    bank = ExampleBank(DIM)
    bank.add(example("best", unit(1, 0.05)))
    bank.add(example("second", unit(1, 0.4)))
    cfg = SelectionConfig(candidates=8, max_examples=2, diversity=0.0, order=order)
    ids = _select(bank, unit(1, 0), config=cfg).ids
    assert ids == (["second", "best"] if order == "ascending" else ["best", "second"])
