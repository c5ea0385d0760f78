"""Category detection by rules and prototypes, and byte quotas."""

from __future__ import annotations

from semcache import CacheRequest, SemanticCache, SQLiteStore, load_policies_text

from .fakes import HashEmbedder

POLICY = """
categories:
  code:
    match: {models: ["(?i)coder"], metadata: {app: ide}}
  support:
    quota: {max_entries: 1000, max_bytes: 2000}
    match:
      examples: ["how do I get a refund for my order", "cancel my order and refund me"]
      min_similarity: 0.3
  default: {}
"""

ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 200}, "finish_reason": "stop"}]}


def chat(text, model="m", **extra):
    return CacheRequest("chat", {"model": model, "messages": [{"role": "user", "content": text}], **extra})


async def make(tmp_path, clock):
    cache = SemanticCache(policies=load_policies_text(POLICY), store=SQLiteStore(tmp_path / "c.db"),
                          embedder=HashEmbedder(), clock=clock, purge_interval_s=0)
    await cache.start()
    return cache


async def test_rules_then_prototypes_then_default(tmp_path, clock):
    cache = await make(tmp_path, clock)
    try:
        res = await cache.lookup(chat("write a parser", model="qwen-Coder-7b"))
        assert (res.category, res.category_reason) == ("code", "model matches /(?i)coder/")
        res = await cache.lookup(chat("write a parser", metadata={"app": "ide"}))
        assert res.category == "code" and res.category_reason.startswith("metadata")
        res = await cache.lookup(chat("how do I get a refund for my shoes"))
        assert res.category == "support" and res.category_reason.startswith("prototype similarity")
        res = await cache.lookup(chat("tell me a poem about the sea"))
        assert (res.category, res.category_reason) == ("default", "no rule or prototype matched")
    finally:
        await cache.close()


async def test_byte_quota_evicts_oldest_of_its_category(tmp_path, clock):
    cache = await make(tmp_path, clock)
    try:
        texts = ["refund for order one please", "refund my order number two", "order refund for item three",
                 "please refund the fourth order", "refund request for order five"]
        for text in texts:
            clock.advance(1)
            req = chat(text)
            req.category = "support"
            res = await cache.lookup(req)
            assert (await cache.store(req, res, response=ANSWER)).stored
        snap = cache.stats_snapshot()
        assert snap["bytes"]["support"] <= 2000
        assert snap["categories"]["support"]["evictions"] >= 1
        kept = {m.query for m in cache.catalog}
        assert texts[-1] in kept and texts[0] not in kept
    finally:
        await cache.close()
