"""Streamed misses: relayed chunk by chunk, fanned out to identical waiters, stored when complete.

:class:`StreamRelaying` is the streaming half of
:class:`proxy.api.serving.CachedEndpoint`. One upstream stream feeds a
:class:`StreamFlight`; every identical concurrent streamed miss (same tenant,
context and text, same ``include_usage``) subscribes to it and gets every
frame from the first. The upstream is always asked for usage (hidden again
from a caller who did not ask), so that every stored answer has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi.responses import Response, StreamingResponse

from proxy.api import usage
from proxy.api.coalesce import StreamFlight
from proxy.api.headers import SSE_HEADERS, cache_headers
from proxy.api.relay import json_as_stream, pump
from proxy.api.sse import assemble
from proxy.upstream.pool import PATHS, relayed_headers
from proxy.upstream.transport import TransportError
from semcache.errors import UpstreamError

if TYPE_CHECKING:
    from proxy.admin.metrics import ProxyMetrics
    from proxy.api.controls import CacheControls
    from proxy.api.speculate import Speculation
    from proxy.upstream.pool import UpstreamPool
    from semcache import CacheRequest, LookupResult


class StreamRelaying:
    """The streamed-miss methods; the serving class provides the attributes and helpers below."""

    pool: UpstreamPool
    metrics: ProxyMetrics
    coalesce: bool
    _streams: dict[str, StreamFlight]

    # Implemented by CachedEndpoint; declared here so that the methods below type-check.
    def _vouch(self, controls: CacheControls) -> None: ...
    def _complete(self, answer: dict[str, Any]) -> bool: ...
    def _observe(self, endpoint: str, status: str, started: float) -> None: ...
    async def _store(self, request: CacheRequest, lookup: LookupResult, response: dict[str, Any],
                     chunks: list[dict[str, Any]] | None) -> None: ...

    async def _relay(self, endpoint: str, request: CacheRequest, lookup: LookupResult | None,
                     controls: CacheControls, status: str, storable: bool, started: float,
                     extra_headers: dict[str, str] | None = None,
                     on_complete: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                     speculation: Speculation | None = None) -> Response:
        """Relay a stream; once complete, store it (``storable``) and/or call ``on_complete``
        with the assembled answer, both before ``[DONE]`` goes out. Identical concurrent
        streamed misses share one upstream stream (each caller gets all of it)."""
        hide_usage = not usage.caller_asked(request.body)
        key = lookup.coalesce_key if lookup is not None and lookup.status == "miss" else None
        flight_key = (f"{controls.tenant}|{endpoint}|{int(storable)}|{int(hide_usage)}|{key}"
                      if self.coalesce and key and on_complete is None else None)
        flight = self._streams.get(flight_key) if flight_key else None
        joined = flight is not None
        if flight is None:
            flight = StreamFlight()
            if flight_key:
                self._streams[flight_key] = flight
            try:
                await self._open_stream(flight, flight_key, endpoint, request, lookup, controls, storable,
                                        hide_usage, on_complete, speculation)
            except BaseException as exc:
                self._drop_flight(flight_key, flight)
                if isinstance(exc, Exception):
                    flight.opened.set_exception(exc)
                    flight.opened.exception()  # retrieved: followers (if any) re-raise it
                else:
                    flight.opened.cancel()
                raise
        else:
            self.metrics.coalesced.inc()
        upstream_headers = await asyncio.shield(flight.opened)
        frames = flight.subscribe()

        async def relay() -> AsyncIterator[bytes]:
            finished = False
            try:
                async for data in frames:
                    yield data
                finished = True
            finally:
                await frames.aclose()  # type: ignore[attr-defined]  # leaves the flight now
                if not finished:
                    self.metrics.aborted_streams.inc()
                self._observe(endpoint, status, started)

        headers = {**SSE_HEADERS, **upstream_headers, **cache_headers(status, lookup), **(extra_headers or {})}
        if joined:
            headers["x-semcache-coalesced"] = "true"
        return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)

    async def _open_stream(self, flight: StreamFlight, flight_key: str | None, endpoint: str,
                           request: CacheRequest, lookup: LookupResult | None, controls: CacheControls,
                           storable: bool, hide_usage: bool,
                           on_complete: Callable[[dict[str, Any]], Awaitable[None]] | None,
                           speculation: Speculation | None) -> None:
        """Open the upstream stream (usage asked for) and start relaying it into ``flight``."""
        self.metrics.in_flight.inc()
        try:
            if speculation is not None and not speculation.taken:
                upstream = speculation.upstream  # its in_flight was counted when the stream was opened
                response = await speculation.take()
            else:
                upstream = await self.pool.router.route(request.body)
                response = await self.pool.open_counted(upstream, PATHS[endpoint], usage.asking_usage(request.body),
                                                        controls.authorization)
        except BaseException:
            self.metrics.in_flight.dec()
            raise
        self._vouch(controls)

        async def settle(chunks: list[dict[str, Any]] | None, answer: dict[str, Any] | None = None) -> None:
            if not (storable and lookup is not None) and on_complete is None:
                return  # nothing to store, nobody to tell
            if answer is None and chunks:
                answer = assemble(chunks, endpoint)
            if answer is None or not self._complete(answer):
                return
            if storable and lookup is not None:
                await self._store(request, lookup, answer, chunks)
            if on_complete is not None:
                await on_complete(answer)

        def release() -> None:
            upstream.in_flight -= 1
            self.metrics.in_flight.dec()
            flight.close()
            self._drop_flight(flight_key, flight)

        items = response.header_items()
        headers = relayed_headers(items, stream=True)
        content_type = next((v for k, v in items if k == "content-type"), "")
        if not content_type.startswith("text/event-stream"):
            try:  # plain JSON to a stream request: relayed as SSE (or as its error), never an empty 200
                content = await response.aread()
            except TransportError as exc:
                raise UpstreamError(f"upstream {upstream.base_url} broke off: {type(exc).__name__}",
                                    status_code=502) from exc
            finally:
                await response.aclose()
                release()
            answer, sse = json_as_stream(content, relayed_headers(items), endpoint, not hide_usage)
            await asyncio.shield(settle(None, answer))
            flight.publish(sse)  # (closed already: nobody can join any more, the subscribers get it all)
            flight.opened.set_result(headers)
            return

        async def produce() -> None:
            try:
                await pump(response, flight, hide_usage=hide_usage, on_done=settle)
            finally:
                await response.aclose()
                release()

        flight.opened.set_result(headers)
        flight.start(produce())

    def _drop_flight(self, flight_key: str | None, flight: StreamFlight) -> None:
        if flight_key is not None and self._streams.get(flight_key) is flight:
            del self._streams[flight_key]
