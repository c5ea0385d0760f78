"""The exact-text LRU and the head+tail policy for long inputs."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_embed.embedder import LocalEmbedder
from gpu_embed.lru import EmbeddingLRU
from gpu_embed.settings import EmbedderSettings
from gpu_embed.tokenize import TextTokenizer


def test_lru_evicts_least_recently_used():
    lru = EmbeddingLRU(2)
    lru.put("a", np.ones(3))
    lru.put("b", np.ones(3))
    assert lru.get("a") is not None  # "a" is now the most recent
    lru.put("c", np.ones(3))
    assert lru.get("b") is None and lru.get("a") is not None and len(lru) == 2


def test_lru_rows_are_read_only_copies():
    lru = EmbeddingLRU(4)
    row = np.ones(3, dtype=np.float32)
    lru.put("a", row)
    row[:] = 5
    cached = lru.get("a")
    assert cached.tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        cached[0] = 2


async def test_repeats_are_served_from_the_lru(fake_backend):
    emb = LocalEmbedder(fake_backend, lru_size=16)
    first = await emb.embed(["x", "y", "x"])  # the repeat inside one call is computed once
    assert fake_backend.calls == [2]
    second = await emb.embed(["y", "x"])
    assert fake_backend.calls == [2]  # no model call at all
    np.testing.assert_array_equal(second, first[[1, 0]])
    second[:] = 0  # callers own their arrays: the cache is unaffected
    np.testing.assert_array_equal(await emb.embed(["x"]), first[:1])
    await emb.aclose()


def test_lru_disabled_computes_every_time(fake_backend):
    import asyncio

    async def run():
        emb = LocalEmbedder(fake_backend, lru_size=0)
        await emb.embed(["x"])
        await emb.embed(["x"])
        await emb.aclose()

    asyncio.run(run())
    assert fake_backend.calls == [1, 1]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(EmbedderSettings().model_path, max_length=256, head_tokens=64)


def test_short_text_is_not_truncated(tokenizer):
    feats = tokenizer.encode(["what is the capital of france?", "hi"])
    assert feats["input_ids"].shape[0] == 2
    assert feats["attention_mask"][1].sum() == 3  # [CLS] hi [SEP], then padding
    assert (feats["input_ids"][1, 3:] == tokenizer.pad_id).all()


def test_long_text_keeps_head_and_tail(tokenizer):
    head = "system instructions follow. "
    tail = "so what is the boiling point of water on everest?"
    text = head + "filler " * 1000 + tail
    ids = tokenizer.encode([text])["input_ids"][0]
    assert len(ids) == 256
    full = tokenizer._tok.encode(text).ids
    head_ids = tokenizer._tok.encode(head).ids[1:-1]
    tail_ids = tokenizer._tok.encode(tail).ids[1:]  # with the closing [SEP]
    assert list(ids[1 : 1 + len(head_ids)]) == head_ids
    assert list(ids[-len(tail_ids):]) == tail_ids
    assert list(ids[:65]) == full[:65] and list(ids[65:]) == full[-(256 - 65):]
