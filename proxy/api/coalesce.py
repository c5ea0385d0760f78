"""Coalescing of identical concurrent misses: one upstream call, every waiter answered.

The first caller for a key starts the work as its own task; later callers
for the same key await that task. The task is shielded, so the leader's
client disconnecting does not cancel the answer the followers wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(result, joined)``; ``joined`` is True when another call did the work."""
        task = self._flights.get(key)
        if task is not None:
            return await asyncio.shield(task), True
        task = asyncio.ensure_future(work())
        self._flights[key] = task
        task.add_done_callback(lambda t: self._flights.pop(key, None) if self._flights.get(key) is t else None)
        return await asyncio.shield(task), False
