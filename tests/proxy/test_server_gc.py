"""``semcache serve`` freezes its start-up heap: full collections then skip it (issue #14's last stalls)."""

from __future__ import annotations

import asyncio
import gc

import uvicorn

from proxy.server import FrozenHeapServer


async def _app(scope, receive, send):  # the smallest ASGI app: the test is about the server
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class _Cycle:
    def __init__(self):
        self.me = self


async def test_start_up_moves_the_live_heap_to_the_permanent_generation_and_new_garbage_is_still_collected():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    server = FrozenHeapServer(uvicorn.Config(_app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # this test process: every module and object alive at start-up
        before = len(gc.get_objects())
        assert before < frozen  # a full collection now walks a fraction of the heap
        for _ in range(100):
            _Cycle()
        assert gc.collect() >= 100  # cycles made after start-up are still found
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
