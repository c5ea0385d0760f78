"""The OpenAI routes (HTTP only: parse, hand to the serving logic, answer) and health."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.api.controls import parse_controls
from proxy.errors import error_body
from proxy.admin.metrics import ProxyMetrics
from proxy.api.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, wire_body
from proxy.api.headers import cache_headers
from proxy.api.serving import CachedEndpoint
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.routing.session import SESSION
from semcache.errors import UpstreamError

_ANSWERS = {
    400: {"description": "invalid request (OpenAI error body)"},
    404: {"description": "unknown model (OpenAI error body)"},
    413: {"description": "request body too large"},
}


def build_openai_router(endpoint: Callable[[], CachedEndpoint], pool: Callable[[], UpstreamPool],
                        salt: str, admin_token: str | None = None, session_header: str | None = None) -> APIRouter:
    """``endpoint``/``pool`` return the live objects built in the app's lifespan.

    ``session_header``: a request header whose value keys ``session`` routing (:data:`SESSION`).
    """
    router = APIRouter(prefix="/v1", tags=["openai"])

    def name_session(request: Request) -> None:
        if session_header:
            # Bounded: the key is hashed per replica on every routed miss.
            SESSION.set((request.headers.get(session_header) or "")[:256] or None)

    @router.post("/chat/completions", responses=_ANSWERS)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Chat completion through the semantic cache (JSON, or SSE with ``stream: true``)."""
        name_session(request)
        return await endpoint().handle("chat", wire_body(body), parse_controls(request.headers, salt, admin_token),
                                       client_gone=lambda: _disconnected(request))

    @router.post("/completions", responses=_ANSWERS)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Text completion through the semantic cache (JSON, or SSE with ``stream: true``)."""
        name_session(request)
        return await endpoint().handle("completions", wire_body(body), parse_controls(request.headers, salt, admin_token),
                                       client_gone=lambda: _disconnected(request))

    @router.post("/embeddings", responses=_ANSWERS)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        """Forwarded to an upstream, never cached."""
        headers = cache_headers("bypass", None)
        try:
            answer = await pool().post_json("/embeddings", wire_body(body), request.headers.get("authorization"))
        except UpstreamError as exc:
            content = exc.body if isinstance(exc.body, dict) else error_body(str(exc), exc.status_code)
            return JSONResponse(content, status_code=exc.status_code, headers=headers)
        return JSONResponse(answer, headers=headers)

    @router.get("/models")
    async def models(request: Request) -> dict[str, Any]:
        """The models of every upstream, merged."""
        return {"object": "list", "data": await pool().list_models(request.headers.get("authorization"))}

    return router


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is read: only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_health_router(ready: Callable[[], dict[str, Any]], metrics: ProxyMetrics) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok", "time": time.time()}

    @router.get("/readyz", responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Ready when the cache has started (requests are served either way, uncached if not)."""
        state = ready()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    @router.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics of this proxy process."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
