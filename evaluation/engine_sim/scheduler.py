"""Admission control of the simulated engine: a running batch and a FIFO queue.

Like vLLM's scheduler seen from outside: at most ``max_batch`` requests run;
the rest wait in arrival order; a request holds KV-cache tokens while it
runs. The counts feed the ``vllm:num_requests_*`` and KV-usage gauges.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class QueueFullError(Exception):
    """The waiting queue is at its bound; the engine refuses the request."""


class Scheduler:
    def __init__(self, max_batch: int, max_waiting: int, kv_cache_tokens: int):
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.kv_cache_tokens = kv_cache_tokens
        self.running = 0
        self.kv_tokens_in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def kv_usage(self) -> float:
        """Fraction of KV-cache tokens held by running requests, in [0, 1]."""
        return min(1.0, self.kv_tokens_in_use / self.kv_cache_tokens)

    @asynccontextmanager
    async def slot(self, kv_tokens: int) -> AsyncIterator[None]:
        """Hold one batch slot (and ``kv_tokens`` of KV cache) for the body."""
        await self._acquire()
        self.kv_tokens_in_use += kv_tokens
        try:
            yield
        finally:
            self.kv_tokens_in_use -= kv_tokens
            self._release()

    async def _acquire(self) -> None:
        if self.running < self.max_batch and not self._waiters:
            self.running += 1
            return
        if len(self._waiters) >= self.max_waiting:
            raise QueueFullError(f"engine queue full ({self.max_waiting} waiting)")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            else:
                self._waiters.remove(fut)
            raise

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self.running -= 1
