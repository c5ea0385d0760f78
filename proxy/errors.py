"""The one place errors become HTTP answers, all in OpenAI's shape.

``{"error": {"message", "type", "param", "code"}}`` for every refusal: the
semcache hierarchy (see :mod:`semcache.errors`), request validation, unknown
routes, oversized bodies and, as a last resort, anything unexpected (logged
with its traceback, answered 500 without internals).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from semcache.errors import (
    CacheUnavailableError,
    ConfigError,
    PolicyError,
    RequestError,
    SemcacheError,
    UpstreamError,
)

log = logging.getLogger("semcache.proxy")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 429: "rate_limit_error", 502: "upstream_error",
          503: "service_unavailable", 504: "upstream_timeout"}


def error_body(message: str, status: int, *, param: str | None = None, type_: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_ or _TYPES.get(status, "api_error"),
                      "param": param, "code": code}}


def error_response(message: str, status: int, *, param: str | None = None, type_: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param=param, type_=type_), status_code=status, headers=headers)


def openai_error_from_upstream(status: int, body: Any) -> dict[str, Any]:
    """Keep an upstream's OpenAI error body; wrap anything else (e.g. vLLM's old flat shape)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body
    if isinstance(body, dict) and "message" in body:  # {"object": "error", "message": ..., "type": ...}
        return error_body(str(body["message"]), status, param=body.get("param"), type_=body.get("type"),
                          code=body.get("code"))
    text = body if isinstance(body, str) else ""
    return error_body(f"upstream answered {status}" + (f": {text[:500]}" if text else ""), status)


def _semcache_error(exc: SemcacheError) -> JSONResponse:
    if isinstance(exc, UpstreamError):
        return JSONResponse(openai_error_from_upstream(exc.status_code, exc.body if exc.body is not None
                                                       else str(exc)), status_code=exc.status_code)
    if isinstance(exc, RequestError):
        return error_response(exc.message, exc.status_code, param=exc.param)
    if isinstance(exc, PolicyError):
        return error_response(str(exc), 400, type_="invalid_policy")
    if isinstance(exc, CacheUnavailableError):  # normally degraded before reaching here
        return error_response("cache unavailable", 503)
    if isinstance(exc, ConfigError):
        log.error("configuration error: %s", exc)
        return error_response(str(exc), 500, type_="configuration_error")
    log.exception("unhandled semcache error", exc_info=exc)
    return error_response("internal error", 500, type_="api_error")


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "bytes", "json-or-python"}


def _param_of(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "content", "str")`` -> ``messages.0.content`` (union tags dropped)."""
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and (
        p in _TYPE_TAGS or "[" in p or p.startswith(("function-", "constrained-"))))]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SemcacheError)
    async def _on_semcache(_: Request, exc: SemcacheError) -> JSONResponse:
        return _semcache_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _param_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        else:
            message = "; ".join(
                f"{_param_of(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg', 'invalid')}" for e in errors[:5]
            )
        return error_response(message, 400, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(str(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in request", exc_info=exc)
        return error_response("internal error", 500, type_="api_error")
