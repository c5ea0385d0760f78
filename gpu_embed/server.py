"""The standalone embedding service: :func:`create_embed_app` (``semcache embed-server``).

Several proxy replicas can share one GPU by pointing ``backend="remote"`` at
it. Endpoints:

* ``POST /v1/embeddings`` -- OpenAI-compatible: ``input`` is a string or a list
  of strings (token arrays are rejected with an OpenAI-shaped 400),
  ``encoding_format`` ``"float"`` (default) or ``"base64"`` (little-endian
  float32, what :class:`~gpu_embed.remote.RemoteEmbedder` uses). ``model`` is
  accepted but not used for routing: the service runs one model, and the
  response's ``model`` is its identity (``name@hash/backend/precision``).
* ``GET /v1/embeddings/identity`` -- ``{"identity", "dim", "backend", ...}``.
* ``GET /healthz``.

Errors are OpenAI-shaped ``{"error": {"message", "type", "param", "code"}}``;
a full queue answers 503 with ``code="embedder_overloaded"``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from semcache.errors import EmbedderError, EmbedderOverloadedError

from gpu_embed.settings import EmbedderSettings

MAX_INPUTS = 2048  # OpenAI's own limit per request


class EmbeddingRequest(BaseModel):
    """The OpenAI embeddings request body (fields we do not use are accepted)."""

    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def _error(status: int, message: str, *, type_: str, param: str | None = None,
           code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _texts(req: EmbeddingRequest) -> list[str] | JSONResponse:
    value = req.input
    if isinstance(value, str):
        return [value]
    if not value:
        return _error(400, "'input' must not be empty", type_="invalid_request_error", param="input")
    if not all(isinstance(v, str) for v in value):
        return _error(400, "token arrays are not supported; send 'input' as a string or a list of strings",
                      type_="invalid_request_error", param="input", code="unsupported_input")
    if len(value) > MAX_INPUTS:
        return _error(400, f"'input' has {len(value)} items; at most {MAX_INPUTS} per request",
                      type_="invalid_request_error", param="input")
    return list(value)


def _encode(vectors: np.ndarray, fmt: str) -> list:
    if fmt == "base64":
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors.tolist()


def create_embed_app(settings: EmbedderSettings | None = None, *, embedder=None) -> FastAPI:
    """The FastAPI app; builds the embedder from ``settings`` at start-up.

    ``embedder`` (any object satisfying ``Embedder`` with ``aclose``) may be
    passed instead, e.g. to share one already loaded; the app then does not
    close it.
    """
    settings = settings or EmbedderSettings()
    state: dict = {"embedder": embedder}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = state["embedder"] is None
        if owned:
            from gpu_embed.factory import build_embedder

            # Loading takes seconds: keep the loop free (health checks answer 503 meanwhile).
            state["embedder"] = await asyncio.to_thread(build_embedder, settings)
        try:
            yield
        finally:
            if owned and state["embedder"] is not None:
                await state["embedder"].aclose()

    app = FastAPI(title="semcache embed-server", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return _error(400, f"invalid request: {first.get('msg', 'malformed body')}",
                      type_="invalid_request_error", param=".".join(loc) or None)

    def _info() -> dict:
        emb = state["embedder"]
        backend = getattr(emb, "backend", None)
        return {"identity": emb.identity, "dim": emb.dim,
                "backend": getattr(backend, "kind", "remote"),
                "precision": getattr(backend, "precision", None)}

    @app.get("/healthz")
    async def healthz():
        if state["embedder"] is None:
            return _error(503, "embedder loading", type_="server_error", code="loading")
        return {"status": "ok", **_info()}

    @app.get("/v1/embeddings/identity")
    async def identity():
        if state["embedder"] is None:
            return _error(503, "embedder loading", type_="server_error", code="loading")
        return _info()

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest):
        emb = state["embedder"]
        texts = _texts(req)
        if isinstance(texts, JSONResponse):
            return texts
        if req.dimensions is not None and req.dimensions != emb.dim:
            return _error(400, f"this model returns {emb.dim} dimensions", type_="invalid_request_error",
                          param="dimensions")
        try:
            vectors = await emb.embed(texts)
        except EmbedderOverloadedError as exc:
            return _error(503, str(exc), type_="server_error", code="embedder_overloaded")
        except EmbedderError as exc:
            return _error(500, str(exc), type_="server_error", code="embedder_error")
        rows = _encode(vectors, req.encoding_format)
        # The service cannot count tokens cheaply per backend; words are a proxy.
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)],
            "model": emb.identity,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def main(argv: list[str] | None = None) -> int:
    """``semcache embed-server`` / ``python -m gpu_embed.server``."""
    parser = argparse.ArgumentParser(prog="semcache embed-server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--backend", default="auto",
                        choices=["auto", "cuda", "onnx-int8", "onnx-fp32", "torch-cpu"])
    parser.add_argument("--model-path", default=None, help="local sentence-transformers model directory")
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--max-wait-ms", type=float, default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"backend": args.backend, "model_path": args.model_path,
                                    "max_batch_size": args.max_batch_size,
                                    "max_wait_ms": args.max_wait_ms}.items() if v is not None}
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_embed_app(EmbedderSettings(**overrides)), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
