"""The shipped default policy with the cross-encoder deciding: its evidence, and the wrong answers it
must not give (written near misses, hand-written traps) through the real embedder and model."""

from __future__ import annotations

import pytest

from semcache import SemanticCache, SQLiteStore
from semcache.verifier import CrossEncoderVerifier, VerifierGate
from semcache.verifier.cross_encoder import DEFAULT_DIR

from .test_cache import chat, put

pytestmark = pytest.mark.skipif(not (DEFAULT_DIR / "model.onnx").exists(),
                                reason="no trained cross-encoder (python -m evaluation.training.train_verifier --cross-encoder)")


@pytest.fixture(scope="module")
def model() -> CrossEncoderVerifier:
    return CrossEncoderVerifier.load()


CE_POLICY = DEFAULT_DIR.parents[2] / "policies" / "default.yaml"  # the shipped default: the model decides


async def _policy_cache(tmp_path, clock, model, path):
    from gpu_embed import EmbedderSettings, build_embedder
    from semcache.config.policy import load_policies

    embedder = build_embedder(EmbedderSettings())
    cache = SemanticCache(policies=load_policies(path), store=SQLiteStore(tmp_path / f"{path.stem}.db"),
                          embedder=embedder, clock=clock, purge_interval_s=0, verifier=VerifierGate(cross_encoder=model))
    await cache.start()
    return cache, embedder


async def test_the_shipped_default_lets_the_cross_encoder_decide_within_its_evidence(tmp_path, clock, model):
    from semcache.config.default_policy import DEFAULT_POLICY_FILE
    from semcache.config.policy import load_policies

    assert DEFAULT_POLICY_FILE.resolve() == CE_POLICY.resolve()
    policy = load_policies(CE_POLICY).default
    assert policy.verifier.enabled and policy.verifier.model == "cross-encoder" and policy.threshold == 0.55
    cal, floor = policy.calibration, policy.under_load.calibration
    assert cal.score == floor.score == "verifier" and cal.value == policy.verifier.min_probability
    assert cal.upper_bound <= policy.max_false_hit_rate and floor.upper_bound <= policy.under_load.max_false_hit_rate
    assert policy.under_load.relaxes == "verifier" and floor.value < cal.value
    # Traps (rule-made hard negatives) are bounded apart from the false-hit rate of the rest.
    assert cal.traps.upper_bound <= policy.max_trap_rate and floor.traps.upper_bound <= policy.under_load.max_trap_rate
    # Served and refused by the model, through the policy and the real embedder (guards on).
    cache, embedder = await _policy_cache(tmp_path, clock, model, CE_POLICY)
    try:
        await put(cache, chat("How do I update my payment method?"))
        hit = await cache.lookup(chat("how do i update my payment method please"))
        assert hit.status == "hit" and hit.stage == "verifier", hit.reason
        trap = await cache.lookup(chat("how do i update my payment address please"))
        assert trap.status == "miss" and trap.stage == "verifier", trap.reason
        # Another request on the same thing: the actions guard leaves it to the model at 0.95 (p 0.010).
        trap = await cache.lookup(chat("how do i remove my payment method please"))
        assert trap.status == "miss" and trap.stage == "guard" and "verifier p 0.0" in trap.reason, trap.reason
    finally:
        await cache.close()
        await embedder.aclose()


async def test_the_verifier_overrules_a_negation_word_but_never_an_antonym(tmp_path, clock, model):
    strict = CE_POLICY.parent / "default-strict.yaml"  # the same model, without overrule
    for path, overrules in ((CE_POLICY, True), (strict, False)):
        cache, embedder = await _policy_cache(tmp_path, clock, model, path)
        try:
            await put(cache, chat("help me track my refund", tenant="a"))
            asked = await cache.lookup(chat("I do not know how to track my refund", tenant="a"))  # p 0.99
            if overrules:
                assert asked.status == "hit" and "overruling guard negation" in asked.reason, asked.reason
                assert cache.stats.snapshot()["categories"]["default"]["overruled_hits"] == 1
            else:
                assert asked.status == "miss" and asked.stage == "guard", asked.reason
            # The model scores this antonym pair 0.96: only the guard keeps it out.
            await put(cache, chat("How do I lock my iPhone screen rotation?", tenant="b"))
            antonym = await cache.lookup(chat("How do I unlock my iPhone screen rotation?", tenant="b"))
            assert antonym.status == "miss" and antonym.stage == "guard", antonym.reason
            # A negation that changes the question: lifted, and refused by the model (p 0.008).
            await put(cache, chat("Is it safe to eat raw eggs?", tenant="c"))
            negated = await cache.lookup(chat("Is it not safe to eat raw eggs?", tenant="c"))
            assert negated.status == "miss" and negated.stage == "guard", negated.reason
            assert ("verifier p 0.0" in negated.reason) is overrules, negated.reason
        finally:
            await cache.close()
            await embedder.aclose()


NEAR_MISSES = [  # (cached, asked): another question with the same words around it
    ("How do I cancel my subscription?", "hi, how do I renew my subscription? please"),
    ("How do I cancel my subscription?", "How can I cancel my order?"),
    ("How do I change my shipping address?", "How do I change my billing address?"),
    # Served by the model alone (p 0.85, 0.80); the actions guard leaves them to it only at 0.95.
    ("How do I cancel my subscription?", "How do I pause my subscription?"),
    ("deleting freemium account", "edit info on freemium account"),
    # Held-out Bitext groups: the misspelt request word went unseen and the model served it (p 0.82, 0.87).
    ("what do I have to do to deleet a premium account?", "update Premium account"),
    ("what do I have to do to deleet a premium account?", "edit premium account"),
    # MeanCache's follow-up, served at p 0.79 while both orders shared one run (session 14).
    ("Tell me about the history of the Internet.", "who developed the World Wide Web"),
]
KNOWN_NEAR_MISSES = [  # still served by the shipped model and default policy: evaluation/RESULTS.md
    ("How can I track my order?", "Where can I see my order history?"),
    ("modifying Gold account", "i need help to remove my Gold account"),  # p 0.97: over the actions bar
    ("How do I reset my password?", "how do i recover my username"),  # cosine 0.55-0.60: since pre-filter 0.55
    ("What is the capital of the Dominican Republic?", "What is the capital of Dominica?"),  # p 0.90
]
# Other words one letter or one prefix away, and counts the numbers guard must read (session 13's
# review: the first typo reading served the first fifteen at p 0.82-0.99, the model alone the chest
# pain pair at 0.79, the "one dose" pair after "one" was forgiven at 0.80, World War I at 0.86).
ONE_LETTER_OR_PREFIX = [
    ("Is ethanol safe to drink?", "Is methanol safe to drink?"),
    ("What is the boiling point of ethanol?", "What is the boiling point of methanol?"),
    ("What does GDP stand for?", "What does GDPR stand for?"),
    ("What is the contribution limit for an FSA?", "What is the contribution limit for a TFSA?"),
    ("How do I connect to a server with FTP?", "How do I connect to a server with SFTP?"),
    ("How do I define variables in CSS?", "How do I define variables in SCSS?"),
    ("How do I compress a folder with zip?", "How do I compress a folder with gzip?"),
    ("How do I convert mph to m/s?", "How do I convert kmph to m/s?"),
    ("What is a directed cyclic graph?", "What is a directed acyclic graph?"),
    ("How do I use React hooks?", "How do I use Preact hooks?"),
    ("How do I kill a process by name in Linux?", "How do I pkill a process by name in Linux?"),
    ("Who was Ben Johnson?", "Who was Ben Jonson?"),
    ("What did Ben Johnson write?", "what did ben jonson write?"),
    ("How do I set up Gmail on my iPhone?", "How do I set up Mail on my iPhone?"),
    ("What is a typical presentation of pneumonia?", "What is an atypical presentation of pneumonia?"),
    ("Is chest pain a typical symptom of a heart attack?", "Is chest pain an atypical symptom of a heart attack?"),
    ("What should I do if I missed multiple doses of my antibiotics?",
     "What should I do if I missed one dose of my antibiotics?"),
    ("What are the main causes of World War II?", "Explain the reasons behind World War I."),
    # Served at p 0.79 until the diff rule read names with a letter or two in front (semcache.decide.names).
    ("How do I install packages with npm?", "How do I install packages with pnpm?"),
    # Acronyms that are WordPiece words, which that rule leaves to the model (refused by it in session 14).
    ("How do I back up my SQL database?", "How do I back up my MySQL database?"),
    ("How many CPU cores does this instance have?", "How many vCPU cores does this instance have?"),
    ("How do I activate my SIM card?", "How do I activate my eSIM card?"),
]


async def _served(tmp_path, clock, model, pairs) -> list[tuple[str, str, float]]:
    cache, embedder = await _policy_cache(tmp_path, clock, model, CE_POLICY)
    try:
        served = []
        for cached, asked in pairs:
            await put(cache, chat(cached, tenant=asked))  # one tenant per pair: only its own candidate
            result = await cache.lookup(chat(asked, tenant=asked))
            if result.status == "hit":
                served.append((asked, cached, result.probability))
        return served
    finally:
        await cache.close()
        await embedder.aclose()


async def test_a_question_that_differs_in_its_key_word_is_not_served_another_ones_answer(tmp_path, clock, model):
    # The previous model served all five of these and the first at p 0.94 (filler words raised it).
    assert await _served(tmp_path, clock, model, NEAR_MISSES) == []


async def test_another_word_one_letter_or_one_prefix_away_is_not_served_but_a_slip_is(tmp_path, clock, model):
    assert await _served(tmp_path, clock, model, ONE_LETTER_OR_PREFIX) == []
    slips = [("check allowed payment methods", "check allowed pamyent methods"),
             ("How do I update my shipping address?", "how do i update my shipping adress")]
    assert [asked for asked, _, _ in await _served(tmp_path, clock, model, slips)] == [b for _, b in slips]


@pytest.mark.xfail(strict=True, reason="known wrong answers of the shipped cross-encoder: one changed key word "
                                       "between close intents; evaluation/RESULTS.md")
async def test_known_key_word_near_misses_are_not_served(tmp_path, clock, model):
    assert await _served(tmp_path, clock, model, KNOWN_NEAR_MISSES) == []


async def test_the_shipped_default_on_the_hand_written_pairs_does_not_regress(tmp_path, clock, model):
    """Ratchets on the shipped model + default policy (evaluation/RESULTS.md): a retrain that serves
    more written traps or near misses, or fewer rewordings, fails here."""
    import json
    from collections import Counter

    root = DEFAULT_DIR.parents[2] / "evaluation"
    rows = [json.loads(line) for name in ("traps.jsonl", "near_misses.jsonl")
            for line in (root / name).read_text().splitlines() if line.strip()]
    served: Counter = Counter()
    cache, embedder = await _policy_cache(tmp_path, clock, model, CE_POLICY)
    try:
        for i, row in enumerate(rows):
            await put(cache, chat(row["a"], tenant=f"t{i}"))  # one tenant per pair: only its own candidate
            served[row["kind"]] += (await cache.lookup(chat(row["b"], tenant=f"t{i}"))).status == "hit"
    finally:
        await cache.close()
        await embedder.aclose()
    kinds = Counter(row["kind"] for row in rows)
    assert kinds == {"key_word": 40, "reworded": 20, "near_repeat": 40, "negation": 30, "numbers": 30,
                     "entities": 25, "topic": 25}
    assert served["key_word"] <= 1 and served["negation"] + served["numbers"] + served["topic"] == 0
    assert served["entities"] <= 3
    assert served["reworded"] >= 13 and served["near_repeat"] >= 32, served


async def test_an_overruled_guard_needs_its_own_bar_not_the_cut_off(tmp_path, clock, model):
    # The model scores this pair 0.88 (both orders): above min_probability (0.75), below the overrule's 0.95.
    cache, embedder = await _policy_cache(tmp_path, clock, model, CE_POLICY)
    try:
        await put(cache, chat("How can I check my invoice?"))
        result = await cache.lookup(chat("I don't know how I can check my invoice"))
        assert result.status == "miss" and result.stage == "guard", result.reason
        assert "< 0.95" in result.reason, result.reason
        p = float(result.reason.split("verifier p ")[1].split()[0])
        assert cache.policies.get("default").verifier.min_probability < p < 0.95, result.reason
    finally:
        await cache.close()
        await embedder.aclose()
