"""Store.update is atomic: concurrent writers through different clients never lose a change.

Real Redis (WATCH/MULTI) and real SQLite files shared by two store objects
(each with its own connection and worker thread, as two processes would be).
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from semcache import RedisStore, SQLiteStore
from semcache.entries.entry import CacheEntry
from semcache.stores import MemoryStore


def _entry(id: str = "e1") -> CacheEntry:
    return CacheEntry(id=id, tenant="t", partition="p", category="support", model="big", endpoint="chat",
                      query="q", vector=np.ones(4, dtype=np.float32) / 2, embedder="test", policy_version="1",
                      created_at=1.0, response={"choices": [{"message": {"content": "a"}}]})


def _plus_one(entry: CacheEntry) -> CacheEntry:
    return entry.model_copy(update={"utility_uses": entry.utility_uses + 1})


async def _hammer(stores, per_store: int) -> None:
    async def writer(store):
        for _ in range(per_store):
            assert await store.update("e1", _plus_one) is not None
            await asyncio.sleep(0)  # interleave with the other writers

    await asyncio.gather(*(writer(s) for s in stores for _ in range(3)))


async def test_redis_update_loses_no_concurrent_change(redis_url):
    prefix = f"upd-{uuid.uuid4().hex[:8]}"
    a, b = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        await a.put(_entry())
        await _hammer([a, b], per_store=15)
        assert (await b.get("e1")).utility_uses == 2 * 3 * 15
        assert await a.update("missing", _plus_one) is None
        assert await a.update("e1", lambda e: None) is None  # nothing to write
        assert (await a.get("e1")).utility_uses == 90
    finally:
        await a.close()
        await b.close()


async def test_sqlite_update_is_atomic_across_connections(tmp_path):
    a, b = SQLiteStore(tmp_path / "c.db"), SQLiteStore(tmp_path / "c.db")
    try:
        await a.put(_entry())
        await _hammer([a, b], per_store=10)
        assert (await b.get("e1")).utility_uses == 2 * 3 * 10

        def broken(entry: CacheEntry) -> CacheEntry:
            raise ValueError("bad change")

        with pytest.raises(ValueError):
            await a.update("e1", broken)
        assert await b.update("e1", _plus_one) is not None  # the failed update released its lock
        assert (await a.get("e1")).utility_uses == 61
        assert await a.update("missing", _plus_one) is None
    finally:
        await a.close()
        await b.close()


async def test_memory_update():
    store = MemoryStore()
    await store.put(_entry())
    await _hammer([store], per_store=5)
    assert (await store.get("e1")).utility_uses == 15


async def test_replicas_flushing_utility_at_once_through_redis_add_up(redis_url):
    from semcache.iccache.bank import ExampleBank
    from semcache.iccache.persist import flush_utilities

    prefix = f"upd-{uuid.uuid4().hex[:8]}"
    stores = [RedisStore(redis_url, prefix=prefix) for _ in range(3)]
    try:
        await stores[0].put(_entry())
        banks = []
        for store in stores:
            bank = ExampleBank(4)
            bank.add_entry(await store.get("e1"), large_models={"big"})
            banks.append(bank)

        async def replica(bank, store, n):
            for k in range(n):
                bank.record_outcome(["e1"], 1.0 if k % 2 else 0.0)
                await flush_utilities(store, bank)

        await asyncio.gather(*(replica(b, s, 12) for b, s in zip(banks, stores)))
        stored = await stores[0].get("e1")
        assert stored.utility_uses == 36 and stored.utility == pytest.approx(0.5)
    finally:
        for store in stores:
            await store.close()
