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

Which engines are raced, and when:

* only engines that abort a request whose client left. By default ("auto")
  that is an engine whose ``/metrics`` show vLLM (:mod:`proxy.upstream.load`);
  llama.cpp's server finishes the answer and a hosted API bills it, so they are
  raced only with ``speculative_forward: true``;
* only while the engine has an empty queue (``vllm:num_requests_waiting``, the
  load of every proxy replica sharing it) and this proxy has fewer than
  ``speculative_max_in_flight`` requests on it: an idle engine loses nothing to
  an aborted call, a busy one would delay real work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy.upstream.load import engine_idle
from proxy.api.usage import asking_usage
from proxy.upstream.pool import PATHS, Upstream, UpstreamPool
from semcache.errors import RequestError
from semcache.request.keys import request_digest

if TYPE_CHECKING:
    from proxy.api.controls import CacheControls
    from proxy.upstream.load import UpstreamLoad
    from proxy.admin.metrics import ProxyMetrics
    from semcache import CacheRequest, SemanticCache


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


class Speculator:
    """Decides which requests race the cache, starts their calls and settles them."""

    def __init__(self, cache: SemanticCache, pool: UpstreamPool, metrics: ProxyMetrics, *, below: int,
                 race_chat: bool = True, load: UpstreamLoad | None = None, any_engine: bool = False):
        self.cache = cache
        self.pool = pool
        self.metrics = metrics
        self.below = below  # race only while the chosen upstream has fewer requests in flight
        self.load = load
        self.any_engine = any_engine  # also race engines not known to abort on disconnect
        self.race_chat = race_chat  # False with IC-Cache: its router may pick the small model
        self._racing: dict[Speculation, tuple[str, str, str]] = {}  # -> (tenant, endpoint, text digest)
        self._dropping: set[asyncio.Task[None]] = set()

    def start(self, endpoint: str, request: CacheRequest, controls: CacheControls) -> Speculation | None:
        """The call started for this request, or None when racing the cache is not worth it."""
        if endpoint == "chat" and not self.race_chat:
            return None
        digest = request_digest(request)
        if digest is None or self.cache.seen_before(digest):
            return None  # probably an exact repeat: decided without embedding, nothing to hide
        key = (controls.tenant, endpoint, digest)
        if key in self._racing.values():
            return None  # the same text is racing already: this one coalesces onto it instead
        try:
            if self.pool.router.asks_network(request.body):
                # kv routing asks the LMCache controller: a reused prefix saves far more than the few
                # milliseconds speculation hides, so such requests are routed on the normal path.
                return None
            upstream = self.pool.router.choose(request.body)
        except RequestError:
            return None  # the normal path reports it
        if not self.worth_racing(upstream):
            return None
        path = PATHS[endpoint]
        if request.body.get("stream"):
            # Usage asked for, as on the normal path (hidden again from a caller who did not ask).
            speculation = Speculation(upstream, self.pool.open_counted(upstream, path, asking_usage(request.body),
                                                                       controls.authorization),
                                      release=lambda: _give_back(upstream))
        else:
            speculation = Speculation(upstream, self.pool.post_answer(path, request.body, controls.authorization,
                                                                      upstream))
        self._racing[speculation] = key
        return speculation

    def worth_racing(self, upstream: Upstream) -> bool:
        """An engine that aborts lost calls (or any, if asked), with an empty queue and few of ours."""
        return engine_idle(upstream, self.load, below=self.below, any_engine=self.any_engine)

    def finish(self, speculation: Speculation) -> None:
        """Count the outcome; drop the call if nobody took it (in the background: a hit must not wait)."""
        self._racing.pop(speculation, None)
        if speculation.taken:
            self.metrics.speculative.labels("used").inc()
            return
        self.metrics.speculative.labels("dropped").inc()
        task = asyncio.ensure_future(speculation.drop())
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)


def _give_back(upstream: Upstream) -> None:
    upstream.in_flight -= 1
