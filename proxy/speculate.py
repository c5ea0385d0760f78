"""Speculative forwarding: :class:`Speculation`, an upstream call started before the cache decides.

A miss pays for the cache's decision (embedding the query, searching) before
its upstream call starts. When the request is not an exact repeat (those are
decided without embedding) and the chosen engine is nearly idle, the proxy
sends the request upstream at once and lets the cache decide meanwhile:

* a miss (or bypass) then *takes* the call already under way, so embedding and
  search overlap the engine's work instead of preceding it;
* a hit *drops* it: the connection is closed, and the engine (vLLM, the
  simulator) aborts a request whose client left, so the waste is the few
  milliseconds it ran -- which an idle engine did not need for anything else.

Gating on the engine's in-flight count keeps speculation off when capacity is
scarce, where an aborted call would delay real work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.upstream import Upstream


class Speculation:
    """One speculative upstream call: taken by a miss, dropped by anything else."""

    def __init__(self, upstream: Upstream, call: Awaitable[Any], release: Callable[[], None] | None = None):
        self.upstream = upstream
        self._release = release  # undoes what a successful call holds (an open stream's in-flight count)
        self.task: asyncio.Future[Any] = asyncio.ensure_future(call)
        self.taken = False

    def take(self) -> asyncio.Future[Any]:
        """The call under way; the caller now owns its result (an answer or an opened response)."""
        self.taken = True
        return self.task

    async def drop(self) -> None:
        """Cancel the call (closing its connection), or release what it already returned."""
        if self.taken:
            return
        self.taken = True
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
            return
        if self.task.cancelled() or self.task.exception() is not None:
            return
        result = self.task.result()
        close = getattr(result, "aclose", None)  # an opened stream: release its connection
        try:
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        finally:
            if self._release is not None:
                self._release()
