"""Names one or two letters apart at their front (semcache.decide.names), and the diff rule refusing them."""

from __future__ import annotations

import random
import string
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from semcache import load_policies_text
from semcache.decide.diffrule import check
from semcache.decide.guards import english_words
from semcache.decide.names import front_extended

POLICY = """
categories:
  default: {threshold: 0.5}
"""


@pytest.mark.parametrize(("a", "b", "found"), [
    ("How do I install packages with npm?", "How do I install packages with pnpm?", "npm/pnpm"),
    ("How do I connect to a server with FTP?", "How do I connect to a server with SFTP?", "ftp/sftp"),
    ("How do I define variables in CSS?", "How do I define variables in SCSS?", "css/scss"),
    ("What is the contribution limit for an FSA?", "What is the contribution limit for a TFSA?", "fsa/tfsa"),
])
def test_a_name_with_letters_in_front_is_another_name_either_way_round(a, b, found):
    assert front_extended(a, b) == found and front_extended(b, a) == found


@pytest.mark.parametrize(("a", "b"), [
    ("zip a folder", "gzip a folder"),  # an English word in front of: left to the model
    ("set up mail on my phone", "set up Gmail on my phone"),  # a Gmail FAQ's rewordings say "mail"
    ("I have to see your payment options", "ihave to see ur payment options"),  # words run together
    ("react hooks", "reactjs hooks"),  # an ending: the word's form
    ("What does GDP stand for?", "What does GDPR stand for?"),
    ("install npm and pnpm", "install pnpm and npm"),  # each text has both
    ("How do I install packages with npm?", "how do i install packages with npm"),
    ("use pnpm", "use a different tool"),
])
def test_words_a_reader_would_take_for_the_same_thing_or_the_models_are_not_names(a, b):
    assert front_extended(a, b) is None


async def _same_vector(texts):
    return np.ones((len(texts), 4)) / 2.0


async def test_the_diff_rule_refuses_another_name_and_says_which():
    policy = load_policies_text(POLICY)["default"]
    verdict = await check(policy, "How do I install packages with pnpm?", "How do I install packages with npm?",
                          0.97, _same_vector)
    assert not verdict.passed and verdict.guard == "atoms" and "npm/pnpm" in verdict.reason
    off = policy.guards.model_copy(update={"diff": False})
    assert (await check(policy.model_copy(update={"guards": off}), "with pnpm", "with npm", 0.97, _same_vector)).passed


@hsettings(max_examples=200, deadline=None)
@given(base=st.sampled_from(sorted(english_words())[:4000:7]), front=st.text(string.ascii_lowercase, min_size=1,
                                                                                  max_size=2))
def test_a_word_with_an_english_word_behind_its_front_is_never_a_name_here(base, front):
    assert front_extended(f"how do I use {base}", f"how do I use {front}{base}") is None


_NAMES = ["npm", "pnpm", "ftp", "sftp", "css", "scss", "fsa", "tfsa", "how", "do", "I", "use", "with", "the",
          "mail", "gmail", "zip", "gzip", "and"]


@hsettings(max_examples=300, deadline=None)
@given(a=st.lists(st.sampled_from(_NAMES), max_size=8), b=st.lists(st.sampled_from(_NAMES), max_size=8))
def test_symmetric_and_never_on_one_text(a, b):
    a, b = " ".join(a), " ".join(b)
    assert front_extended(a, b) == front_extended(b, a)
    assert front_extended(a, a) is None
    pairs = {("npm", "pnpm"), ("ftp", "sftp"), ("css", "scss"), ("fsa", "tfsa")}
    wa, wb = set(a.split()), set(b.split())
    expected = sorted(f"{x}/{y}" for x, y in pairs if (x in wa - wb and y in wb - wa) or (x in wb - wa and y in wa - wb))
    assert front_extended(a, b) == (expected[0] if expected else None)


def test_the_longest_texts_the_diff_rule_compares_cost_milliseconds():
    from semcache.decide import names
    from semcache.decide.diffrule import MAX_COMPARE_CHARS

    rng = random.Random(1)
    a, b = ("".join(rng.choice(string.ascii_lowercase + "  ") for _ in range(MAX_COMPARE_CHARS)) for _ in "ab")
    names._words.cache_clear()
    started = time.perf_counter()
    front_extended(a, b)
    assert time.perf_counter() - started < 0.25  # measured ~25 ms; it runs in the diff rule's worker thread


def test_without_the_vocabulary_the_rule_is_off(monkeypatch):
    from semcache.decide import names

    monkeypatch.setattr(names, "english_words", lambda: frozenset())
    assert front_extended("set up mail", "set up gmail") is None
    assert front_extended("install with npm", "install with pnpm") is None
