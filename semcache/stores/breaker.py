"""A circuit breaker around any ``Store``: a failing or frozen store is bypassed at once.

Without it a frozen Redis (SIGSTOP, a stalled network) made every hit and
store wait for the 2 s socket timeout: throughput fell from ~70 to ~6
requests/s (issue #14, item 12). :class:`BreakerStore` wraps a store and

* gives every call a short deadline (``call_timeout_s``, default 0.5 s;
  store calls normally take well under a millisecond);
* after ``failures`` consecutive failures or timeouts it *opens*: every call
  then fails at once with :class:`StoreUnavailableError` (a ``StoreError``,
  so the cache degrades to a plain proxy) instead of waiting;
* while open it probes the store in the background (``ping``, or a ``get`` of
  an id that does not exist) every ``probe_interval_s``; the first probe that
  succeeds *closes* it again. No user request is ever the probe.

States: ``closed`` -> ``open`` -> (probe running: ``half_open``) -> ``closed``.

Hand-written rather than ``purgatory``/``pybreaker``/``aiobreaker``: those
half-open by letting the next *caller's* request through as the probe, and a
frozen store would stall that request for the whole timeout; nor do they put
a deadline on the call itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from semcache.entries.entry import CacheEntry
from semcache.errors import StoreError
from semcache.protocols import Store

log = logging.getLogger("semcache.store")
T = TypeVar("T")
State = Literal["closed", "open", "half_open"]
_GUARDED_EXTRAS = frozenset({"eviction_candidates", "publish_policies", "shared_policies", "last_event_id",
                             "ping", "flush"})


class StoreUnavailableError(StoreError):
    """The store's circuit is open: the call was not tried (the store failed just before)."""


class BreakerStore:
    """``store`` behind a circuit breaker (see the module docstring); a ``Store`` itself."""

    def __init__(self, store: Store, *, failures: int = 3, call_timeout_s: float = 0.5,
                 probe_interval_s: float = 0.5, clock: Callable[[], float] = time.monotonic):
        if failures < 1:
            raise ValueError("failures must be >= 1")
        self.inner = store
        self.failures = failures
        self.call_timeout_s = call_timeout_s
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self.opened_count = 0
        self._probe: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------ the breaker
    async def _call(self, op: str, make: Callable[[], Awaitable[T]], deadline_s: float | None = None) -> T:
        if self.state != "closed":
            raise StoreUnavailableError(f"store bypassed ({op}): circuit {self.state} after: {self.last_error}")
        deadline_s = deadline_s or self.call_timeout_s
        try:
            result = await asyncio.wait_for(make(), deadline_s)
        except (StoreError, TimeoutError) as exc:
            self._failed(op, exc)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"store {op} took over {deadline_s:g}s") from exc
        self.consecutive_failures = 0
        return result

    def _failed(self, op: str, exc: BaseException) -> None:
        self.consecutive_failures += 1
        self.last_error = f"{op}: {type(exc).__name__}: {exc}"[:300]
        if self.state == "closed" and self.consecutive_failures >= self.failures:
            self.state, self.opened_at = "open", self._clock()
            self.opened_count += 1
            log.warning("store circuit open after %d failures (%s): bypassing the cache, probing every %.1fs",
                        self.consecutive_failures, self.last_error, self.probe_interval_s)
            if not self._closed and (self._probe is None or self._probe.done()):
                self._probe = asyncio.get_running_loop().create_task(self._probe_until_closed(),
                                                                      name="semcache-store-probe")

    async def _probe_until_closed(self) -> None:
        ping = getattr(self.inner, "ping", None)
        while not self._closed:
            await asyncio.sleep(self.probe_interval_s)
            self.state = "half_open"
            try:
                probe = ping() if ping is not None else self.inner.get("__semcache_probe__")
                await asyncio.wait_for(probe, self.call_timeout_s)
            except (StoreError, TimeoutError) as exc:
                self.state, self.last_error = "open", f"probe: {type(exc).__name__}: {exc}"[:300]
                continue
            down_s = self._clock() - (self.opened_at or self._clock())
            self.state, self.consecutive_failures, self.opened_at = "closed", 0, None
            log.warning("store circuit closed: the store answers again (after %.1fs)", down_s)
            return

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and ``/admin/stats``: the state and why."""
        return {"state": self.state, "consecutive_failures": self.consecutive_failures,
                "opened": self.opened_count, "last_error": self.last_error,
                "open_for_s": None if self.opened_at is None else round(self._clock() - self.opened_at, 3)}

    # ------------------------------------------------------------ the Store
    async def put(self, entry: CacheEntry) -> None:
        await self._call("put", lambda: self.inner.put(entry))

    async def get(self, id: str) -> CacheEntry | None:
        return await self._call("get", lambda: self.inner.get(id))

    async def update(self, id: str, change: Callable[[CacheEntry], CacheEntry | None]) -> CacheEntry | None:
        return await self._call("update", lambda: self.inner.update(id, change))

    async def delete(self, ids: Sequence[str]) -> int:
        return await self._call("delete", lambda: self.inner.delete(ids))

    async def record_hit(self, id: str, at: float, expires_at: float | None = None) -> None:
        await self._call("record_hit", lambda: self.inner.record_hit(id, at, expires_at))

    async def scan(self) -> AsyncIterator[CacheEntry]:
        """The inner scan, each step under a deadline (10x a call's: a step may read a whole page
        of entries; a rebuild may take long in all, and an aborted one starts over)."""
        pages = self.inner.scan()
        try:
            while True:
                try:
                    entry = await self._call("scan", pages.__anext__, 10 * self.call_timeout_s)
                except StopAsyncIteration:
                    return
                yield entry
        finally:
            await pages.aclose()

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """The wrapped store's extras (Redis: change feed, shared policies); store calls guarded."""
        if name == "inner":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if name in _GUARDED_EXTRAS and callable(attr):
            async def guarded(*args: Any, **kwargs: Any) -> Any:
                return await self._call(name, lambda: attr(*args, **kwargs))
            return guarded
        return attr
