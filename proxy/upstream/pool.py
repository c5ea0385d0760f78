"""Upstream engines: where a request goes, and the pooled HTTP clients that take it there.

An :class:`Upstream` is one OpenAI-compatible base URL, optionally pinned to
one model name. The :class:`UpstreamRouter` chooses among the upstreams that
can serve a model with a pluggable :class:`RoutingStrategy`, one per model
(see :mod:`proxy.upstream.routing`: round robin, least-loaded, session,
prefix, kv).
Plain ``http://`` engines are reached with the lean :class:`proxy.upstream.http1.Http1Client`,
``https://`` ones (and an injected test transport) with ``httpx``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from proxy.errors import openai_error_from_upstream
from proxy.upstream.http1 import Http1Client
from proxy.settings import ProxySettings
from proxy.upstream.routing import Balancer, EngineQueues, build_strategy
from proxy.upstream.transport import HttpxClient, TransportError, TransportTimeout, UpstreamClient, UpstreamResponse
from semcache.errors import RequestError, UpstreamError


@dataclass(eq=False)
class Upstream:
    """One engine endpoint. ``model`` None: it serves whatever model it is asked for."""

    base_url: str
    model: str | None = None
    in_flight: int = 0
    sent: int = 0  # requests forwarded to it since start (each counted once, when sent)
    models: set[str] = field(default_factory=set)  # last seen in its /models

    @classmethod
    def parse(cls, spec: str) -> Upstream:
        head = spec.split("://", 1)[0]
        if "=" in head:
            model, url = spec.split("=", 1)
            return cls(base_url=url.rstrip("/"), model=model)
        return cls(base_url=spec.rstrip("/"))

    def serves(self, model: str) -> bool:
        return self.model == model or model in self.models


class RoutingStrategy(Protocol):
    def choose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream: ...


class AsyncRoutingStrategy(RoutingStrategy, Protocol):
    """A strategy that may ask something over the network (``kv``) when the caller can wait."""

    async def achoose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream: ...


# OpenAI paths of the cached endpoints, relative to an upstream base URL.
PATHS = {"chat": "/chat/completions", "completions": "/completions"}


class UpstreamRouter:
    def __init__(self, upstreams: Sequence[Upstream], strategy: RoutingStrategy,
                 by_model: dict[str, RoutingStrategy] | None = None, balancer: Balancer | None = None,
                 client: httpx.AsyncClient | None = None):
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = list(upstreams)
        self.strategy = strategy
        self.by_model = dict(by_model or {})
        self.balancer = balancer
        self.client = client  # kv routing's calls to the engines' /tokenize and the LMCache controller

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def attach_engines(self, engines: EngineQueues) -> None:
        """Let load-aware strategies see the engines' scraped queues (all clients' requests)."""
        if self.balancer is not None:
            self.balancer.engines = engines

    def snapshot(self) -> dict[str, Any]:
        """For ``/admin/stats``: each strategy in use, and what ``kv`` routing's controller answered."""
        def one(strategy: RoutingStrategy) -> dict[str, Any]:
            out: dict[str, Any] = {"strategy": type(strategy).__name__}
            if hasattr(strategy, "fell_back"):
                out.update(asked=strategy.asked, answered=strategy.answered, fell_back=strategy.fell_back)
            return out

        return {"default": one(self.strategy), "by_model": {m: one(s) for m, s in self.by_model.items()}}

    def candidates(self, model: str) -> list[Upstream]:
        pinned = [u for u in self.upstreams if u.model == model]
        if pinned:
            return pinned
        known = [u for u in self.upstreams if u.model is None and model in u.models]
        return known or [u for u in self.upstreams if u.model is None]

    def _plan(self, body: dict[str, Any]) -> tuple[RoutingStrategy, list[Upstream]]:
        model = str(body.get("model", ""))
        candidates = self.candidates(model)
        if not candidates:
            raise RequestError(f"The model `{model}` does not exist.", param="model", status_code=404)
        return self.by_model.get(model, self.strategy), candidates

    def asks_network(self, body: dict[str, Any]) -> bool:
        """Whether ``body``'s strategy asks something over the network to route (``kv``)."""
        return hasattr(self._plan(body)[0], "achoose")

    def choose(self, body: dict[str, Any]) -> Upstream:
        """The replica for ``body`` without waiting on anything (``kv`` acts as ``prefix`` here)."""
        strategy, candidates = self._plan(body)
        return strategy.choose(candidates, body)

    async def route(self, body: dict[str, Any]) -> Upstream:
        """The replica for ``body``, asking the LMCache controller where ``kv`` routing is on."""
        strategy, candidates = self._plan(body)
        achoose = getattr(strategy, "achoose", None)
        if achoose is not None:
            return await achoose(candidates, body)
        return strategy.choose(candidates, body)


def build_router(settings: ProxySettings, transport: httpx.AsyncBaseTransport | None = None) -> UpstreamRouter:
    """The router over ``settings.upstreams``: each model in ``routing_by_model`` gets its own
    strategy instance, the other models share the default one (its tables are per replica URL)."""
    opts = settings.routing_options
    balancer = Balancer(opts.balance_abs_threshold, opts.balance_rel_threshold)
    # kv routing's calls (engine /tokenize, controller /lookup) are bounded by its own timeout.
    client = httpx.AsyncClient(timeout=httpx.Timeout(opts.kv_timeout_s * 4), transport=transport)
    return UpstreamRouter([Upstream.parse(s) for s in settings.upstreams],
                          build_strategy(settings.routing, opts, balancer, client),
                          {m: build_strategy(name, opts, balancer, client)
                           for m, name in settings.routing_by_model.items()}, balancer, client)


# Upstream response headers a client or a load balancer reads, passed through to the caller:
# the openai client's request id, rate-limit state and back-off (retry-after on a 429).
RELAYED_HEADERS = frozenset({"x-request-id", "retry-after", "retry-after-ms", "openai-processing-ms",
                             "openai-version"})
RELAYED_PREFIXES = ("x-ratelimit-",)
# On streams also what keeps a proxy in between from buffering or caching the events.
STREAM_HEADERS = frozenset({"cache-control", "x-accel-buffering"})


def relayed_headers(items: Sequence[tuple[str, str]], *, stream: bool = False) -> dict[str, str]:
    """The headers of an upstream response (lower-case names) that go back to the caller."""
    keep = RELAYED_HEADERS | STREAM_HEADERS if stream else RELAYED_HEADERS
    return {name: value for name, value in items if name in keep or name.startswith(RELAYED_PREFIXES)}


class UpstreamStatusError(UpstreamError):
    """An error status from the upstream, with the headers to relay (``retry-after``, ...)."""

    def __init__(self, message: str, *, status_code: int, body: object, headers: dict[str, str]):
        super().__init__(message, status_code=status_code, body=body)
        self.headers = headers


def upstream_error(status: int, content: bytes, headers: dict[str, str] | None = None) -> UpstreamStatusError:
    """An :class:`UpstreamError` carrying the upstream's status, (OpenAI-shaped) body and relayed headers."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", "replace")
    return UpstreamStatusError(f"upstream answered {status}", status_code=status,
                               body=openai_error_from_upstream(status, body), headers=headers or {})


@dataclass(slots=True)
class UpstreamAnswer:
    """A non-streamed upstream answer: its JSON object and the headers to relay."""

    body: dict[str, Any]
    headers: dict[str, str]


class UpstreamPool:
    """The pooled upstream clients and the router over the configured upstreams."""

    def __init__(self, settings: ProxySettings, transport: httpx.AsyncBaseTransport | None = None):
        self.router = build_router(settings, transport)
        self._api_key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        limits = httpx.Limits(max_connections=settings.upstream_max_connections,
                              max_keepalive_connections=settings.upstream_max_connections)
        timeout = httpx.Timeout(settings.upstream_read_timeout, connect=settings.upstream_connect_timeout)
        self._httpx = HttpxClient(httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport))
        self._http1 = None if transport is not None else Http1Client(
            connect_timeout=settings.upstream_connect_timeout, read_timeout=settings.upstream_read_timeout,
            max_connections=settings.upstream_max_connections)
        # For the engines' /metrics scrapes: short timeouts (a scrape must never hang a
        # start or pile up), the same transport (tests route it in-process).
        self.metrics_client = httpx.AsyncClient(timeout=httpx.Timeout(2.0), transport=transport)

    def client_for(self, url: str) -> UpstreamClient:
        if self._http1 is not None and url.startswith("http://"):
            return self._http1
        return self._httpx

    async def aclose(self) -> None:
        if self._http1 is not None:
            await self._http1.aclose()
        await self._httpx.aclose()
        await self.metrics_client.aclose()
        await self.router.aclose()

    def headers(self, authorization: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        elif authorization:
            headers["authorization"] = authorization
        return headers

    async def open(self, upstream: Upstream, path: str, body: dict[str, Any] | bytes,
                   authorization: str | None) -> UpstreamResponse:
        """Send ``body`` and return the response with its body unread (caller closes it).

        Raises :class:`UpstreamError` for an error status (body read, response
        closed) and for transport failures (502 unreachable, 504 timeout).
        """
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = upstream.base_url + path
        try:
            response = await self.client_for(url).request("POST", url, self.headers(authorization), content)
        except TransportTimeout as exc:
            raise UpstreamError(f"upstream {upstream.base_url} timed out", status_code=504) from exc
        except TransportError as exc:
            raise UpstreamError(f"upstream {upstream.base_url} unreachable: {type(exc).__name__}",
                                status_code=502) from exc
        if response.status_code >= 400:
            raise upstream_error(response.status_code, await _read_all(upstream, response),
                                 relayed_headers(response.header_items()))
        return response

    async def open_counted(self, upstream: Upstream, path: str, body: dict[str, Any],
                           authorization: str | None) -> UpstreamResponse:
        """:meth:`open`, counting the request in ``upstream.in_flight`` from now until whoever
        holds the response (a stream relay, a dropped speculation) gives the count back."""
        upstream.in_flight += 1
        upstream.sent += 1
        try:
            return await self.open(upstream, path, body, authorization)
        except BaseException:
            upstream.in_flight -= 1
            raise

    async def post_json(self, path: str, body: dict[str, Any], authorization: str | None,
                        upstream: Upstream | None = None) -> dict[str, Any]:
        """Forward a non-streamed request to ``upstream`` (default: a routed one); its JSON answer."""
        return (await self.post_answer(path, body, authorization, upstream)).body

    async def post_answer(self, path: str, body: dict[str, Any], authorization: str | None,
                          upstream: Upstream | None = None) -> UpstreamAnswer:
        """:meth:`post_json` with the upstream's headers to relay."""
        upstream = upstream or await self.router.route(body)
        upstream.in_flight += 1
        upstream.sent += 1
        try:
            response = await self.open(upstream, path, body, authorization)
            content = await _read_all(upstream, response)
        finally:
            upstream.in_flight -= 1
        return UpstreamAnswer(json_object(content), relayed_headers(response.header_items()))

    async def probe_key(self, authorization: str | None) -> int:
        """Status of ``GET /models`` on the first upstream with the caller's Authorization.

        Raises :class:`UpstreamError` (502) when no upstream can be reached.
        """
        upstream = self.router.upstreams[0]
        url = upstream.base_url + "/models"
        try:
            response = await self.client_for(url).request("GET", url, self.headers(authorization))
            await response.aclose()
        except TransportError as exc:
            raise UpstreamError(f"upstream {upstream.base_url} unreachable: {type(exc).__name__}",
                                status_code=502) from exc
        return response.status_code

    async def list_models(self, authorization: str | None) -> list[dict[str, Any]]:
        """Merge every upstream's ``/models`` (first listing of an id wins; failures skipped)."""

        async def one(u: Upstream) -> list[dict[str, Any]]:
            url = u.base_url + "/models"
            try:
                r = await self.client_for(url).request("GET", url, self.headers(authorization))
                try:
                    content = await r.aread()
                finally:
                    await r.aclose()
                data = json.loads(content).get("data", []) if r.status_code == 200 else []
            except (TransportError, ValueError, AttributeError):
                return [{"id": u.model, "object": "model", "owned_by": "semcache"}] if u.model else []
            listed = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
            u.models = {m["id"] for m in listed}
            if u.model is not None:
                return [m for m in listed if m["id"] == u.model] or [
                    {"id": u.model, "object": "model", "owned_by": "semcache"}]
            return listed

        merged: dict[str, dict[str, Any]] = {}
        for listing in await asyncio.gather(*(one(u) for u in self.router.upstreams)):
            for m in listing:
                merged.setdefault(m["id"], m)
        return list(merged.values())


def json_object(content: bytes) -> dict[str, Any]:
    """An upstream body that must be a JSON object; anything else is a 502."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise UpstreamError("upstream answered invalid JSON", status_code=502) from exc
    if not isinstance(data, dict):
        raise UpstreamError("upstream answered a non-object JSON", status_code=502)
    return data


async def _read_all(upstream, response) -> bytes:
    """The whole body of an upstream response, closed afterwards; a broken read is a 502."""
    try:
        return await response.aread()
    except TransportError as exc:
        raise UpstreamError(f"upstream {upstream.base_url} broke off: {type(exc).__name__}",
                            status_code=502) from exc
    finally:
        await response.aclose()
