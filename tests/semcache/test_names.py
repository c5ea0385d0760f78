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


@hsettings(max_examples=200, deadline=None)
@given(a=st.text(max_size=120), b=st.text(max_size=120))
def test_symmetric_and_never_on_one_text(a, b):
    assert (front_extended(a, b) is None) == (front_extended(b, a) is None)
    assert front_extended(a, a) is None


def test_a_hostile_pair_of_made_up_words_costs_milliseconds():
    rng = random.Random(1)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(7)) for _ in range(2000)]
    a, b = " ".join(words)[:16000], " ".join("x" + w for w in reversed(words))[:16000]
    started = time.perf_counter()
    assert front_extended(a, b) is not None
    assert time.perf_counter() - started < 0.1
