"""Live false-hit audits, the library side: the interval, the judge, the estimate, quarantine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcache import SQLiteStore, SemanticCache
from semcache.observe.audit import AnswerJudge, FalseHitEstimator, Judgement, answer_text, clopper_pearson_interval
from semcache.observe.audit import quarantine_pair
from semcache.config.policy import load_policies_text

from .test_cache import chat, put


@given(n=st.integers(1, 400), data=st.data())
@settings(max_examples=80, deadline=None)
def test_interval_contains_the_observed_rate(n, data):
    k = data.draw(st.integers(0, n))
    low, high = clopper_pearson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


@given(rate=st.sampled_from([0.0, 0.02, 0.1, 0.3]), n=st.integers(20, 200))
@settings(max_examples=40, deadline=None)
def test_interval_narrows_with_samples(rate, n):
    small = clopper_pearson_interval(round(rate * n), n)
    large = clopper_pearson_interval(round(rate * 4 * n), 4 * n)
    assert large[1] - large[0] < small[1] - small[0]


def test_interval_known_values():
    # Exact two-sided 95% Clopper-Pearson: 0 of 10 -> [0, 0.3085]; 5 of 10 -> [0.1871, 0.8129].
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-3)
    assert clopper_pearson_interval(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-3)
    assert clopper_pearson_interval(0, 0) == (0.0, 1.0)


def test_answer_text_reads_chat_and_completions():
    assert answer_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert answer_text({"choices": [{"text": "yo"}]}) == "yo"
    assert answer_text({"choices": []}) == ""
    assert answer_text({"choices": [{"message": {"content": None, "tool_calls": []}}]}) == ""


async def test_judge_agrees_on_rewordings_and_not_on_other_numbers(embedder):
    judge = AnswerJudge(embedder)
    same = await judge.judge("Preheat the oven to 200 C and bake for 25 minutes.",
                             "Preheat the oven to 200 C and bake  for 25 minutes.", min_similarity=0.8)
    assert same.agree
    numbers = await judge.judge("Preheat the oven to 200 C and bake for 25 minutes.",
                                "Preheat the oven to 180 C and bake for 25 minutes.", min_similarity=0.0)
    assert not numbers.agree and "numbers differ" in numbers.reason
    other = await judge.judge("Paris is the capital of France.",
                              "Use git rebase to replay commits onto another base.", min_similarity=0.8)
    assert not other.agree and "similarity" in other.reason
    assert not (await judge.judge("", "something", min_similarity=0.0)).agree


def test_estimator_counts_audits_and_feedback():
    est = FalseHitEstimator()
    for _ in range(18):
        est.record("faq", Judgement(True, 0.95, "ok"))
    est.record("faq", Judgement(False, 0.4, "answer similarity 0.400 < 0.80"))
    est.skip("faq", "engine busy")
    snap = est.snapshot({"faq": {"reports": 1, "wrong": 1, "right": 0}, "code": {"reports": 2, "wrong": 0}})
    faq = snap["faq"]
    assert (faq["audited"], faq["audit_false_hits"], faq["samples"]) == (19, 1, 20)
    assert faq["false_hit_rate"] == pytest.approx(2 / 20)
    assert faq["lower"] < 0.1 < faq["upper"]
    assert faq["skipped"] == {"engine busy": 1}
    assert snap["code"]["false_hit_rate"] == 0.0 and snap["code"]["audited"] == 0
    assert est.estimate("nothing")["false_hit_rate"] is None


def test_estimator_bins_the_lookup_similarity_of_false_hits_only():
    est = FalseHitEstimator()
    est.record("faq", Judgement(True, 0.95, "ok"), lookup_similarity=0.93)  # agreed: not counted
    est.record("faq", Judgement(False, 0.4, "numbers differ (4)"), lookup_similarity=0.93)
    est.record("faq", Judgement(False, 0.4, "numbers differ (8)"), lookup_similarity=0.931)
    est.record("faq", Judgement(False, 0.3, "answer similarity"), lookup_similarity=1.0)  # top bin, not past it
    est.record("faq", Judgement(False, 0.3, "answer similarity"), lookup_similarity=-0.2)  # below 0: bin 0
    est.record("faq", Judgement(False, 0.3, "answer similarity"))  # similarity unknown: counted, not binned
    hist = est.estimate("faq")["false_hit_similarity_hist"]
    assert len(hist) == 50 and sum(hist) == 4
    assert hist[46] == 2 and hist[49] == 1 and hist[0] == 1
    assert est.estimate("faq")["audit_false_hits"] == 5
    assert est.estimate("code")["false_hit_similarity_hist"] == [0] * 50


async def test_quarantined_pair_no_longer_hits_but_the_entry_serves_others(cache):
    await put(cache, chat("how do I reset my password"), "Open settings.")
    near = chat("how do I reset my password please")
    hit = await cache.lookup(near)
    assert hit.status == "hit" and hit.stage != "exact"
    assert await quarantine_pair(cache, hit.entry.id, hit.context.text_digest)
    after = await cache.lookup(near)
    assert after.status == "miss" and after.stage == "audit"
    # Other paraphrases, and the entry's own question, are still answered by it.
    assert (await cache.lookup(chat("how do I reset my password"))).status == "hit"
    assert (await cache.lookup(chat("please how do I reset my password"))).status == "hit"


async def test_quarantine_survives_a_restart(tmp_path, clock, embedder):
    policies = load_policies_text("categories: {default: {threshold: 0.8}}")

    def make():
        return SemanticCache(policies=policies, store=SQLiteStore(tmp_path / "q.db"), embedder=embedder,
                             clock=clock, purge_interval_s=0)

    first = make()
    await first.start()
    await put(first, chat("what is the boiling point of water"), "100 C at sea level.")
    near = chat("what is the boiling point of water at home")
    hit = await first.lookup(near)
    assert hit.status == "hit"
    await quarantine_pair(first, hit.entry.id, hit.context.text_digest)
    await first.close()
    second = make()
    await second.start()
    try:
        assert (await second.lookup(near)).status == "miss"
    finally:
        await second.close()
