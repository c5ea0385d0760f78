"""``verifier.one_order_margin``: the both-orders score held near the first order's, read lazily.

The cascade (:meth:`CrossEncoderVerifier.judge`) must decide every cut-off exactly as the held
score that ``semcache calibrate`` certifies (:meth:`CrossEncoderVerifier.probabilities_of` with
the margin), and read the second order only where that decision needs it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcache import load_policies_text
from semcache.errors import PolicyError
from semcache.verifier import CrossEncoderVerifier, VerifierGate, bars, policy_probabilities, policy_verdicts
from semcache.verifier.cross_encoder import DEFAULT_DIR, held_within

from .test_cache import chat, put
from .test_cross_encoder import _cache

COMBINER = {"bias": -0.16, "w_logit": 0.79, "w_cosine": 0.14}


class _Table(CrossEncoderVerifier):
    """The cascade's arithmetic over given logits per order (no model): it records each order read."""

    def __init__(self, logits: dict[tuple[str, str, bool], float]):
        super().__init__(None, "", {"combiner": COMBINER}, memo_size=0)
        self.logits, self.read = logits, []

    def _order(self, query, cached, *, second=False, readings=None):
        self.read.append((query, cached, second))
        return self.logits[(query, cached, second)]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


logits = st.floats(-12, 12, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(logits, logits, st.floats(0.3, 1.0)), min_size=1, max_size=5),
       st.floats(0.1, 4.0), st.lists(st.floats(0.05, 0.99), min_size=1, max_size=3))
def test_the_cascade_decides_every_bar_as_the_held_score_and_reads_the_second_order_only_near_one(
        pairs, margin, cuts):
    table = {}
    triples = []
    for i, (first, second, cos) in enumerate(pairs):
        q, c = f"q{i}", f"c{i}"
        table[(q, c, False)], table[(q, c, True)] = first, second
        triples.append((q, c, cos))
    held = _Table(table).probabilities_of(triples, both_orders=True, margin=margin)
    lazy = _Table(table)
    probs, exact = lazy.judge(triples, margin=margin, bars=cuts)
    for i, (q, c, _) in enumerate(triples):
        for cut in cuts:
            assert (probs[i] >= cut) == (held[i] >= cut), (i, cut, probs[i], held[i])
        read_second = (q, c, True) in lazy.read
        assert read_second == bool(exact[i])
        if exact[i]:
            assert probs[i] == pytest.approx(held[i], abs=1e-12)
        else:  # the first order alone, and only because it is more than the margin from every bar
            z = _logit(float(probs[i]))
            assert all(abs(z - _logit(cut)) > margin - 1e-9 for cut in cuts)
            assert abs(z - _logit(float(held[i]))) <= margin + 1e-9


def test_held_within_moves_the_both_orders_score_at_most_the_margin_from_the_first():
    both, first = np.array([5.0, -5.0, 0.5]), np.array([0.0, 0.0, 0.0])
    assert held_within(both, first, 2.0).tolist() == [2.0, -2.0, 0.5]
    assert held_within(both, first, None) is both


def test_without_a_margin_both_orders_read_both_and_are_exact():
    table = _Table({("q", "c", False): 4.0, ("q", "c", True): -4.0})
    p = table.probabilities_of([("q", "c", 0.9)], both_orders=True)
    z = COMBINER["bias"] + COMBINER["w_logit"] * 0.0 + COMBINER["w_cosine"] * 0.9
    assert p[0] == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-9)
    settings_ = load_policies_text(
        "categories: {default: {verifier: {enabled: true, model: cross-encoder, both_orders: true}}}").default.verifier
    probs, exact = policy_verdicts(settings_, table, [("q", "c", 0.9)], [0.5])
    assert probs[0] == pytest.approx(p[0], abs=1e-12) and exact.tolist() == [True]


def test_the_margin_needs_both_orders_and_is_positive():
    with pytest.raises(PolicyError, match="one_order_margin needs both_orders"):
        load_policies_text("categories: {default: {verifier: {model: cross-encoder, one_order_margin: 2}}}")
    with pytest.raises(PolicyError):
        load_policies_text("categories: {default: {verifier: {model: cross-encoder, both_orders: true, "
                           "one_order_margin: 0}}}")


def test_bars_hold_every_cut_off_a_lookup_or_its_what_if_log_compares_with():
    v = load_policies_text("categories: {default: {verifier: {enabled: true, model: cross-encoder, "
                           "min_probability: 0.7, overrule: {negation: 0.95}, both_orders: true, "
                           "one_order_margin: 2}}}").default.verifier
    assert bars(v) == [0.7, 0.95]
    assert bars(v, 0.4) == [0.4, 0.7, 0.95]  # under load: the adapted cut-off and the policy's
    assert bars(v.model_copy(update={"enabled": False}), 0.4) == [0.4, 0.7]  # off: nothing overruled


# ------------------------------------------------------------------ the shipped model
needs_model = pytest.mark.skipif(not (DEFAULT_DIR / "model.onnx").exists(), reason="no trained cross-encoder")

CLEAR = ("How can I track my order?", "how can i track my order??")
LARGER = ("what are the five countries larger than australia?", "what are the five countries smaller than australia?")
POLICY = """
defaults: {threshold: -1.0, guards: {numbers: false, negation: false, diff: false}}  # only the verifier judges
categories:
  default:
    verifier: {enabled: true, model: cross-encoder, min_probability: 0.73, both_orders: true, one_order_margin: 2.0}
"""


@pytest.fixture(scope="module")
def model() -> CrossEncoderVerifier:
    return CrossEncoderVerifier.load()


class _Runs(CrossEncoderVerifier):
    def __init__(self, base: CrossEncoderVerifier):
        super().__init__(base._session, base._tokenizer_json, base.card)
        self.ran: list[tuple[str, str]] = []

    def scores(self, pairs):
        self.ran += pairs
        return super().scores(pairs)


@needs_model
def test_shipped_model_a_clear_rewording_costs_one_run_and_a_trap_near_the_cut_off_two(model):
    (c, q), (tc, tq) = CLEAR, LARGER
    runs = _Runs(model)
    probs, exact = runs.judge([(q, c, 0.95), (tq, tc, 0.93)], margin=2.0, bars=[0.73])
    assert probs[0] > 0.95 and not exact[0]
    assert probs[1] < 0.73 and exact[1]  # read one way the model leans to serving it (0.73): both read
    assert runs.ran == [(q, c), (tq, tc), (tc, tq)]
    held = _Runs(model).probabilities_of([(q, c, 0.95), (tq, tc, 0.93)], both_orders=True, margin=2.0)
    assert held[0] > 0.95 and held[1] == pytest.approx(probs[1], abs=1e-12)
    # Where an overrule bar of 0.95 applies too, the rewording sits near it: both orders are read.
    runs = _Runs(model)
    probs, exact = runs.judge([(q, c, 0.95)], margin=2.0, bars=[0.73, 0.95])
    assert exact[0] and probs[0] == pytest.approx(held[0], abs=1e-12) and len(runs.ran) == 2


@needs_model
async def test_a_lookup_serves_on_the_first_order_and_says_so(tmp_path, clock, model):
    runs = _Runs(model)
    cache = await _cache(tmp_path, clock, VerifierGate(cross_encoder=runs), policy=POLICY)
    try:
        await put(cache, chat(CLEAR[0]))
        await put(cache, chat(LARGER[0]))
        runs.ran.clear()
        hit = await cache.lookup(chat(CLEAR[1]))
        assert hit.status == "hit" and "(one order)" in hit.reason, hit.reason
        assert len(runs.ran) == 1
        runs.ran.clear()
        miss = await cache.lookup(chat(LARGER[1]))
        assert miss.status == "miss" and miss.stage == "verifier", miss.reason
        assert (LARGER[0], LARGER[1]) in runs.ran  # the second order was read for the trap
    finally:
        await cache.close()


def test_calibration_and_evaluation_score_the_held_score():
    # Orders that disagree by far more than the margin: the held score is not the plain mean.
    table = _Table({("q", "c", False): 8.0, ("q", "c", True): -8.0})
    settings_ = load_policies_text(POLICY).default.verifier
    held = table.probabilities_of([("q", "c", 0.9)], both_orders=True, margin=2.0)
    mean = table.probabilities_of([("q", "c", 0.9)], both_orders=True)
    assert held[0] > mean[0] + 0.1
    assert policy_probabilities(settings_, table, [("q", "c", 0.9)]).tolist() == held.tolist()


def test_a_first_order_verdict_decides_only_bars_beyond_its_margin():
    from semcache.verifier import VerifierVerdict

    exact = VerifierVerdict(True, 0.9, "")
    assert exact.decides(0.8999) and exact.decides(0.95)
    first = VerifierVerdict(True, 0.99, "", margin=2.0)  # log-odds 4.6
    assert first.decides(0.73) and not first.decides(0.95) and not first.decides(0.98) and first.decides(0.9995)
    low = VerifierVerdict(False, 0.05, "", margin=2.0)  # log-odds -2.9
    assert low.decides(0.73) and not low.decides(0.2)
    # Bars of 0 and 1 (an overrule of 1.0 is allowed) are far from any score the model gives.
    assert first.decides(1.0) and first.decides(0.0) and low.decides(1.0) and low.decides(0.0)


def test_a_bar_of_one_or_zero_is_decided_as_the_held_score_decides_it():
    table = _Table({("q", "c", False): 12.0, ("q", "c", True): -12.0})
    held = table.probabilities_of([("q", "c", 1.0)], both_orders=True, margin=2.0)
    probs, exact = table.judge([("q", "c", 1.0)], margin=2.0, bars=[0.0, 1.0])
    assert not exact[0] and (probs[0] >= 1.0) == (held[0] >= 1.0) and (probs[0] >= 0.0) == (held[0] >= 0.0)


async def test_the_what_if_log_leaves_a_bar_a_first_order_probability_cannot_decide_unknown():
    from semcache.observe.lookup_log import _flipped

    policy = load_policies_text("""
defaults: {threshold: 0.5, guards: {numbers: false, negation: true, diff: false}}
categories:
  default:
    verifier: {enabled: true, model: cross-encoder, min_probability: 0.73, overrule: {negation: 0.95},
               both_orders: true, one_order_margin: 2.0}
""").default

    async def no_embedding(texts):  # short texts: the guards never embed
        raise AssertionError("not called")

    q, c = "is it safe to eat raw eggs", "is it not safe to eat raw eggs"
    # With the negation guard switched off, the pair is served on the verifier at min_probability 0.73.
    exact = await _flipped(policy, q, c, 0.9, no_embedding, 0.99, 0.0)
    near = await _flipped(policy, q, c, 0.9, no_embedding, 0.99, 2.0)  # log-odds 4.6, 0.73's is 1.0
    far = await _flipped(policy, q, c, 0.9, no_embedding, 0.74, 2.0)  # 0.74 read one order: near 0.73
    assert exact["negation"] is True and near["negation"] is True and far["negation"] is None


@needs_model
def test_a_pair_read_both_ways_is_focused_once(model, monkeypatch):
    """Focusing an 84k-character pair takes ~4.6 ms: the second order reuses the first's reading."""
    import semcache.verifier.cross_encoder as ce

    calls = []
    real = ce.focus
    monkeypatch.setattr(ce, "focus", lambda q, c: calls.append(1) or real(q, c))
    (c, q), (tc, tq) = CLEAR, LARGER
    fresh = CrossEncoderVerifier(model._session, model._tokenizer_json, model.card, memo_size=0)
    fresh.probabilities_of([(q, c, 0.95), (tq, tc, 0.93)], both_orders=True)
    assert len(calls) == 2
    calls.clear()
    _, exact = fresh.judge([(tq, tc, 0.93)], margin=2.0, bars=[0.73])
    assert exact[0] and len(calls) == 1  # both orders read, one focus


async def test_the_gate_always_decides_its_own_cut_off_whatever_bars_it_is_asked_for():
    # The first reading alone: z 1.5 (P 0.82), far from 0.99's 4.6; both: held at z1 - 2 = -0.5 (P 0.38).
    table = _Table({("q", "c", False): (1.5 - COMBINER["bias"]) / COMBINER["w_logit"], ("q", "c", True): -20.0})
    policy = load_policies_text("categories: {default: {verifier: {enabled: true, model: cross-encoder, "
                                "min_probability: 0.5, both_orders: true, one_order_margin: 2.0}}}").default
    held = table.probabilities_of([("q", "c", 0.0)], both_orders=True, margin=2.0)[0]
    assert held < 0.5
    [verdict] = await VerifierGate(cross_encoder=table).check_many(policy, "q", [("c", 0.0)], None, [0.99])
    assert not verdict.passed and verdict.probability == pytest.approx(held, abs=1e-12)
