"""HTTP face of the engine simulator: the OpenAI routes vLLM serves, plus /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from evaluation.engine_sim import faults
from evaluation.engine_sim.engine import SimEngine, SimRequestError
from evaluation.engine_sim.scheduler import QueueFullError
from evaluation.engine_sim.settings import SimSettings


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise SimRequestError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SimRequestError(400, "request body must be a JSON object")
    return body


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return frames()


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is already read, so only a disconnect comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: asyncio.Future[Any]) -> Any:
    """``work``'s result, or None after cancelling it when the client leaves first.

    vLLM aborts a request whose client disconnects (its ``with_cancellation``
    wrapper), freeing the batch slot; the simulator does the same, so a caller
    that gives up on a request (e.g. the proxy's speculative forward after a
    cache hit) costs the engine only the time it was running.
    """
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if work in done:
        return work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return None


def create_app(settings: SimSettings) -> FastAPI:
    """Build one simulated engine serving ``settings.model``."""
    engine = SimEngine(settings)
    app = FastAPI(title="semcache engine simulator", version="0.1.0")
    app.state.engine = engine

    @app.exception_handler(SimRequestError)
    async def _refused(_: Request, exc: SimRequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(QueueFullError)
    async def _full(_: Request, exc: QueueFullError) -> JSONResponse:
        err = SimRequestError(503, str(exc), type_="ServiceUnavailableError")
        return JSONResponse(err.body(), status_code=503)

    def _authorised(request: Request) -> None:
        if settings.api_key and request.headers.get("authorization") != f"Bearer {settings.api_key}":
            raise SimRequestError(401, "invalid API key", type_="AuthenticationError")

    async def _answer(endpoint: str, request: Request) -> Response:
        _authorised(request)
        body = await _json_body(request)
        fault = faults.pick(body, settings.fault)
        stream = bool(body.get("stream"))
        headers = faults.headers(fault, stream)
        if fault == "rate_limited":
            return JSONResponse(faults.rate_limited_body(), status_code=429, headers=headers)
        plan = engine.plan(endpoint, body)
        if stream and fault != "json_to_stream":
            # Admission happens inside the stream; refuse up front when the queue is full.
            if engine.scheduler.running >= settings.max_batch and engine.scheduler.waiting >= settings.max_waiting:
                raise QueueFullError(f"engine queue full ({settings.max_waiting} waiting)")
            if fault in ("cut_stream", "drop_stream"):
                frames = faults.cut_stream(engine.stream(plan), done=fault == "cut_stream")
            else:
                frames = _sse(engine.stream(plan))
            return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
        answer = await _unless_disconnected(request, asyncio.ensure_future(engine.complete(plan)))
        if answer is None:
            engine.metrics.finished("abort")
            return Response(status_code=499)  # nobody is listening; nginx's "client closed request"
        return JSONResponse(answer, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _answer("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _answer("completions", request)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        """vLLM's ``/tokenize`` (what LMCache-aware routers call): the prompt's token ids."""
        _authorised(request)
        ids = engine.token_ids(await _json_body(request))
        return {"count": len(ids), "max_model_len": settings.max_model_len, "tokens": ids, "token_strs": None}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorised(request)
        return {"object": "list", "data": [{
            "id": settings.model, "object": "model", "created": int(time.time()),
            "owned_by": "semcache-engine-sim", "max_model_len": settings.max_model_len,
        }]}

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
