"""The what-if replay in a category whose verifier decides: a hit the verifier served against an
overrulable guard is replayed as the hit it was, and a guard switched off predicts a hit only where
the verifier's recorded probability reaches its bar."""

from __future__ import annotations

import pytest

from semcache import load_policies_text
from semcache.observe.lookup_log import LookupLog
from semcache.observe.whatif import replay_one
from semcache.verifier import VerifierGate

from .test_cache import answer, chat
from .test_overrule import OverlapModel

POLICY = """\
defaults: {guards: {numbers: true, negation: true}}
categories:
  default:
    threshold: 0.1
    verifier: {enabled: true, model: cross-encoder, min_probability: 0.5, overrule: {negation: 0.9}}
"""


async def _cache(make_cache, policy=POLICY):
    cache = await make_cache(policy)
    cache.verifier = VerifierGate(cross_encoder=OverlapModel())
    cache.lookup_log = LookupLog(guard_floor=-1.0)
    return cache


async def _put(cache, text):
    res = await cache.lookup(chat(text))
    assert (await cache.store(chat(text), res, response=answer(f"answer to {text}"))).stored
    return res


async def test_an_overruled_hit_replays_as_the_hit_it_was(make_cache):
    cache = await _cache(make_cache)
    await _put(cache, "help me cancel my order")
    hit = await cache.lookup(chat("I don't know how to cancel my order"))  # p 1.0 >= 0.9: served
    assert hit.status == "hit" and "overruling guard negation" in hit.reason
    await cache.lookup_log.settle()
    rec = cache.lookup_log.records("default")[-1]
    assert rec.served_entry == hit.entry.id
    assert replay_one(rec, rec.threshold) == hit.entry.id
    # Switching the negation guard off leaves it served: the verifier passed it at the lower bar too.
    assert replay_one(rec, rec.threshold, guards={**rec.guards, "negation": False}) == hit.entry.id


@pytest.mark.parametrize(("cached", "p", "served"), [
    ("help me cancel my big order", 0.75, True),  # under the overrule's 0.9, over the verifier's 0.5
    ("help me cancel my big red old order now", 3 / 7, False),  # under both
])
async def test_a_guard_switched_off_predicts_a_hit_only_at_the_verifiers_bar(make_cache, cached, p, served):
    cache = await _cache(make_cache)
    await _put(cache, cached)
    asked = "I don't know how to cancel my order"
    miss = await cache.lookup(chat(asked))
    assert miss.status == "miss" and miss.stage == "guard", miss.reason
    await cache.lookup_log.settle()
    rec = cache.lookup_log.records("default")[-1]
    assert rec.candidates[0].probability == pytest.approx(p)
    predicted = replay_one(rec, rec.threshold, guards={**rec.guards, "negation": False})
    await cache.reload_policies(load_policies_text(POLICY.replace("negation: true", "negation: false")))
    actual = await cache.lookup(chat(asked))
    assert (actual.status == "hit") == served
    assert predicted == (actual.entry.id if served else None)
