"""The cross-encoder verifier: the shipped model, its bounded cost, the lookup stage, its failure mode."""

from __future__ import annotations

import time

import pytest

from semcache import SemanticCache, SQLiteStore, load_policies_text
from semcache.errors import CacheUnavailableError, PolicyError
from semcache.verifier import CrossEncoderVerifier, VerifierGate
from semcache.verifier.cross_encoder import DEFAULT_DIR

from .fakes import HashEmbedder
from .test_cache import chat, put

pytestmark = pytest.mark.skipif(not (DEFAULT_DIR / "model.onnx").exists(),
                                reason="no trained cross-encoder (python -m evaluation.train_verifier --cross-encoder)")


@pytest.fixture(scope="module")
def model() -> CrossEncoderVerifier:
    return CrossEncoderVerifier.load()


# Rewordings (a cached answer is right) and traps (it is wrong) the guards do not catch:
# no number, no negator, no listed antonym differs.
SAME = [
    ("What is the capital of Italy?", "What's the capital city of Italy?"),
    ("how can I reset my password", "I forgot my password, how do I reset it?"),
    ("How do I make text strikethrough on GitHub?", "strikethrough text in github markdown"),
]
TRAPS = [
    ("How do I track my refund?", "How do I request a refund?"),
    ("What is the capital of Australia?", "What is the largest city of Australia?"),
    ("How do I change my shipping address?", "How do I change my billing address?"),
]


def test_rewordings_score_above_traps(model):
    same = model.scores(SAME)
    traps = model.scores(TRAPS)
    assert same.min() > traps.max(), (same, traps)


def test_order_of_a_pair_barely_matters(model):
    ab = model.scores(SAME + TRAPS)
    ba = model.scores([(b, a) for a, b in SAME + TRAPS])
    assert abs(ab - ba).max() < 0.25


def test_cost_is_bounded_for_hostile_input(model):
    model.scores(SAME[:1])  # warm the session
    started = time.perf_counter()
    p = model.scores([("why " * 200_000, "how " * 200_000)])
    assert time.perf_counter() - started < 1.0 and 0.0 <= p[0] <= 1.0


def test_training_card_ships_beside_the_model():
    card = CrossEncoderVerifier.load().card
    assert card["model"] == "cross-encoder" and card["train_pairs"] > 0
    assert card["test_onnx_int8"]["auc"] > 0.8 and "split" in card


def test_policy_names_the_model():
    policies = load_policies_text("categories: {default: {verifier: {enabled: true, model: cross-encoder}}}")
    assert policies.default.verifier.model == "cross-encoder"
    assert load_policies_text("categories: {default: {}}").default.verifier.model == "trees"
    with pytest.raises(PolicyError, match="verifier.model"):
        load_policies_text("categories: {default: {verifier: {model: bert}}}")


POLICY = """
defaults: {threshold: -1.0, guards: {numbers: true, negation: true}}
categories:
  default:
    verifier: {enabled: true, model: cross-encoder, min_probability: 0.5}
"""


async def _cache(tmp_path, clock, gate: VerifierGate) -> SemanticCache:
    c = SemanticCache(policies=load_policies_text(POLICY), store=SQLiteStore(tmp_path / "v.db"),
                      embedder=HashEmbedder(), clock=clock, purge_interval_s=0, verifier=gate)
    await c.start()
    return c


async def test_lookup_serves_the_rewording_and_not_the_trap(tmp_path, clock, model):
    cache = await _cache(tmp_path, clock, VerifierGate(cross_encoder=model))
    try:
        await put(cache, chat(SAME[0][0]))
        hit = await cache.lookup(chat(SAME[0][1]))
        assert hit.status == "hit" and hit.stage == "verifier" and hit.probability >= 0.5, hit.reason
        await put(cache, chat(TRAPS[1][0], tenant="t2"))
        miss = await cache.lookup(chat(TRAPS[1][1], tenant="t2"))
        assert miss.status == "miss" and miss.stage == "verifier", miss.reason
        assert miss.reason.startswith("verifier p=") and "< 0.50" in miss.reason
    finally:
        await cache.close()


async def test_missing_model_makes_the_cache_unavailable_not_wrong(tmp_path, clock):
    cache = await _cache(tmp_path, clock, VerifierGate(cross_encoder_path=tmp_path / "nothing-here"))
    try:
        await put(cache, chat(SAME[0][0]))
        with pytest.raises(CacheUnavailableError, match="cross-encoder"):
            await cache.lookup(chat(SAME[0][1]))
    finally:
        await cache.close()
