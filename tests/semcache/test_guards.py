"""False-hit guards: each catches its trap and lets paraphrases through."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcache.decide.guards import _ACTION_OF, english_words, action_conflict, actions_in, check, identifiers_in, numbers_in
from semcache.config.policy import Guards

ALL = Guards(numbers=True, negation=True, entities=True, identifiers=True)


@pytest.mark.parametrize("a,b,guard", [
    ("how do I turn on 2FA", "how do I turn off 2FA", "negation"),
    ("sort the list ascending", "sort the list descending", "negation"),
    ("should I enable logging", "should I disable logging", "negation"),
    ("I do like this", "I don't like this", "negation"),
    ("include tests in the build", "exclude tests from the build", "negation"),
    ("what is 15% of 200", "what is 15% of 300", "numbers"),
    ("flights on March 3", "flights on March 4", "numbers"),
    ("flights in March", "flights in April", "numbers"),
    ("changes in python 3.11", "changes in python 3.12", "numbers"),
    ("top five movies", "top ten movies", "numbers"),
    ("Is chest pain a typical symptom of a heart attack?", "Is chest pain an atypical symptom of a heart attack?",
     "negation"),  # a negating prefix (the model served this pair at p 0.79)
    ("is it safe to eat raw eggs", "is it unsafe to eat raw eggs", "negation"),
    ("is this legal in texas", "is this illegal in texas", "negation"),
    ("what is a directed cyclic graph", "what is a directed acyclic graph", "negation"),
    ("I have one account", "I have two accounts", "numbers"),
    ("book one ticket", "book 2 tickets", "numbers"),
    ("book 1 ticket", "book tickets", "numbers"),
    ("who was the first president", "who was the president", "numbers"),
    ("add one and 3", "add 3", "numbers"),  # "one" is forgiven only where the other text has no number
    # ... nor a count the guard cannot read (a review found the model served this one at p 0.80)
    ("What should I do if I missed one dose of my antibiotics?",
     "What should I do if I missed multiple doses of my antibiotics?", "numbers"),
    ("can I bring one bag", "can I bring several bags", "numbers"),
    ("buy thirteen eggs", "buy fourteen eggs", "numbers"),
    # Roman numerals (a held-out MeanCache pair: the model served World War I's causes at p 0.86)
    ("What are the main causes of World War II?", "Explain the reasons behind World War I.", "numbers"),
    ("who won world war ii", "who won world war i", "numbers"),
    ("How many wives did Henry VIII have?", "How many wives did Henry VII have?", "numbers"),
    ("Who won Super Bowl XIV?", "Who won Super Bowl XV?", "numbers"),
    ("how to use df.sort_values", "how to use df.sort_index", "identifiers"),
    ("what does `map` do", "what does `filter` do", "identifiers"),
    ("Who founded Apple?", "Who founded Microsoft?", "entities"),
])
def test_guard_rejects_trap(a, b, guard):
    verdict = check(ALL, a, b)
    assert not verdict.passed and verdict.guard == guard, verdict


@pytest.mark.parametrize("a,b", [
    ("how do I reset my password", "how can I reset my password?"),
    ("what is 1,000 in binary", "what's 1000 in binary"),
    ("explain python 3.12 changes", "what changed in python 3.12"),
    ("I can't log in", "I cannot log in"),
    # "one" as a pronoun or determiner, the other text stating no 1 (calibration-split rewordings)
    ("How can I transfer my bookmarks from one computer to another?", "Transfering bookmarks to a new computer?"),
    ("Is there a search engine that finds images like the one I give?", "Searching the web with an image"),
    ("book one ticket", "book 1 ticket"),
    ("what started world war ii", "what started world war 2"),  # a Roman numeral is its number
    ("Can I see the X-ray from DC?", "Can I see the X-ray from DC please?"),  # no numeral in either
])
def test_guard_passes_paraphrase(a, b):
    assert check(ALL, a, b).passed


def test_disabled_guards_do_not_reject():
    none = Guards(numbers=False, negation=False, entities=False, identifiers=False)
    assert check(none, "turn on 2FA in 2021", "turn off 2FA in 2022").passed


def test_extractors():
    assert numbers_in("v1.2.3 released on 2024-01-05, cost 1,200") >= {"1.2.3", "2024-01-05", "1200"}
    assert {"snake_case", "camelCase", "os.path.join"} <= identifiers_in("use snake_case, camelCase or os.path.join()")


ACTIONS_ON = Guards(actions=True)


@pytest.mark.parametrize(("a", "b", "conflict"), [
    ("edit info on freemium account", "deleting freemium account", "edit/delete"),
    ("How do I pause my subscription?", "How do I cancel my subscription?", "pause/delete"),
    ("How do I change my password?", "How do I reset my password?", "edit/recover"),
    ("I need to track my refund", "I need to renew my plan", "refund/renew"),
    ("How do I Sign Up for Gold?", "How do I cancel Gold?", "create/delete"),  # and track: one conflict is enough
])
def test_the_actions_guard_refuses_another_request_on_the_same_thing(a, b, conflict):
    verdict = check(ACTIONS_ON, a, b)
    assert not verdict.passed and verdict.guard == "actions"
    assert verdict.detail == conflict  # what the new query asks / what the cached one asked
    assert check(Guards(), a, b).passed  # off by default


@pytest.mark.parametrize(("a", "b"), [
    ("remove my account", "cancel my account"),  # one request, two words
    ("I cancelled my order", "cancel order please"),
    ("updating my address", "modify my address"),
    ("I want to sign up", "help me register"),
    ("How do I Sign Up?", "help me register"),  # any case and spelling of the two-word request
    ("sign-up   for the newsletter", "registration for the newsletter"),
    ("track my order", "where is my order"),  # a request named on one side only
    ("How do I update my payment method?", "update payment method"),
])
def test_the_actions_guard_lets_one_request_in_other_words_pass(a, b):
    assert check(ACTIONS_ON, a, b).passed


@pytest.mark.parametrize(("a", "b", "conflict"), [
    # Bitext's held-out edit/delete groups: misspelt, the request word went unseen and was served
    ("update Premium account", "what do I have to do to deleet a premium account?", "edit/delete"),  # swapped
    ("editing data on pro account", "acncel pro account", "edit/delete"),
    ("modifying my free account", "I have to edlete the free account", "edit/delete"),
    ("udpate my address", "remove my address", "edit/delete"),
    ("help me delte my account", "change my account", "delete/edit"),  # a letter dropped
    ("cancell my plan", "renew my plan", "delete/renew"),  # a letter added
])
def test_the_actions_guard_reads_a_misspelt_request_word(a, b, conflict):
    assert check(ACTIONS_ON, a, b).detail == conflict


@pytest.mark.parametrize("text", [
    "is there a crate for my account",  # create with a letter dropped, but a word
    "remote access to my account", "what are the chances of a refund",  # one letter replaced: words too
    "cirrect information",  # a slip of no request word
])
def test_the_actions_guard_never_reads_a_word_as_a_slip(text):
    assert actions_in(text) <= {"refund"}


def test_a_huge_word_is_never_checked_for_slips(monkeypatch):
    from semcache.decide import guards

    seen = []  # a slip check builds every one-letter variant of a word: 40 kB -> 1.6 GB of strings
    monkeypatch.setattr(guards, "_dropped", lambda w: seen.append(len(w)) or set())
    word = "x" * 40_000
    assert actions_in(f"delete {word} please") == {"delete"} and action_conflict(word + "s", "edit " + word) is None
    assert actions_in("cancell it") == set() and seen and max(seen) <= len("cancellation") + 1


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(english_words())))
def test_an_english_word_is_a_request_only_when_listed(word):
    assert actions_in(word) == ({_ACTION_OF[word]} if word in _ACTION_OF else set())


_REQUEST_WORDS = ["delete", "cancel", "edit", "update", "pause", "renew", "track", "refund", "my", "account",
                  "order", "how", "do", "i", "the", "subscription", "please", "reset", "password"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_REQUEST_WORDS), max_size=8), st.lists(st.sampled_from(_REQUEST_WORDS), max_size=8))
def test_the_actions_guard_is_symmetric_and_never_refuses_a_text_its_own_words(a, b):
    a, b = " ".join(a), " ".join(b)
    assert (action_conflict(a, b) is None) == (action_conflict(b, a) is None)
    assert action_conflict(a, a) is None and action_conflict(a, a + " " + b) is None  # adding a request is not one replaced


@pytest.mark.parametrize(("text", "numbers"), [
    ("World War II", {"2"}), ("world war i", {"1"}), ("Louis XIV", {"14"}), ("Part IV and part IX", {"4", "9"}),
    ("Can I go?", set()), ("Washington DC", set()), ("the CLI and size XL", set()), ("X-ray", set()),
    ("mix it in the mid", set()), ("Xi Jinping", set()), ("War is over", set()),
])
def test_roman_numerals_are_numbers_and_acronyms_and_the_pronoun_are_not(text, numbers):
    assert numbers_in(text) == frozenset(numbers)


def test_a_hostile_pair_below_the_worker_thread_size_is_checked_in_milliseconds():
    """Guards run on the event loop below 16k characters: every guard reads a text once (cached),
    and a candidate's check is then set lookups. Measured ~21 ms for this pair on 2 busy cores."""
    import random
    import string
    import time

    rng = random.Random(0)

    def made_up(prefix: str) -> str:
        return " ".join(prefix + "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
                        for _ in range(2000))[:16000]

    a, b = made_up("un"), made_up("")
    started = time.perf_counter()
    check(Guards(numbers=True, negation=True, actions=True), a, b)
    assert time.perf_counter() - started < 0.25
