"""The lookup log and the what-if replay: a prediction equals what the cache then decides."""

from __future__ import annotations

import pytest

from semcache import load_policies_text
from semcache.observe.lookup_log import Candidate, LookupLog, LookupRecord
from semcache.observe.whatif import KEEP_TTL, predict, replay_one

from .test_cache import answer, chat

POLICY = """
categories:
  default:
    threshold: {threshold}
    ttl_seconds: {ttl}
    guards: {{numbers: true, negation: true}}
"""
STORED = ["how do I reset my password", "enable two factor login on my account",
          "what is the capital of italy", "sort the list ascending in python",
          "how many days are in a leap year"]
ASKED = ["how can I reset my password", "please reset my password", "disable two factor login on my account",
         "what is the capital city of italy", "sort the list descending in python", "italy capital",
         "how many days are in a normal year", "what is a leap year", "reset password", "how do I reset my password"]


async def filled(make_cache, threshold=0.99, ttl=1000):
    cache = await make_cache(POLICY.format(threshold=threshold, ttl=ttl))
    cache.lookup_log = LookupLog(guard_floor=-1.0)  # check every candidate's guards
    for text in STORED:
        res = await cache.lookup(chat(text))
        assert (await cache.store(chat(text), res, response=answer(f"answer to {text}"))).stored
    cache.lookup_log = LookupLog(guard_floor=-1.0)
    return cache


async def decide(cache, text):
    res = await cache.lookup(chat(text))
    return res.entry.id if res.status == "hit" else None


@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.55, 0.7, 0.85, 0.99])
async def test_replayed_threshold_predicts_the_decisions_after_applying_it(make_cache, threshold):
    cache = await filled(make_cache)
    for text in ASKED:
        await cache.lookup(chat(text))
    await cache.lookup_log.settle()
    records = cache.lookup_log.records("default")
    assert len(records) == len(ASKED)
    predicted = [replay_one(r, threshold) for r in records]
    assert "?" not in predicted
    await cache.reload_policies(load_policies_text(POLICY.format(threshold=threshold, ttl=1000)))
    actual = [await decide(cache, text) for text in ASKED]
    assert predicted == actual
    assert predict(records, threshold).hits == sum(a is not None for a in actual)


async def test_a_guard_refusal_stays_a_miss_at_any_threshold(make_cache):
    cache = await filled(make_cache)
    await cache.lookup(chat("disable two factor login on my account"))
    await cache.lookup_log.settle()
    (rec,) = cache.lookup_log.records("default")
    best = rec.candidates[0]
    assert best.similarity > 0.5 and best.verdict == "guard:negation"
    assert replay_one(rec, -1.0) in (None, *[c.entry_id for c in rec.candidates[1:]])
    assert replay_one(rec, -1.0) != best.entry_id


async def test_ttl_what_if_uses_each_candidates_age(make_cache, clock):
    cache = await filled(make_cache, threshold=0.5, ttl=1000)
    clock.advance(600)
    await cache.lookup(chat("how can I reset my password"))
    await cache.lookup_log.settle()
    (rec,) = cache.lookup_log.records("default")
    assert rec.status == "hit" and rec.candidates[0].age_s == pytest.approx(600)
    assert replay_one(rec, 0.5, 300) is None            # a 300 s TTL would have expired it
    assert replay_one(rec, 0.5, KEEP_TTL) == rec.served_entry
    clock.advance(600)                                  # now past the 1000 s TTL: a miss
    await cache.lookup(chat("how can I reset my password"))
    await cache.lookup_log.settle()
    late = cache.lookup_log.records("default")[-1]
    assert late.status == "miss" and late.candidates[0].expired
    assert replay_one(late, 0.5, 5000) == rec.served_entry  # a longer TTL keeps it
    assert replay_one(late, 0.5, None) == rec.served_entry  # never expiring too


async def test_exact_repeats_stay_hits_and_log_is_a_bounded_ring_without_text(make_cache):
    cache = await filled(make_cache)
    cache.lookup_log = LookupLog(capacity=3)
    for text in STORED:
        await cache.lookup(chat(text))
    records = cache.lookup_log.records("default")
    assert len(records) == 3 and [r.seq for r in records] == [3, 4, 5]
    assert all(r.stage == "exact" and replay_one(r, 1.0) == r.served_entry for r in records)
    assert all(r.query is None and r.query_digest for r in records)
    cache.lookup_log = LookupLog(keep_text=True)
    await cache.lookup(chat(STORED[0]))
    assert cache.lookup_log.records("default")[0].query == STORED[0]


async def test_audit_outcomes_join_the_hit_they_judged(make_cache):
    cache = await filled(make_cache, threshold=0.5)
    res = await cache.lookup(chat("how can I reset my password"))
    assert res.status == "hit"
    assert cache.lookup_log.audited("default", res.entry.id, res.context.text_digest, agree=False)
    assert cache.lookup_log.records("default")[0].audit == "false_hit"
    assert not cache.lookup_log.audited("default", res.entry.id, "other-digest", agree=True)


def _record(seq, status, sim, audit=None, verdict="pass"):
    cand = Candidate("e1", sim, 10.0, False, False, verdict)
    return LookupRecord(seq=seq, at=0.0, category="c", status=status, stage="similarity", reason="",
                        threshold=0.8, ttl_seconds=None, query_digest=f"d{seq}",
                        served_entry="e1" if status == "hit" else None, candidates=[cand], audit=audit)


def test_false_hit_estimate_uses_only_audits_and_counts_unaudited_new_hits():
    records = ([_record(i, "hit", 0.9, "agree") for i in range(18)]
               + [_record(18 + i, "hit", 0.85, "false_hit") for i in range(2)]
               + [_record(20 + i, "miss", 0.75) for i in range(5)]
               + [_record(25, "miss", 0.75, verdict="unknown")])
    now = predict(records, 0.8)
    assert (now.hits, now.audited, now.audited_false, now.new_hits) == (20, 20, 2, 0)
    assert now.enough_audits and now.false_hit_rate == pytest.approx(0.1)
    assert now.lower < 0.1 < now.upper
    lower = predict(records, 0.7)
    assert (lower.hits, lower.new_hits, lower.undetermined) == (25, 5, 1)
    assert "5 unaudited new hits" in lower.note
    higher = predict(records, 0.88)
    assert (higher.hits, higher.lost_hits, higher.audited_false) == (18, 2, 0)
    few = predict(records[:5], 0.8)
    assert not few.enough_audits and "not enough audits (5 < 10)" in few.note


async def test_candidates_whose_guards_were_never_checked_are_undetermined(make_cache):
    cache = await filled(make_cache)
    cache.lookup_log = LookupLog(guard_floor=-1.0, max_pending=0)  # no room for background checks
    await cache.lookup(chat("italy capital"))
    (rec,) = cache.lookup_log.records("default")
    assert rec.status == "miss" and cache.lookup_log.unchecked == len(rec.candidates)
    assert replay_one(rec, 0.2) == "?"
    assert predict([rec], 0.2).undetermined == 1 and predict([rec], 0.99).undetermined == 0


async def test_long_prompts_judged_by_span_similarity_are_undetermined_at_another_threshold(make_cache):
    cache = await filled(make_cache, threshold=0.3)
    body = " ".join(f"line {w} of the shared report body" for w in STORED[0].split() * 4)
    stored, asked = body + " what does it say about passwords", body + " what does it say about accounts"
    res = await cache.lookup(chat(stored))
    assert (await cache.store(chat(stored), res, response=answer("about passwords"))).stored
    cache.lookup_log = LookupLog(guard_floor=-1.0)
    res = await cache.lookup(chat(asked))
    await cache.lookup_log.settle()
    (rec,) = cache.lookup_log.records("default")
    best = rec.candidates[0]
    assert best.span_threshold == 0.3  # its changed span was judged against 0.3
    assert replay_one(rec, 0.3) == (res.entry.id if res.status == "hit" else None)
    assert replay_one(rec, 0.25) == "?"


GUARDED = """
categories:
  default:
    threshold: 0.5
    guards: {{numbers: {numbers}, negation: {negation}, actions: false, entities: false, identifiers: false, diff: true}}
"""


@pytest.mark.parametrize("flip", ["numbers", "negation", "actions", "entities", "identifiers", "diff"])
async def test_replayed_guard_switch_predicts_the_decisions_after_applying_it(make_cache, flip):
    cache = await make_cache(GUARDED.format(numbers="true", negation="true"))
    cache.lookup_log = LookupLog(guard_floor=-1.0)
    stored = [*STORED, "call Alice at 5 pm about the order_total field", "release version 2.1 notes",
              "how do I update my shipping address for the order"]
    for text in stored:
        res = await cache.lookup(chat(text))
        assert (await cache.store(chat(text), res, response=answer(f"answer to {text}"))).stored
    asked = [*ASKED, "call Bob at 5 pm about the order_total field", "call Alice at 6 pm about the order_total field",
             "call Alice at 5 pm about the orderTotal field", "release version 2.2 notes",
             "how do I delete my shipping address for the order"]
    cache.lookup_log = LookupLog(guard_floor=-1.0)
    for text in asked:
        await cache.lookup(chat(text))
    await cache.lookup_log.settle()
    records = cache.lookup_log.records("default")
    guards = {**records[0].guards, flip: not records[0].guards[flip]}
    predicted = [replay_one(r, 0.5, KEEP_TTL, guards) for r in records]
    assert "?" not in predicted
    yaml_guards = ", ".join(f"{k}: {str(v).lower()}" for k, v in guards.items())
    await cache.reload_policies(load_policies_text(
        f"categories:\n  default:\n    threshold: 0.5\n    guards: {{{yaml_guards}}}\n"))
    assert predicted == [await decide(cache, text) for text in asked]
    unchanged = [replay_one(r, 0.5) for r in records]
    assert (predicted != unchanged) == (flip in CHANGES_SOMETHING)
    other = "entities" if flip != "entities" else "numbers"
    two = {**guards, other: not guards[other]}  # two switches at once: not predicted
    assert "?" in [replay_one(r, 0.5, KEEP_TTL, two) for r in records]


CHANGES_SOMETHING = {"negation", "actions", "entities", "identifiers"}  # numbers and diff (atoms) back each other up
