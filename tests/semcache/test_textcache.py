"""The per-text cache the guards read through: bounded by characters, never keeps long texts."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from semcache.decide import guards
from semcache.textcache import LARGEST, per_text


def _counting(**kw):
    calls = []

    @per_text(**kw)
    def length(text: str) -> int:
        calls.append(text)
        return len(text)

    return length, calls


def test_a_text_is_read_once_while_it_is_remembered():
    length, calls = _counting()
    assert [length("abc"), length("abc"), length("de")] == [3, 3, 2]
    assert calls == ["abc", "de"]
    info = length.cache_info()
    assert (info.hits, info.misses, info.currsize, info.chars) == (1, 2, 2, 5)


def test_the_least_recently_used_texts_go_when_the_characters_run_over():
    length, calls = _counting(chars=10)
    for text in ("aaaa", "bbbb", "aaaa", "cccc"):  # 12 characters: "bbbb" is the least recently used
        length(text)
    assert length.cache_info().chars == 8
    length("aaaa"), length("cccc")
    assert calls == ["aaaa", "bbbb", "cccc"]
    length("bbbb")
    assert calls[-1] == "bbbb"


def test_a_text_longer_than_the_largest_is_never_kept():
    length, calls = _counting()
    long = "x" * (LARGEST + 1)
    assert length(long) == LARGEST + 1 and length(long) == LARGEST + 1
    assert len(calls) == 2 and length.cache_info().currsize == 0


def test_the_guards_keep_no_overlong_text_and_stay_within_their_budget():
    big = " ".join(f"word{i} unsafe" for i in range(30_000))  # ~360k characters
    guards._negation_profile.cache_clear()
    guards._negation_profile(big)
    assert guards._negation_profile.cache_info().currsize == 0
    for i in range(60):  # 60 texts of ~100k characters: 6M characters offered
        guards._negation_profile(f"{i} " + "is it safe " * 9_000)
    info = guards._negation_profile.cache_info()
    assert info.chars <= 4_000_000 and info.currsize == 40


@given(st.lists(st.text(max_size=30), max_size=60))
def test_it_returns_what_the_function_returns_and_never_exceeds_its_budget(texts):
    length, _ = _counting(chars=50)
    for text in texts:
        assert length(text) == len(text)
        assert length.cache_info().chars <= 50


def test_threads_see_one_value_per_text():
    length, _ = _counting(chars=1000)
    out = []

    def work():
        out.extend(length(str(i % 37)) for i in range(2000))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == sorted([len(str(i % 37)) for i in range(2000)] * 4)
    assert length.cache_info().currsize == 37


def test_a_weighed_lru_counts_a_key_once_and_keeps_nothing_heavier_than_its_capacity():
    from semcache.lru import CountingLRU

    memo: CountingLRU[str, int] = CountingLRU(6, weigh=len)
    memo.put("abc", 1)
    memo.put("abc", 2)  # replaced, not weighed twice
    assert memo.weight == 3 and memo.get("abc") == 2
    memo.put("toolong", 3)  # 7 > 6: never kept, nothing evicted for it
    assert memo.get("toolong") is None and memo.get("abc") == 2
    memo.put("de", 4)
    memo.put("fg", 5)  # 7 > 6: "abc", the least recently used, goes
    assert memo.get("abc") is None and memo.weight == 4
    memo.clear()
    assert memo.weight == 0 and len(memo) == 0
