"""``verifier.overrule``: a negation word one text has and the other lacks may be left to the
verifier at its own, higher probability; an antonym pair, another guard, or a category without the
verifier never is."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semcache.config.calibrate_cli import calibrate_text
from semcache.config.policy import Guards, load_policies_text
from semcache.decide import guards
from semcache.decide.diffrule import check
from semcache.errors import PolicyError

from .test_calibrate_verifier import POLICY as WITHOUT

POLICY = WITHOUT.replace("min_probability: 0.5}", "min_probability: 0.5, overrule: {negation: 0.9}}")
assert POLICY != WITHOUT


async def _no_embed(texts):
    raise AssertionError("short texts: no span is embedded")


def test_only_a_negation_word_may_be_overruled_not_an_antonym():
    def verdict(a, b):
        return guards.check(Guards(), a, b)

    a, b = "I don't know how to cancel my order", "help me cancel my order"
    v = verdict(a, b)
    assert v.guard == "negation" and guards.overrulable(v, a, b)
    v = verdict("How do I lock my screen rotation?", "How do I unlock my screen rotation?")
    assert v.guard == "negation" and not guards.overrulable(v, "How do I lock my screen rotation?",
                                                            "How do I unlock my screen rotation?")
    # A negation word and an antonym pair in one pair: the antonym still decides.
    a, b = "I can't turn on the wifi", "how do I turn off the wifi"
    v = verdict(a, b)
    assert v.detail == "negation" and not guards.overrulable(v, a, b)
    a, b = "edit my account", "delete my account"
    v = guards.check(Guards(actions=True), a, b)
    assert v.guard == "actions" and guards.overrulable(v, a, b)  # another guard, if named


@pytest.mark.parametrize(("a", "b", "may"), [
    ("How can I find the first mail a friend sent me?", "How can I find the oldest mail from a friend?", True),
    ("what are the two rivers in portugal?", "which rivers flow through portugal?", True),
    ("flights in March", "cheap flights", True),
    ("2 apples", "3 apples", False),  # digits that differ: never
    ("top five movies", "top ten movies", False),  # both texts state a number, and they differ
    ("the 1st mail", "the oldest mail", False),  # a number in digits is never left to the model
    ("add 2 and two", "add them", False),
])
def test_of_the_numbers_guard_only_a_spelled_number_the_other_text_lacks_may_be_overruled(a, b, may):
    v = guards.check(Guards(), a, b)
    assert v.guard == "numbers", v
    assert guards.overrulable(v, a, b) is may and guards.overrulable(v, b, a) is may


async def test_the_diff_rule_lifts_only_the_named_guard_and_keeps_the_others():
    policy = load_policies_text(POLICY).default
    a, b = "I don't know how to cancel my order", "help me cancel my order"
    assert not (await check(policy, a, b, 0.9, _no_embed)).passed  # without overrule: refused
    v = await check(policy, a, b, 0.9, _no_embed, overrule={"negation"})
    assert v.passed and v.overruled and v.guard == "negation" and "left to the verifier" in v.reason
    # The numbers guard still refuses: lifting negation does not lift it.
    v = await check(policy, "I don't know how to cancel order 12", "help me cancel order 13", 0.9, _no_embed,
                    overrule={"negation"})
    assert not v.passed and v.guard == "numbers"
    v = await check(policy, "I can't cancel order 12", "help me cancel order 13", 0.9, _no_embed, overrule={"negation"})
    assert not v.passed and v.guard == "numbers"
    # An antonym pair is never overruled; nor is a guard the policy did not name.
    v = await check(policy, "How do I lock my screen?", "How do I unlock my screen?", 0.9, _no_embed,
                    overrule={"negation"})
    assert not v.passed and not v.overruled
    v = await check(policy, "I don't know how to cancel my order", "help me cancel my order", 0.9, _no_embed,
                    overrule={"numbers"})
    assert not v.passed and v.guard == "negation"


def test_overrule_is_validated():
    with pytest.raises(PolicyError, match="overrule"):
        load_policies_text(POLICY.replace("overrule: {negation: 0.9}", "overrule: {negations: 0.9}"))
    with pytest.raises(PolicyError, match="overrule"):
        load_policies_text(POLICY.replace("overrule: {negation: 0.9}", "overrule: {negation: 1.5}"))
    assert load_policies_text(POLICY.replace(", overrule: {negation: 0.9}", "")).default.verifier.overrule == {}


class OverlapModel:
    """P(right) = word Jaccard of the two queries, ignoring negation words (as the test data needs)."""

    def probabilities_of(self, triples, *, both_orders=False):  # symmetric: either order is the same
        def words(t):
            return set(re.findall(r"\w+", t.lower())) - {"don", "t", "know", "how", "to", "i", "help", "me"}
        return np.array([len(words(q) & words(c)) / len(words(q) | words(c)) for q, c, _ in triples])


def _pairs():
    pairs = []
    for i in range(200):
        body = f"cancel order{chr(97 + i % 26)}{chr(97 + i // 26)} quickly"
        pairs.append({"a": f"help me {body}", "b": f"help me {body} now", "label": 1})  # Jaccard 0.75
        # Refused by the negation guard; right, and scored 1.0 or 0.75.
        pairs.append({"a": f"I don't know how to {body}", "b": f"help me {body}" + (" now" if i % 2 else ""),
                      "label": 1})
    return pairs


def test_calibration_counts_overruled_pairs_only_at_their_own_probability():
    pairs = _pairs()
    cos = np.full(len(pairs), 0.95)
    for bar, expected in ((0.9, 100), (0.7, 200)):  # at 0.9 only the half scored 1.0 is overruled
        text = POLICY.replace("negation: 0.9}", f"negation: {bar}}}")
        out, summary = calibrate_text(text, pairs, cos, cross_encoder=OverlapModel(), data="synthetic")
        ev = summary["default"]
        assert ev["overruled"] == expected and ev["served"] == 200 + expected and ev["false_hits"] == 0
        assert load_policies_text(out).default.calibration.overruled == expected
    # Without overrule the guard's refusals are never served, and no count is recorded.
    _, summary = calibrate_text(POLICY.replace(", overrule: {negation: 0.9}", ""), pairs, cos,
                                cross_encoder=OverlapModel(), data="synthetic")
    assert summary["default"]["served"] == 200 and "overruled" not in summary["default"]


async def test_without_the_verifier_an_overrule_lifts_nothing(make_cache):
    from .test_cache import chat, put

    text = POLICY.replace("enabled: true", "enabled: false").replace("threshold: 0.7", "threshold: 0.5")
    cache = await make_cache(text)
    assert cache.policies.default.verifier.overrule == {"negation": 0.9}
    await put(cache, chat("how do I cancel my order today"))
    result = await cache.lookup(chat("how do I not cancel my order today"))
    assert result.status == "miss" and result.stage == "guard" and "negation" in result.reason, result.reason
    assert (await cache.lookup(chat("how do I cancel my order today please"))).status == "hit"  # a hit is possible


async def test_a_category_without_load_adaptation_serves_and_refuses_overruled_pairs(make_cache):
    """The overrule's bar once read the load-adapted cut-off, which is None when the category does
    not adapt: every overrulable refusal failed the lookup (the request went uncached)."""
    from semcache.verifier import VerifierGate

    from .test_cache import chat, put

    cache = await make_cache(POLICY.replace("threshold: 0.7", "threshold: 0.1"))
    assert not cache.policies.default.under_load.enabled
    cache.verifier = VerifierGate(cross_encoder=OverlapModel())
    await put(cache, chat("help me cancel my order", tenant="a"))
    served = await cache.lookup(chat("I don't know how to cancel my order", tenant="a"))  # p 1.0 >= 0.9
    assert served.status == "hit" and "overruling guard negation" in served.reason, served.reason
    await put(cache, chat("help me cancel my big order", tenant="b"))
    refused = await cache.lookup(chat("I don't know how to cancel my order", tenant="b"))  # p 0.75 < 0.9
    assert refused.status == "miss" and refused.stage == "guard" and "< 0.90" in refused.reason, refused.reason
