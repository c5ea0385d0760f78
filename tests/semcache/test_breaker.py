"""The store circuit breaker's state machine, over the in-memory store with injected faults."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from semcache import CacheEntry
from semcache.errors import StoreError
from semcache.stores import MemoryStore
from semcache.stores.breaker import BreakerStore, StoreUnavailableError


class Faulty(MemoryStore):
    """A real in-memory store whose ``get`` fails or hangs while told to."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"

    async def get(self, id):
        if self.mode == "fail":
            raise StoreError("boom")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return await super().get(id)


def _entry() -> CacheEntry:
    return CacheEntry(id="a", tenant="t", partition="p", category="default", policy_version="1", model="m",
                      endpoint="chat", query="q", vector=np.ones(2, dtype=np.float32), response={"x": 1},
                      embedder="e", created_at=0.0)


async def test_a_success_resets_the_count_so_only_consecutive_failures_open():
    inner = Faulty()
    store = BreakerStore(inner, failures=3, call_timeout_s=0.05, probe_interval_s=0.01)
    await store.put(_entry())
    for _ in range(5):
        inner.mode = "fail"
        for _ in range(2):
            with pytest.raises(StoreError):
                await store.get("a")
        inner.mode = "ok"
        assert (await store.get("a")) is not None
    assert store.state == "closed" and store.opened_count == 0
    await store.close()


async def test_hanging_calls_time_out_open_the_circuit_and_a_probe_closes_it():
    inner = Faulty()
    store = BreakerStore(inner, failures=2, call_timeout_s=0.05, probe_interval_s=0.01)
    await store.put(_entry())
    inner.mode = "hang"
    for _ in range(2):
        with pytest.raises(StoreError, match="took over"):
            await store.get("a")
    with pytest.raises(StoreUnavailableError):
        await store.put(_entry())  # every call, not just the failing kind
    assert store.status()["state"] in ("open", "half_open") and store.opened_count == 1
    inner.mode = "ok"  # no ping on the memory store: the probe is a get of a missing id
    for _ in range(200):
        if store.state == "closed":
            break
        await asyncio.sleep(0.01)
    assert store.state == "closed" and (await store.get("a")).response == {"x": 1}
    await store.close()


async def test_extras_pass_through_and_are_absent_when_the_store_lacks_them():
    store = BreakerStore(MemoryStore())
    assert not hasattr(store, "changes") and not hasattr(store, "publish_policies")
    assert await store.eviction_candidates("default", "lru", 5) == []
    await store.close()
