"""Fault modes of the engine simulator: an engine that misbehaves the ways real ones do.

A request picks one with the body field ``sim_fault`` (a proxy forwards unknown
fields as they are); the setting ``fault`` applies one to every request.

* ``cut_stream``: a stream stops after three tokens with ``[DONE]`` and no
  ``finish_reason``, then the connection drops: llama-cpp-python's server does this to a running
  stream when another request arrives (``interrupt_requests``).
* ``drop_stream``: the connection drops after three tokens, without ``[DONE]``.
* ``json_to_stream``: a stream request is answered with the plain JSON completion.
* ``openai_headers``: the answer carries the headers a hosted OpenAI API sends
  (``x-request-id``, ``openai-processing-ms``, ``x-ratelimit-*``; on streams also
  ``cache-control: no-store`` and ``x-accel-buffering: no``).
* ``rate_limited``: 429 with ``retry-after`` and the ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

Fault = Literal["none", "cut_stream", "drop_stream", "json_to_stream", "openai_headers", "rate_limited"]
FAULTS: tuple[str, ...] = ("none", "cut_stream", "drop_stream", "json_to_stream", "openai_headers", "rate_limited")


class ConnectionCut(Exception):
    """Raised inside a streaming body to make the server drop the connection mid-response."""


def pick(body: dict[str, Any], default: str) -> str:
    """The fault this request asks for (``sim_fault``), else the configured one."""
    fault = body.get("sim_fault", default)
    if fault not in FAULTS:
        from evaluation.engine_sim.engine import SimRequestError

        raise SimRequestError(400, f"sim_fault must be one of {', '.join(FAULTS)}", param="sim_fault")
    return fault


def headers(fault: str, stream: bool) -> dict[str, str]:
    """The extra response headers of ``fault`` (none for most)."""
    if fault not in ("openai_headers", "rate_limited"):
        return {}
    out = {"x-request-id": "req_" + uuid.uuid4().hex, "openai-processing-ms": "12",
           "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
           "x-ratelimit-reset-requests": "120ms"}
    if fault == "rate_limited":
        out.update({"retry-after": "2", "x-ratelimit-remaining-requests": "0"})
    elif stream:
        out.update({"cache-control": "no-store", "x-accel-buffering": "no"})
    return out


def rate_limited_body() -> dict[str, Any]:
    return {"error": {"message": "Rate limit reached for requests", "type": "requests",
                      "param": None, "code": "rate_limit_exceeded"}}


async def cut_stream(chunks: AsyncIterator[dict[str, Any]], done: bool = True) -> AsyncIterator[bytes]:
    """SSE frames of the first three tokens, ``[DONE]`` (unless ``done`` is False) without a
    finish_reason, then a dropped connection."""
    sent = 0
    try:
        async for chunk in chunks:
            choices = chunk.get("choices") or []
            if any(c.get("finish_reason") for c in choices) or (not choices and chunk.get("usage")):
                break
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
            sent += 1
            if sent >= 4:
                break
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # the engine counts an abort
    if done:
        yield b"data: [DONE]\n\n"
    raise ConnectionCut("simulated interrupted stream")
