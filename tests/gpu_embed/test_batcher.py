"""The micro-batcher: batching, concurrency, lone requests, overload, failures, close."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from gpu_embed.batcher import MicroBatcher
from gpu_embed.embedder import LocalEmbedder
from semcache.errors import EmbedderError, EmbedderOverloadedError
from tests.gpu_embed.conftest import FakeBackend


async def test_hundreds_of_concurrent_callers_get_their_own_rows(fake_backend):
    fake_backend.delay_s = 0.002  # long enough for callers to pile up behind a batch
    batcher = MicroBatcher(fake_backend.encode, max_batch_size=32, max_wait_ms=1.0, max_queue=10_000)
    texts = [[f"query {i}", f"other {i}"] if i % 3 == 0 else [f"query {i}"] for i in range(400)]
    results = await asyncio.gather(*(batcher.submit(t) for t in texts))
    for t, rows in zip(texts, results):
        np.testing.assert_allclose(rows, fake_backend.encode(t), rtol=0, atol=0)
    total = sum(len(t) for t in texts)
    assert batcher.stats.texts == total
    # Real batching happened, and no batch exceeded the cap.
    assert batcher.stats.batches < len(texts) / 4
    assert batcher.stats.largest_batch <= 32
    await batcher.aclose()


async def test_lone_request_does_not_wait_for_the_window(fake_backend):
    batcher = MicroBatcher(fake_backend.encode, max_batch_size=64, max_wait_ms=500.0)
    await batcher.submit(["warm"])
    start = time.perf_counter()
    await batcher.submit(["alone"])
    assert time.perf_counter() - start < 0.1  # far below the 500 ms window
    await batcher.aclose()


async def test_overload_raises_at_once_when_queue_is_full():
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    batcher = MicroBatcher(backend.encode, max_batch_size=4, max_wait_ms=0.0, max_queue=8)
    in_flight = asyncio.ensure_future(batcher.submit(["a"]))  # blocks the worker on the gate
    await asyncio.sleep(0.05)
    waiting = [asyncio.ensure_future(batcher.submit([f"q{i}"] * 2)) for i in range(4)]  # 8 texts queued
    await asyncio.sleep(0)
    with pytest.raises(EmbedderOverloadedError):
        await asyncio.wait_for(batcher.submit(["one too many"]), 1.0)
    assert batcher.stats.rejected == 1
    gate.set()
    await asyncio.gather(in_flight, *waiting)  # the admitted callers still succeed
    await batcher.submit(["after"])  # and the queue accepts again
    await batcher.aclose()


async def test_backend_failure_reaches_every_caller_and_batcher_recovers(fake_backend):
    batcher = MicroBatcher(fake_backend.encode, max_batch_size=64)
    fake_backend.fail_next = RuntimeError("boom")
    results = await asyncio.gather(*(batcher.submit([f"x{i}"]) for i in range(5)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, EmbedderError)]
    assert failed and all("boom" in str(r) for r in failed)
    rows = await batcher.submit(["fine"])
    assert rows.shape == (1, fake_backend.dim)
    await batcher.aclose()


async def test_cancelled_caller_does_not_disturb_others():
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    batcher = MicroBatcher(backend.encode, max_batch_size=64)
    first = asyncio.ensure_future(batcher.submit(["first"]))
    await asyncio.sleep(0.02)
    doomed = asyncio.ensure_future(batcher.submit(["doomed"]))
    kept = asyncio.ensure_future(batcher.submit(["kept"]))
    await asyncio.sleep(0)
    doomed.cancel()
    gate.set()
    await first
    np.testing.assert_array_equal(await kept, backend.encode(["kept"]))
    await batcher.aclose()


async def test_close_fails_waiting_callers_and_refuses_new_ones():
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    batcher = MicroBatcher(backend.encode)
    running = asyncio.ensure_future(batcher.submit(["running"]))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(batcher.submit(["waiting"]))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.aclose())
    await asyncio.sleep(0.02)
    gate.set()
    await closing
    for fut in (running, waiting):
        with pytest.raises(EmbedderError):
            await fut
    with pytest.raises(EmbedderError):
        await batcher.submit(["late"])


async def test_local_embedder_contract(fake_backend):
    emb = LocalEmbedder(fake_backend, lru_size=0)
    assert emb.dim == 8 and emb.identity == fake_backend.identity
    out = await emb.embed([])
    assert out.shape == (0, 8) and out.dtype == np.float32
    with pytest.raises(TypeError):
        await emb.embed("a bare string")
    await emb.aclose()
    assert fake_backend.closed
    with pytest.raises(EmbedderError):
        await emb.embed(["after close"])
