"""The hit verifier: features, tree evaluation, the lookup stage, the trained model."""

from __future__ import annotations

import numpy as np
import pytest

from semcache import SemanticCache, SQLiteStore, load_policies_text
from semcache.verifier import VerifierGate
from semcache.verifier.features import FEATURES, fit_idf, pair_features
from semcache.verifier.model import DEFAULT_ARTEFACT, Trees, Verifier

from .fakes import HashEmbedder
from .test_cache import chat, put

JACCARD = FEATURES.index("word_jaccard")


def jaccard_verifier() -> Verifier:
    """One stump: serve only when both queries use the same words (p 0.95 vs 0.05)."""
    trees = Trees(feature=np.array([[JACCARD, 0, 0]], np.int32), threshold=np.array([[0.999, 0, 0]]),
                  left=np.array([[1, 1, 2]], np.int32), right=np.array([[2, 1, 2]], np.int32),
                  value=np.array([[0.0, -np.log(19), np.log(19)]]), depth=1, baseline=0.0)
    return Verifier(trees, fit_idf(["a b c"]), None, {"features": list(FEATURES)})


def test_tree_walk_matches_hand_computation():
    v = jaccard_verifier()
    same = v.probability("reset my password", "my password reset", 0.9)
    other = v.probability("reset my password", "reset my password please", 0.9)
    assert same == pytest.approx(0.95) and other == pytest.approx(0.05)


def test_features_flag_the_traps():
    row = dict(zip(FEATURES, pair_features("How do I turn on 2FA?", "How do I turn off 2FA?", 0.95, None)))
    assert row["negation_differ"] == 1.0 and row["numbers_differ"] == 0.0
    row = dict(zip(FEATURES, pair_features("population in 2011", "population in 2001", 0.97, None)))
    assert row["numbers_differ"] == 1.0 and row["word_jaccard"] < 1.0
    row = dict(zip(FEATURES, pair_features("flights new york to paris", "flights paris to new york", 0.99, None)))
    assert row["word_jaccard"] == 1.0 and row["order_agreement"] < 1.0 and row["bigram_jaccard"] < 1.0
    same = dict(zip(FEATURES, pair_features("What is X?", "what is x", 0.99, None)))
    assert same["word_jaccard"] == 1.0 and same["diff_words_max"] == 0.0


POLICY = """
defaults: {threshold: 0.3, guards: {numbers: true, negation: true}}
categories:
  default:
    verifier: {enabled: true, min_probability: 0.5}
"""


@pytest.fixture
async def verified_cache(tmp_path, clock):
    c = SemanticCache(policies=load_policies_text(POLICY), store=SQLiteStore(tmp_path / "v.db"),
                      embedder=HashEmbedder(), clock=clock, purge_interval_s=0,
                      verifier=VerifierGate(jaccard_verifier()))
    await c.start()
    yield c
    await c.close()


async def test_verifier_decides_and_says_so(verified_cache):
    await put(verified_cache, chat("how do I reset my password please"))
    hit = await verified_cache.lookup(chat("please how do I reset my password"))
    assert hit.status == "hit" and hit.stage == "verifier", hit.reason
    assert hit.reason.startswith("verifier p=0.950 >= 0.50") and hit.probability == pytest.approx(0.95)
    miss = await verified_cache.lookup(chat("how do I reset my password"))
    assert miss.status == "miss" and miss.stage == "verifier"
    assert miss.reason.startswith("verifier p=0.050 < 0.50 at similarity")
    assert verified_cache.stats_snapshot()["categories"]["default"]["verifier_rejections"] == 1


async def test_verifier_off_by_default(cache):
    await put(cache, chat("how do I reset my password please"))
    res = await cache.lookup(chat("how do I reset my password"))
    assert res.status == "hit" and res.stage == "similarity" and res.probability is None


def test_policy_rejects_unknown_verifier_field():
    from semcache.errors import PolicyError

    with pytest.raises(PolicyError, match="verifier.min_prob"):
        load_policies_text("categories: {default: {verifier: {min_prob: 0.5}}}")


@pytest.mark.skipif(not DEFAULT_ARTEFACT.exists(), reason="no trained verifier (python -m evaluation.training.train_verifier)")
def test_trained_model_separates_repeats_from_traps():
    v = Verifier.load()
    assert v.info["features"] == list(FEATURES)
    assert v.trees.feature.shape[0] == v.info["trees"] and v.trees.feature.shape == v.trees.threshold.shape
    near = v.probability("How do I reset my Netflix password?", "How can I reset my Netflix password?", 0.97)
    negation = v.probability("How do I turn on 2FA on my Google account?",
                             "How do I turn off 2FA on my Google account?", 0.95)
    number = v.probability("Who won the World Cup in 2014?", "Who won the World Cup in 2018?", 0.96)
    # At min_probability 0.8 (about the QQP held-out precision-0.90 point) the repeat is served, the traps not.
    assert near > 0.8 and negation < 0.8 and number < 0.8
