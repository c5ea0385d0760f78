"""Issue #14 item 2: a big but legal text is embedded with bounded work."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from evaluation.bench.stall_harness import HealthProber
from gpu_embed.settings import EmbedderSettings
from gpu_embed.tokenize import TextTokenizer
from tests.adversarial.conftest import chat

WORDS = ("the quick brown fox jumps over a lazy dog while seventeen engineers review "
         "distributed caching proposals about latency budgets and python services").split()


def words(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(EmbedderSettings().model_path, max_length=256, head_tokens=64)


def test_long_text_tokenises_in_bounded_time(tokenizer):
    text = words(1_000_000)
    started = time.perf_counter()
    tokenizer.encode([text])
    tokenizer.token_count(text)
    assert time.perf_counter() - started < 0.25  # ~35 ms; the whole text took ~2 s (shared box)


@pytest.mark.parametrize("n_chars", [100, 16_000, 16_500, 40_000, 300_000])
def test_bounded_ids_equal_the_whole_texts_ids(tokenizer, n_chars):
    text = words(n_chars, seed=n_chars) + " what is the answer?"
    whole = tokenizer._tok.encode(text)
    expected = tokenizer._clip(whole.ids, whole.special_tokens_mask)
    assert tokenizer.encode([text])["input_ids"][0].tolist() == expected


def test_texts_differing_only_in_the_middle_still_embed_alike(tokenizer):
    # The middle never reached the vector; bounding must not change that either way.
    a = words(200_000, 1) + " final question"
    b = a[:100_000] + " inserted " + a[100_000:]
    assert tokenizer.encode([a])["input_ids"].tolist() == tokenizer.encode([b])["input_ids"].tolist()


def test_megabytes_of_words_do_not_stall_healthz(proxy):
    hostile = chat(words(3_500_000))
    with HealthProber(proxy.url) as probe:
        answer = httpx.post(proxy.url + "/v1/chat/completions", json=hostile, timeout=120)
    # The simulated engine refuses a prompt over its context (400): forwarded as it is.
    assert answer.status_code in (200, 400), answer.text[:300]
    assert probe.failures == 0
    assert probe.max_s < 0.25, f"/healthz stalled {probe.max_s:.2f}s"
