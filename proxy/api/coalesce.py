"""Coalescing of identical concurrent misses: one upstream call, every waiter answered.

* :class:`Coalescer` (non-streamed): the first caller for a key starts the
  work as its own task; later callers for the same key await that task. A
  waiter leaving does not cancel the work while another still waits; when the
  last one leaves, the work is cancelled (its upstream call closed, so the
  engine aborts it, and nothing is stored that nobody asked for).
* :class:`StreamFlight` (streamed): one upstream stream fanned out. Every
  frame is kept, so each subscriber gets every frame in order from the first,
  whenever it joined; the producer runs as its own task, cancelled when the
  last subscriber has left before the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}
        self._waiters: dict[asyncio.Task[T], int] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(result, joined)``; ``joined`` is True when another call did the work."""
        task = self._flights.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            self._waiters[task] = 0
            task.add_done_callback(lambda t: self._flights.pop(key, None) if self._flights.get(key) is t else None)
        self._waiters[task] += 1
        try:
            return await asyncio.shield(task), joined
        finally:
            left = self._waiters[task] - 1
            if left > 0:
                self._waiters[task] = left
            else:
                del self._waiters[task]
                if not task.done():  # everybody left: nobody needs the answer
                    task.cancel()


class StreamFlight:
    """One upstream stream, its frames kept, fanned out to every subscriber from the start."""

    def __init__(self) -> None:
        self.opened: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._frames: list[bytes] = []
        self._done = False
        self._wake = asyncio.Event()
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self._done

    def start(self, producer: Coroutine[Any, Any, None]) -> None:
        """Run ``producer`` (it calls :meth:`publish`, then :meth:`close`) as its own task."""
        self._task = asyncio.ensure_future(producer)

    def publish(self, data: bytes) -> None:
        self._frames.append(data)
        self._wake.set()
        self._wake = asyncio.Event()

    def close(self) -> None:
        self._done = True
        self._wake.set()

    def subscribe(self) -> AsyncIterator[bytes]:
        """The frames from the first one; counted as a subscriber from this call on."""
        self._subscribers += 1
        return self._follow()

    async def _follow(self) -> AsyncIterator[bytes]:
        sent = 0
        try:
            while True:
                wake = self._wake
                if sent < len(self._frames):
                    data, sent = b"".join(self._frames[sent:]), len(self._frames)
                    yield data
                elif self._done:
                    return
                else:
                    await wake.wait()
        finally:
            self._subscribers -= 1
            if self._subscribers == 0 and not self._done and self._task is not None:
                self._task.cancel()  # nobody listens: close the upstream stream, store nothing
