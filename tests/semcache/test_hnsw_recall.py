"""HNSW recall against the exact flat index on real MiniLM embeddings of QQP questions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semcache.index import FlatIndex, HNSWIndex, HNSWParams

from .conftest import DATA

QQP = DATA / "qqp" / "qqp-dev.jsonl"


@pytest.fixture(scope="module")
def question_vectors():
    if not QQP.exists():
        pytest.skip(f"shared data not found at {QQP}")
    from gpu_embed import EmbedderSettings, build_embedder

    seen, texts = set(), []
    with QQP.open() as f:
        for line in f:
            row = json.loads(line)
            for text in (row["a"], row["b"]):
                if text not in seen:
                    seen.add(text)
                    texts.append(text)
            if len(texts) >= 4500:
                break
    embedder = build_embedder(EmbedderSettings(backend="onnx-fp32", warmup=False))
    import asyncio

    async def embed_all():
        try:
            return np.concatenate([await embedder.embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
        finally:
            await embedder.aclose()

    return asyncio.run(embed_all())


def recall_at_1(index, flat, queries, ids) -> float:
    agree = 0
    for q in queries:
        exact = flat.search(q, 1)[0][0]
        approx = index.search(q, 1)
        agree += bool(approx) and approx[0][0] == exact
    return agree / len(queries)


def test_hnsw_recall_at_1_against_flat(question_vectors):
    base, queries = question_vectors[:4000], question_vectors[4000:4500]
    ids = [f"q{i}" for i in range(len(base))]
    hnsw = HNSWIndex(base.shape[1], HNSWParams(initial_capacity=256))  # grows by doubling while filled
    flat = FlatIndex(base.shape[1])
    for start in range(0, len(base), 500):
        hnsw.add(ids[start:start + 500], base[start:start + 500])
        flat.add(ids[start:start + 500], base[start:start + 500])
    assert hnsw.capacity >= len(base)
    recall = recall_at_1(hnsw, flat, queries, ids)
    print(f"HNSW recall@1 on {len(queries)} MiniLM queries over {len(base)} questions: {recall:.4f}")
    assert recall >= 0.99


def test_hnsw_recall_survives_deletes_and_slot_reuse(question_vectors):
    base, queries = question_vectors[:4000], question_vectors[4000:4500]
    ids = [f"q{i}" for i in range(len(base))]
    hnsw = HNSWIndex(base.shape[1])
    flat = FlatIndex(base.shape[1])
    hnsw.add(ids[:3000], base[:3000])
    flat.add(ids[:3000], base[:3000])
    for i in range(0, 3000, 4):  # delete a quarter, then refill: slots are reused
        hnsw.delete(ids[i])
        flat.delete(ids[i])
    capacity = hnsw.capacity
    hnsw.add(ids[3000:3750], base[3000:3750])
    flat.add(ids[3000:3750], base[3000:3750])
    assert hnsw.capacity == capacity, "deleted slots should be reused before growing"
    assert len(hnsw) == len(flat) == 3000
    recall = recall_at_1(hnsw, flat, queries, ids)
    assert recall >= 0.99
