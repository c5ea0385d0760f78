"""Serving logic of the cached endpoints: lookup, hit rendering, forwarding, storing.

One request goes::

    controls (tenant, namespace, Cache-Control) -> cache.lookup
      hit    -> the stored answer, fresh id/created, as JSON or replayed SSE
      miss   -> forward (identical concurrent non-streamed misses coalesced),
                relay streams chunk by chunk, store once complete
      bypass -> forward uncached (policy says so, or the cache failed: degrade)
      ic     -> (IC-Cache on, a chat miss for the large model) the router may send it
                to the small model with past large answers as examples; not stored

Upstream errors go back with their status and body and are never stored; a
failing small model falls back to the large one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from proxy.api.coalesce import Coalescer
from proxy.api.controls import CacheControls
from proxy.errors import error_body
from proxy.admin.metrics import ProxyMetrics
from proxy.api.speculate import Speculation, Speculator
from proxy.api.sse import DONE, SSEParser, assemble, frame, replay_chunks
from proxy.upstream.transport import TransportError
from proxy.upstream.pool import PATHS, UpstreamPool
from semcache import CacheRequest, LookupResult, SemanticCache
from semcache.errors import CacheUnavailableError, UpstreamError
from proxy.api.adaptive import threshold_headers

if TYPE_CHECKING:
    from proxy.api.iccache import ICCacheService, Verdict
    from proxy.api.keycheck import KeyCheck
    from semcache.iccache import Decision

log = logging.getLogger("semcache.proxy")

ID_PREFIX = {"chat": "chatcmpl-", "completions": "cmpl-"}


def cache_headers(status: str, lookup: LookupResult | None) -> dict[str, str]:
    headers = {"x-semcache-status": status}
    if lookup is not None:
        headers["x-semcache-category"] = lookup.category
        headers.update(threshold_headers(lookup))
        if lookup.similarity is not None:
            headers["x-semcache-similarity"] = f"{lookup.similarity:.4f}"
        if status == "hit" and lookup.entry is not None:
            headers["x-semcache-entry"] = lookup.entry.id
    return headers


class CachedEndpoint:
    """Serves ``/v1/chat/completions`` and ``/v1/completions`` through the cache."""

    def __init__(self, cache: SemanticCache, pool: UpstreamPool, metrics: ProxyMetrics, *, coalesce: bool,
                 iccache: ICCacheService | None = None, keycheck: KeyCheck | None = None,
                 speculator: Speculator | None = None):
        self.cache = cache
        self.speculator = speculator
        self.iccache = iccache
        self.keycheck = keycheck
        self.pool = pool
        self.metrics = metrics
        self.coalesce = coalesce
        self.coalescer: Coalescer[dict[str, Any]] = Coalescer()
        self._storing: dict[str, asyncio.Task[None]] = {}  # coalesce key -> store in progress
        self.cache_ready = False  # set once the cache has started; until then: bypass

    async def handle(self, endpoint: str, body: dict[str, Any], controls: CacheControls) -> Response:
        started = time.perf_counter()
        request = CacheRequest(endpoint=endpoint, body=body, tenant=controls.tenant,
                               namespace=controls.namespace, category=controls.category)
        speculator = self.speculator if self.cache_ready else None
        speculation = speculator.start(endpoint, request, controls) if speculator else None
        try:
            return await self._handle(endpoint, body, controls, request, speculation, started)
        finally:
            if speculation is not None:
                speculator.finish(speculation)  # type: ignore[union-attr]

    async def _handle(self, endpoint: str, body: dict[str, Any], controls: CacheControls, request: CacheRequest,
                      speculation: Speculation | None, started: float) -> Response:
        lookup = await self._lookup(request, controls)
        key = lookup.coalesce_key if lookup is not None and lookup.status == "miss" else None
        pending = self._storing.get(key) if key is not None else None
        if pending is not None and not controls.no_cache:
            # The same request's answer is being stored right now (stores run beside the
            # response): wait for it and look again, so a repeat after an answer is a hit.
            await asyncio.shield(pending)
            lookup = await self._lookup(request, controls)
        stream = bool(body.get("stream"))
        if lookup is not None and lookup.status == "hit" and lookup.entry is not None:
            refusal = await self.keycheck.refusal(controls.tenant, controls.authorization) if self.keycheck else None
            if refusal is not None:  # never serve the cache to a key the upstream rejects
                return self._upstream_error(endpoint, refusal, "denied", None, started)
            if self.iccache is not None:
                self.iccache.cache_hit(lookup.category)
                self.metrics.ic_routes.labels(lookup.category, "cache").inc()
            return self._hit(endpoint, body, lookup, stream, started)
        status = "miss" if lookup is not None and lookup.status == "miss" else "bypass"
        if status == "bypass":
            self.metrics.bypass.labels("unavailable" if lookup is None else "policy").inc()
        storable = status == "miss" and not controls.no_store
        extra: dict[str, str] = {}
        if self.iccache is not None and self.iccache.applies(endpoint, body, lookup):
            assert lookup is not None
            decision = self.iccache.decide(body, lookup)
            if decision.route == "small":
                small = await self._small(request, lookup, controls, decision, storable, started)
                if small is not None:
                    self.metrics.ic_routes.labels(lookup.category, "small").inc()
                    self.iccache.answered(decision, "small")
                    return small
                self.metrics.ic_routes.labels(lookup.category, "small_failed").inc()
            self.metrics.ic_routes.labels(lookup.category, "large").inc()
            self.iccache.answered(decision, "large")
            extra = {"x-semcache-route": "large", "x-semcache-examples": "0"}
        try:
            if stream:
                return await self._relay(endpoint, request, lookup, controls, status, storable, started, extra,
                                         speculation=speculation)
            answer, joined, storing = await self._forward(endpoint, request, lookup, controls, storable,
                                                          speculation)
        except UpstreamError as exc:
            return self._upstream_error(endpoint, exc, status, lookup, started)
        headers = {**cache_headers(status, lookup), **extra}
        if joined:
            headers["x-semcache-coalesced"] = "true"
        self._observe(endpoint, status, started)
        # The store runs beside the response; the request ends (background) once it is done.
        background = BackgroundTask(_finish_store, storing) if storing is not None else None
        return JSONResponse(answer, headers=headers, background=background)

    # ------------------------------------------------------------------ lookup
    async def _lookup(self, request: CacheRequest, controls: CacheControls) -> LookupResult | None:
        """The cache's decision, or None when the cache failed (degrade to bypass)."""
        if not self.cache_ready:
            self.metrics.degraded.labels("not_started").inc()
            return None
        try:
            lookup = await self.cache.lookup(request, search=not controls.no_cache)
        except CacheUnavailableError as exc:
            self._degraded("lookup", exc)
            return None
        if lookup.similarity is not None:
            self.metrics.similarity.observe(lookup.similarity)
        return lookup

    def _degraded(self, stage: str, exc: Exception) -> None:
        component = type(exc).__name__
        self.metrics.degraded.labels(component).inc()
        log.warning("cache %s failed, serving uncached: %s: %s", stage, component, exc)

    # ------------------------------------------------------------------- hits
    def _hit(self, endpoint: str, body: dict[str, Any], lookup: LookupResult, stream: bool,
             started: float) -> Response:
        entry = lookup.entry
        assert entry is not None
        fresh_id, created = ID_PREFIX[endpoint] + uuid.uuid4().hex, int(time.time())
        headers = cache_headers("hit", lookup)
        if not stream:
            self._observe(endpoint, "hit", started)
            return JSONResponse({**entry.response, "id": fresh_id, "created": created}, headers=headers)
        options = body.get("stream_options") or {}
        chunks = replay_chunks(entry.response, entry.chunks, endpoint, id_=fresh_id, created=created,
                               include_usage=bool(options.get("include_usage")))

        async def replay() -> AsyncIterator[bytes]:
            yield b"".join(frame(c) for c in chunks) + DONE
            self._observe(endpoint, "hit", started)

        return StreamingResponse(replay(), media_type="text/event-stream", headers=headers)

    # ---------------------------------------------------------- non-streamed
    async def _forward(self, endpoint: str, request: CacheRequest, lookup: LookupResult | None,
                       controls: CacheControls, storable: bool, speculation: Speculation | None = None
                       ) -> tuple[dict[str, Any], bool, asyncio.Task[None] | None]:
        """The answer, whether it was another caller's, and the task storing it (the leader's only)."""
        storing: asyncio.Task[None] | None = None

        async def work() -> dict[str, Any]:
            nonlocal storing
            if speculation is not None and not speculation.taken:
                answer = await speculation.take()  # under way since before the lookup
            else:
                self.metrics.in_flight.inc()
                try:
                    answer = await self.pool.post_json(PATHS[endpoint], request.body, controls.authorization)
                finally:
                    self.metrics.in_flight.dec()
            self._vouch(controls)
            if storable and lookup is not None:
                # Off the critical path: the answer goes back while it is stored. Started here,
                # inside the (shielded) coalesced flight, so a leaving leader cannot lose it.
                storing = asyncio.ensure_future(self._store(request, lookup, answer, None))
                key = lookup.coalesce_key
                if key is not None:
                    self._storing[key] = storing
                    storing.add_done_callback(lambda t: self._storing.pop(key, None)
                                              if self._storing.get(key) is t else None)
            return answer

        key = lookup.coalesce_key if lookup is not None and lookup.status == "miss" else None
        if not (self.coalesce and key):
            return await work(), False, storing
        flight = f"{controls.tenant}|{endpoint}|{int(storable)}|{key}"
        answer, joined = await self.coalescer.run(flight, work)
        if joined:
            self.metrics.coalesced.inc()
            return answer, True, None
        return answer, False, storing

    async def _store(self, request: CacheRequest, lookup: LookupResult, response: dict[str, Any],
                     chunks: list[dict[str, Any]] | None) -> None:
        try:
            result = await self.cache.store(request, lookup, response=response, chunks=chunks)
        except CacheUnavailableError as exc:
            self._degraded("store", exc)
            self.metrics.stores.labels("error").inc()
            return
        self.metrics.stores.labels("yes" if result.stored else "no").inc()
        if not result.stored:
            log.debug("answer not stored: %s", result.reason)

    # --------------------------------------------------------------- streamed
    async def _relay(self, endpoint: str, request: CacheRequest, lookup: LookupResult | None,
                     controls: CacheControls, status: str, storable: bool, started: float,
                     extra_headers: dict[str, str] | None = None,
                     on_complete: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                     speculation: Speculation | None = None) -> Response:
        """Relay a stream; once complete, store it (``storable``) and/or call ``on_complete``
        with the assembled answer, both before ``[DONE]`` goes out."""
        self.metrics.in_flight.inc()
        if speculation is not None and not speculation.taken:
            upstream = speculation.upstream  # its in_flight was counted when the stream was opened
            try:
                response = await speculation.take()
            except BaseException:
                self.metrics.in_flight.dec()
                raise
        else:
            upstream = self.pool.router.choose(request.body)
            try:
                response = await self.pool.open_counted(upstream, PATHS[endpoint], request.body,
                                                        controls.authorization)
            except BaseException:
                self.metrics.in_flight.dec()
                raise
        self._vouch(controls)

        async def relay() -> AsyncIterator[bytes]:
            parser = SSEParser()
            chunks: list[dict[str, Any]] | None = [] if storable or on_complete else None
            complete = False
            try:
                async for data in response.aiter_bytes():
                    out = []
                    for event in parser.feed(data):
                        if event.strip() == "[DONE]":
                            complete = True
                            if chunks:
                                answer = assemble(chunks, endpoint)
                                # Before [DONE] (a client may repeat the moment it sees it); shielded:
                                # a client leaving now must not cut a store in half.
                                if storable and lookup is not None:
                                    await asyncio.shield(self._store(request, lookup, answer, chunks))
                                if on_complete is not None:
                                    await asyncio.shield(on_complete(answer))
                            out.append(DONE)
                            continue
                        out.append(frame(event))
                        if chunks is not None:
                            chunks = _collect(chunks, event)
                    if out:
                        yield b"".join(out)
            except TransportError as exc:
                log.warning("upstream stream broke off: %s", type(exc).__name__)
                yield frame(error_body("upstream stream broke off", 502))
            finally:
                await response.aclose()
                upstream.in_flight -= 1
                self.metrics.in_flight.dec()
                if not complete:
                    self.metrics.aborted_streams.inc()
                self._observe(endpoint, status, started)

        headers = {**cache_headers(status, lookup), **(extra_headers or {})}
        return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)

    # ------------------------------------------------------------- IC-Cache
    async def _small(self, request: CacheRequest, lookup: LookupResult, controls: CacheControls,
                     decision: Decision, storable: bool, started: float) -> Response | None:
        """Answer with the small model and the decision's examples; None if the small model failed."""
        ic = self.iccache
        assert ic is not None
        small = replace(request, body=ic.small_body(request.body, decision))
        headers = {**cache_headers("ic", lookup), **decision.headers()}
        request_id = uuid.uuid4().hex

        async def ask_large() -> dict[str, Any]:
            return await self.pool.post_json(PATHS["chat"], {**request.body, "stream": False},
                                             controls.authorization)

        async def store_large(large_answer: dict[str, Any]) -> None:
            if storable:
                await self._store(request, lookup, large_answer, None)

        async def learn(answer: dict[str, Any], verdict: Verdict | None = None) -> None:
            ic.remember(answer.get("id"), decision, controls.tenant)
            ic.maybe_shadow(decision, request_id, answer, ask_large, store_large, verdict=verdict)

        try:
            if request.body.get("stream"):
                return await self._relay("chat", small, lookup, controls, "ic", False, started, headers,
                                         on_complete=learn)
            self.metrics.in_flight.inc()
            try:
                answer = await self.pool.post_json(PATHS["chat"], small.body, controls.authorization)
            finally:
                self.metrics.in_flight.dec()
        except UpstreamError as exc:
            log.warning("small model failed (%s), answering with the large model", exc.status_code)
            return None
        verdict = await ic.check_answer(decision, answer, request_id)
        if not verdict.serve:
            self.metrics.ic_routes.labels(lookup.category, "small_rejected").inc()
            # Shadow-picked requests label the check's calibration, rejected ones too.
            ic.maybe_shadow(decision, request_id, answer, ask_large, store_large, verdict=verdict)
            return None  # it ignored its examples: the large model answers instead
        await learn(answer, verdict)
        self._observe("chat", "ic", started)
        return JSONResponse(answer, headers=headers)

    # ------------------------------------------------------------------ misc
    def _upstream_error(self, endpoint: str, exc: UpstreamError, status: str, lookup: LookupResult | None,
                        started: float) -> Response:
        self.metrics.upstream_errors.labels(str(exc.status_code)).inc()
        self._observe(endpoint, status, started)
        body = exc.body if isinstance(exc.body, dict) else error_body(str(exc), exc.status_code)
        return JSONResponse(body, status_code=exc.status_code, headers=cache_headers(status, lookup))

    def _vouch(self, controls: CacheControls) -> None:
        """An upstream success with the caller's key: it may be served from the cache for a while."""
        if self.keycheck is not None:
            self.keycheck.vouch(controls.tenant)

    def _observe(self, endpoint: str, status: str, started: float) -> None:
        self.metrics.requests.labels(endpoint, status).inc()
        self.metrics.latency.labels(endpoint, status).observe(time.perf_counter() - started)


async def _finish_store(storing: asyncio.Task[None]) -> None:
    await asyncio.shield(storing)  # a leaving client must not cancel the store


def _collect(chunks: list[dict[str, Any]], event: str) -> list[dict[str, Any]] | None:
    """Add a relayed event to the chunks to store; None (store nothing) on an error or junk event."""
    try:
        chunk = json.loads(event)
    except ValueError:
        return None
    if not isinstance(chunk, dict) or "error" in chunk:
        return None
    chunks.append(chunk)
    return chunks
