"""The diff rule (semcache/decide/diffrule.py, semcache/decide/atoms.py): wrong answers the embedding cannot see.

Cache-level tests use the real embedder (all-MiniLM-L6-v2, int8 ONNX): the
failures they protect against are properties of that model (head+tail
truncation, unknown tokens), so a stand-in embedder could not show them.
"""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from evaluation.workloads.longpairs import (
    CODE_QUESTIONS, DOC_QUESTIONS, LONG_WORDS, RAG_QUESTIONS, code_file, document, rag_context,
)
from semcache import CacheRequest, ManualClock, SemanticCache, load_policies_text
from semcache.decide.atoms import atom_difference, atoms_in
from semcache.decide.diffrule import MAX_COMPARE_CHARS, MAX_MIDDLE, MAX_SPANS, SHARED_BODY, check, text_diff
from semcache.stores.memory import MemoryStore

POLICY = """
defaults:
  threshold: 0.90
  guards: {numbers: true, negation: true}
categories:
  nodiff:
    threshold: 0.85
    match: {metadata: {rule: nodiff}}
    guards: {diff: false}
  default: {}
"""
BODIES = {"document": (document, DOC_QUESTIONS), "code": (code_file, CODE_QUESTIONS), "rag": (rag_context, RAG_QUESTIONS)}
SIZES = {"1k": 800, "8k": 6000}  # words; ~0.75 words per engine token


@pytest.fixture(scope="module")
def real_embedder():
    from gpu_embed import EmbedderSettings, build_embedder

    embedder = build_embedder(EmbedderSettings(lru_size=0))
    yield embedder
    asyncio.run(embedder.aclose())


@pytest.fixture
async def real_cache(real_embedder):
    cache = SemanticCache(policies=load_policies_text(POLICY), store=MemoryStore(), embedder=real_embedder,
                          clock=ManualClock(), purge_interval_s=0)
    await cache.start()
    yield cache
    await cache.close()


def _req(text: str, **metadata: str) -> CacheRequest:
    return CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": text}]},
                        tenant="t", metadata=metadata)


async def _store_then_lookup(cache: SemanticCache, stored: str, asked: str, **metadata: str):
    first = await cache.lookup(_req(stored, **metadata))
    assert first.status == "miss"
    assert (await cache.store(_req(stored, **metadata), first, response=_answer(stored))).stored
    return await cache.lookup(_req(asked, **metadata))


def _answer(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text[-40:]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


# ------------------------------------------------------------------ item 1: long prompts
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", BODIES)
async def test_long_prompt_with_other_question_misses(real_cache, kind, size):
    make, questions = BODIES[kind]
    body = make(random.Random(f"{kind}{size}"), SIZES[size])
    asked, other = questions[0][0], questions[1][0]
    result = await _store_then_lookup(real_cache, f"{body}\n\n{asked}", f"{body}\n\n{other}")
    assert result.similarity is not None and result.similarity >= 0.90  # the embedding alone would serve it
    assert result.status == "miss", result.reason
    assert result.stage == "guard" and "diff" in result.reason


async def test_the_issue_example_question_after_a_400_word_document_misses(real_cache):
    body = document(random.Random(0), 400)
    result = await _store_then_lookup(
        real_cache, f"{body}\nQuestion: how many times does the word cache appear?",
        f"{body}\nQuestion: translate the document into French.")
    assert result.similarity is not None and result.similarity >= 0.90  # 0.95 with this document
    assert result.status == "miss", result.reason


@pytest.mark.parametrize("size", SIZES)
async def test_long_prompt_with_question_before_the_body_misses_on_other_question(real_cache, size):
    body = rag_context(random.Random(size), SIZES[size])
    result = await _store_then_lookup(real_cache, f"{RAG_QUESTIONS[0][0]}\n\n{body}", f"{RAG_QUESTIONS[2][0]}\n\n{body}")
    assert result.status == "miss", result.reason


@pytest.mark.parametrize("kind", ["document", "rag"])
@pytest.mark.parametrize("size", SIZES)
async def test_long_prompt_with_same_question_reworded_still_hits(real_cache, kind, size):
    make, questions = BODIES[kind]
    body = make(random.Random(f"{kind}{size}r"), SIZES[size])
    asked, reworded = questions[0]
    result = await _store_then_lookup(real_cache, f"{body}\n\n{asked}", f"{body}\n\n{reworded}")
    assert result.status == "hit", result.reason


@pytest.mark.parametrize("kind", BODIES)
async def test_long_prompt_whose_body_changed_in_the_middle_misses(real_cache, kind):
    make, questions = BODIES[kind]
    rng = random.Random(kind)
    head, tail = make(rng, 3000), make(rng, 3000)
    inserted = "Note: the figures in this section were withdrawn by the auditors and must be ignored."
    q = questions[0][0]
    result = await _store_then_lookup(real_cache, f"{head}\n\n{tail}\n\n{q}", f"{head}\n{inserted}\n{tail}\n\n{q}")
    assert result.status == "miss", result.reason


async def test_long_prompt_differing_only_in_case_and_whitespace_hits(real_cache):
    body = document(random.Random(5), 3000)
    asked = DOC_QUESTIONS[2][0]
    result = await _store_then_lookup(real_cache, f"{body}\n\n{asked}", "  " + f"{body}\n{asked.upper()}".replace(". ", ".   "))
    assert result.status == "hit", result.reason


async def test_long_prompt_rule_switched_off_is_the_old_behaviour(real_cache):
    body = document(random.Random(3), 2000)
    result = await _store_then_lookup(real_cache, f"{body}\n\n{DOC_QUESTIONS[0][0]}", f"{body}\n\n{DOC_QUESTIONS[1][0]}",
                                      rule="nodiff")
    assert result.category == "nodiff" and result.status == "hit", result.reason  # main served it too


# ------------------------------------------------------------------ item 2: words the embedder cannot see
@pytest.mark.parametrize("kind", LONG_WORDS)
async def test_prompts_differing_only_in_a_long_word_do_not_share_answers(real_cache, kind):
    make, template, _ = LONG_WORDS[kind]
    rng = random.Random(kind)
    result = await _store_then_lookup(real_cache, template.format(make(rng)), template.format(make(rng)))
    assert result.status == "miss", result.reason


async def test_prompts_differing_only_in_a_hash_do_not_share_answers(real_cache):
    # Same digits in the same places, other letters: the numbers guard sees nothing.
    a = "Which release has the commit hash 3fa9e2c4b1d07a6e5f8c9b2a1d3e4f5a6b7c8d9e?"
    b = a.replace("fa9e", "bc9d").replace("b1d", "a1e")
    result = await _store_then_lookup(real_cache, a, b)
    assert result.similarity is not None and result.similarity >= 0.90
    assert result.status == "miss" and "atoms" in result.reason


async def test_similarity_one_between_unequal_texts_is_not_trusted(real_cache):
    rng = random.Random(7)
    seq_a, seq_b = ("".join(rng.choice("ACGT") for _ in range(150)) for _ in range(2))
    result = await _store_then_lookup(real_cache, f"What protein does {seq_a} encode?", f"What protein does {seq_b} encode?")
    assert result.similarity is not None and result.similarity >= 0.9999  # one unknown token each
    assert result.status == "miss", result.reason


async def test_prompts_differing_only_in_an_unknown_symbol_do_not_share_answers(real_cache):
    result = await _store_then_lookup(real_cache, "Translate 🍎 to French", "Translate 🍌 to French")
    assert result.similarity is not None and result.similarity >= 0.9999
    assert result.status == "miss", result.reason


async def test_a_change_the_embedder_cannot_see_is_not_judged_by_it():
    policy = load_policies_text(POLICY)["default"]
    body = document(random.Random(4), 200)
    # Egyptian hieroglyphs are category Lo (not atoms) and unknown tokens to MiniLM.
    verdict = await check(policy, f"{body} Translate 𓀀 please.", f"{body} Translate 𓁐 please.", 1.0, _same_vector)
    assert not verdict.passed and "invisible" in verdict.reason


@pytest.mark.parametrize("kind", LONG_WORDS)
async def test_same_long_word_with_question_reworded_still_hits(real_cache, kind):
    make, template, reworded = LONG_WORDS[kind]
    value = make(random.Random(kind + "x"))
    result = await _store_then_lookup(real_cache, template.format(value), reworded.format(value))
    assert result.status == "hit", result.reason


# ------------------------------------------------------------------ atoms, one test per kind
@pytest.mark.parametrize(("a", "b"), [
    ("Cancel order 550e8400-e29b-41d4-a716-446655440000 now", "Cancel order 550e8400-e29b-41d4-a716-446655440001 now"),
    ("Open https://example.com/docs/v2/install please", "Open https://example.com/docs/v3/install please"),
    ("Open https://example.com/a?page=x please", "Open https://example.com/a?page=y please"),
    ("Mail alice@example.com about it", "Mail alicia@example.com about it"),
    ("Read /etc/nginx/nginx.conf first", "Read /etc/nginx/sites.conf first"),
    ("Read src/app/main.py first", "Read src/app/util.py first"),
    ("Read C:\\Users\\bob\\notes.txt first", "Read C:\\Users\\rob\\notes.txt first"),
    ("Decode aGVsbG8gd29ybGQgdGhpcyBpcyBsb25n now", "Decode aGVsbG8gd29ybGQgdGhhdCBpcyBsb25n now"),
    ("Translate ACGTTGCAACGTTGCAACGTTGCAAC please", "Translate ACGTTGCAACGTTGCAACGTTGCAAG please"),
    ("Check commit deadbeefcafe12 today", "Check commit deadbeefcafe13 today"),
    ("Check commit 9fceb02 today", "Check commit 9fceb03 today"),
    ("What does compute_monthly_revenue return", "What does compute_weekly_revenue return"),
    ("What does computeMonthlyRevenue return", "What does computeWeeklyRevenue return"),
    ("Run user42 job", "Run user43 job"),
    ("Add 1,000 to it", "Add 1,001 to it"),
    ("Add 1e3 to it", "Add 1e4 to it"),
    ("Add 0x10 to it", "Add 0x11 to it"),
    ("Add 3.10 to it", "Add 3.1 to it"),
    ("Set it to -5", "Set it to 5"),
    ("Add 2 and 2", "Add 2"),
    ("Translate 🍎 to French", "Translate 🍌 to French"),
    ("Who was the 2nd president?", "Who was the first president?"),
    ("Who was the 6th president?", "Who was the seventh president?"),
    ("Who was the 1st and 2nd president?", "Who was the first president?"),
])
def test_each_kind_of_atom_must_agree(a, b):
    assert atom_difference(a, b), (atoms_in(a), atoms_in(b))


@pytest.mark.parametrize(("a", "b"), [
    ("Add 1,000 to it", "Add 1000 to it"),
    ("Add 1e3 to it", "Add 1000 to it"),
    ("Add 1_000 to it", "add 1000 to it."),
    ("Add 0x10 to it", "Add 16 to it"),
    ("Add 0b10000 and 0o20", "Add 16 and 16"),
    ("Costs $1,000.50 (before tax)", "Costs 1000.50 before tax"),
    ("Order 550E8400-E29B-41D4-A716-446655440000!", "order 550e8400-e29b-41d4-a716-446655440000"),
    ("It is 5% more", "It is +5 % more"),
    ("How imminent is World War three?", "Are we heading toward World War 3?"),
    # Ordinals in digits on one side, spelled on the other (a common held-out rewording).
    ("what is nicki minaj's first album?", "what was nicki minaj 1st album?"),
    ("what is the 2nd largest american city?", "what city in the us is the second largest?"),
    ("Who won the 3rd and the twelfth race?", "who won the third and 12th race"),
    ("what started world war ii", "what started world war 2"),  # a Roman numeral is its number
    ("Louis XIV", "Louis 14"),
    ("Why is it marked as improvement/clarification needed?", "Why is it marked as needing improvement?"),
])
def test_numbers_and_ids_in_equivalent_forms_agree(a, b):
    assert atom_difference(a, b) == []


def test_plain_prose_has_no_atoms():
    assert atoms_in("How do I reset my password on the new laptop?") == ()


# ------------------------------------------------------------------ the diff itself
def test_changed_spans_carry_context_for_the_verifier():
    body = document(random.Random(1), 1500)
    diff = text_diff(f"{body}\nQuestion: translate the document into French.",
                     f"{body}\nQuestion: how many times does the word cache appear?")
    assert diff.bounded and len(diff.spans) == 1 and diff.shared > SHARED_BODY
    span = diff.spans[0]
    assert "French" in span.query and "cache appear" in span.cached
    assert span.query.endswith("French .") and "Question" in span.cached


def test_unrelated_8k_token_texts_are_exact_only_within_bounds():
    rng = random.Random(2)
    a, b = document(rng, 6000), document(rng, 6000)
    started = time.perf_counter()
    diff = text_diff(a, b)
    assert not diff.bounded and diff.changed > MAX_MIDDLE
    assert time.perf_counter() - started < 2.0  # linear trims only; measured ~10 ms (bench_diffrule)


async def test_long_prompt_with_edits_in_many_places_is_exact_only():
    policy = load_policies_text(POLICY)["default"]
    words = document(random.Random(6), 3000).split(" ")
    edited = list(words)
    for at in range(100, 100 + 200 * (MAX_SPANS + 1), 200):
        edited[at] = "purple"
    verdict = await check(policy, " ".join(edited), " ".join(words), 0.99, _same_vector)
    assert not verdict.passed and "separate changes" in verdict.reason


async def test_long_prompt_with_a_large_changed_block_is_exact_only():
    policy = load_policies_text(POLICY)["default"]
    rng = random.Random(8)
    body, tail = document(rng, 3000), document(rng, 40)
    verdict = await check(policy, f"{body}\n{tail}", f"{body}\n{document(rng, 40)}", 0.99, _same_vector)
    assert not verdict.passed and "tokens differ" in verdict.reason


async def test_texts_over_the_compare_limit_are_exact_only():
    policy = load_policies_text(POLICY)["default"]
    long_text = "word " * (MAX_COMPARE_CHARS // 5 + 10)
    verdict = await check(policy, long_text + "a", long_text + "b", 0.99, _same_vector)
    assert not verdict.passed and "exact-only" in verdict.reason


# ------------------------------------------------------------------ properties
async def _same_vector(texts):
    """The worst case: an embedder that sees no difference at all."""
    return np.ones((len(texts), 4), dtype=np.float32) / 2.0


_ATOM = st.one_of(
    st.uuids().map(str),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.binary(min_size=16, max_size=64).map(lambda b: b.hex()),
    st.from_regex(r"https://[a-z]{3,8}\.com/[a-z0-9]{1,12}", fullmatch=True),
    st.from_regex(r"/[a-z]{2,8}/[a-z]{2,8}\.(py|txt|conf)", fullmatch=True),
    st.text("ACGT", min_size=101, max_size=300),
)
_PROSE = [document(random.Random(i), 60) for i in range(3)] + [
    "What is the capital of France?", code_file(random.Random(9), 120)]


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.sampled_from(_PROSE), atom=_ATOM, where=st.floats(0, 1))
async def test_inserting_a_differing_atom_anywhere_never_hits(text, atom, where):
    words = text.split(" ")
    at = int(where * len(words))
    changed = " ".join(words[:at] + [atom] + words[at:])
    policy = load_policies_text(POLICY)["default"]
    for a, b in ((text, changed), (changed, text)):
        verdict = await check(policy, a, b, 1.0, _same_vector)
        assert not verdict.passed


@hsettings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=0, max_value=10**15))
def test_an_integer_written_in_any_form_is_one_atom(n):
    forms = [str(n), f"{n:,}", f"{n:_}", hex(n), oct(n), bin(n)]
    if n and n % 1000 == 0:
        forms.append(f"{n // 1000}e3")
    atoms = {atoms_in(f"take {form} items") for form in forms}
    assert len(atoms) == 1, forms


@hsettings(max_examples=100, deadline=None)
@given(a=st.text(max_size=200), b=st.text(max_size=200))
def test_atom_difference_is_symmetric_and_empty_on_equal_texts(a, b):
    assert atom_difference(a, b) == atom_difference(b, a)
    assert atom_difference(a, a) == []
