"""The replay job re-asks only what is due, within budget, and evicts only the judged useless."""

from __future__ import annotations

from semcache.iccache import ExampleBank, ReplayConfig, replay_examples
from tests.iccache.helpers import DIM, example, unit


def _bank() -> ExampleBank:
    bank = ExampleBank(DIM)
    bank.add(example("good", unit(1), tokens=100, validated=True, scored=10, score_sum=9.0))
    bank.add(example("fresh", unit(0, 1), tokens=100))  # unvalidated, never scored
    bank.add(example("weak", unit(0, 0, 1), tokens=100, validated=True, scored=4, score_sum=0.0))
    useless = example("useless", unit(0, 0, 0, 1), tokens=100, validated=True, scored=20, score_sum=1.0)
    useless.answer = "long and unhelpful " * 200  # ~4 KB: utility ~0.09 per 4 KB
    bank.add(useless)
    return bank


async def test_replay_revalidates_regenerates_and_evicts_only_what_it_should():
    bank = _bank()
    asked = []

    async def ask_large(ex):
        asked.append(ex.id)
        return "the stored answer" if ex.id == "fresh" else "a better answer for " + ex.id

    async def compare(old, new):
        return 1.0 if new == "the stored answer" else 0.0

    cfg = ReplayConfig(token_budget=1000, low_utility=0.5, keep_agreement=0.8,
                       evict_min_scored=10, evict_utility_per_kb=0.5)
    good_before = (bank.get("good").answer, bank.get("good").scored)
    report = await replay_examples(bank, ask_large, compare, cfg)

    assert asked[0] == "fresh"  # unvalidated first, then weakest
    assert "good" not in asked  # validated and useful: never re-asked
    assert report.validated == ["fresh"] and bank.get("fresh").validated
    assert bank.get("fresh").answer == "answer fresh"  # validated, answer kept
    assert set(report.regenerated) == {"weak", "useless"}
    weak = bank.get("weak")
    assert weak.answer == "a better answer for weak" and weak.scored == 0 and weak.validated
    assert (bank.get("good").answer, bank.get("good").scored) == good_before
    assert report.evicted == []  # regenerated examples get a fresh chance
    assert report.tokens_spent == 300


async def test_replay_spends_no_more_than_its_budget_and_evicts_low_utility_per_byte():
    bank = _bank()
    asked = []

    async def ask_large(ex):
        asked.append(ex.id)
        return ex.answer

    async def compare(old, new):
        return 1.0

    cfg = ReplayConfig(token_budget=150, low_utility=0.5, evict_min_scored=10, evict_utility_per_kb=0.5)
    report = await replay_examples(bank, ask_large, compare, cfg)
    assert asked == ["fresh"] and report.tokens_spent == 100
    # "useless" was not re-asked (no budget left) and is judged: 20 uses, ~0.02 utility per KB.
    assert report.evicted == ["useless"] and "useless" not in bank
    assert bank.index.partition_of("useless") is None
    assert "good" in bank and "weak" in bank and "fresh" in bank  # weak: only 4 scored uses
