"""The cross-encoder reads a word misspelt on one side as the other side spells it (semcache.verifier.typos)."""

from __future__ import annotations

import random
import string
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semcache.decide.guards import english_words
from semcache.verifier.cross_encoder import DEFAULT_DIR, CrossEncoderVerifier
from semcache.verifier.typos import HEAD_WORDS, fold


@pytest.mark.parametrize(("slip", "right"), [
    ("How do I update my shipping adress?", "How do I update my shipping address?"),  # a doubled letter once
    ("check allowed pamyent methods", "check allowed payment methods"),  # two neighbours swapped
    ("where is the nearest pharmaccy", "where is the nearest pharmacy"),  # a letter typed twice
    ("who was lincoln's secretary of the traesury?", "who was lincoln's secretary of the treasury"),
    ("Recieve my parcel", "receive my parcel"),  # the text's first word may be capitalised
])
def test_a_slip_of_a_word_the_other_text_has_is_read_as_that_word(slip, right):
    folded, other = fold(slip, right)
    assert folded.lower().rstrip("?") == right.lower().rstrip("?") and other == right
    assert fold(right, slip) == (right, folded)  # either side


@pytest.mark.parametrize(("a", "b"), [
    ("what are the chances", "what are the changes"),  # both English words
    ("who won the rece", "who won the race"),  # one letter replaced: never
    ("flights aborad", "flights abroad or aboard"),  # a slip of two of their words: ambiguous
    ("who is jon", "who is john"),  # three letters: too short to tell a slip from a name
    ("read the " + "x" * 30, "read the " + "x" * 29),  # past MAX_WORD letters: never a slip
    # Other words one letter away (a review found the first, wider rule served each of these):
    ("Is methanol safe to drink?", "Is ethanol safe to drink?"),  # the first letter
    ("compress a folder with gzip", "compress a folder with zip"),
    ("how do I pkill a process by name", "how do I kill a process by name"),
    ("convert kmph to m/s", "convert mph to m/s"),
    ("is chest pain an atypical symptom", "is chest pain a typical symptom"),
    ("What does GDPR stand for?", "What does GDP stand for?"),  # acronyms
    ("connect to a server with SFTP", "connect to a server with FTP"),
    ("What did Ben Jonson write?", "What did Ben Johnson write?"),  # a name
    ("what did ben jonson write?", "what did ben johnson write?"),  # written small: "h" is no doubled letter
    ("How do I set up Gmail on my iPhone?", "How do I set up Mail on my iPhone?"),
    ("use hathor", "use hathors"),  # the other word is no English word either: nothing to read it as
])
def test_words_that_are_not_one_clear_slip_stay_as_written(a, b):
    assert fold(a, b)[0] == a


def test_only_the_words_the_model_can_see_are_read():
    filler = " ".join(["word"] * HEAD_WORDS)
    folded, _ = fold(f"{filler} adress", "my address")
    assert folded.endswith(" adress")  # past the head: the model never reads it
    assert fold(f"adress {filler}", "my address")[0].startswith("address ")


def test_a_hostile_pair_costs_milliseconds():
    rng = random.Random(0)

    def made_up() -> str:
        return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 12)))
                        for _ in range(300))[:2000]

    a, b = made_up(), made_up()
    started = time.perf_counter()
    fold(a, b)
    fold("x" * 2000, "x" * 1999)
    assert time.perf_counter() - started < 0.1  # ~2-6 ms measured on 2 busy cores


_ENGLISH = sorted(w for w in english_words() if len(w) >= 4)


@given(st.lists(st.sampled_from(_ENGLISH), min_size=1, max_size=8), st.lists(st.sampled_from(_ENGLISH), max_size=8))
def test_english_words_are_never_rewritten(ours, theirs):
    text = " ".join(ours)
    assert fold(text, " ".join(theirs))[0] == text


@given(st.text(max_size=80))
def test_a_text_against_itself_is_unchanged(text):
    assert fold(text, text) == (text, text)


@pytest.mark.skipif(not (DEFAULT_DIR / "model.onnx").exists(), reason="no trained cross-encoder")
def test_the_model_scores_a_slip_as_the_word_spelt_right():
    base = CrossEncoderVerifier.load()
    model = CrossEncoderVerifier(base._session, base._tokenizer_json, base.card, memo_size=0)
    cached = "How do I update the shipping address on my order?"
    slip = "how do i update the shipping adress on my order"
    spelt = "how do i update the shipping address on my order"
    for both in (False, True):
        assert model.probability(slip, cached, 0.9, both_orders=both) == pytest.approx(
            model.probability(spelt, cached, 0.9, both_orders=both), abs=1e-12)
    # What the model alone made of the slip: the fold is what lifts it.
    assert base.scores([(spelt, cached)])[0] > base.scores([(slip, cached)])[0]
