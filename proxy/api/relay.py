"""Relaying an upstream stream to the callers, through a :class:`StreamFlight`.

:func:`pump` reads the upstream's SSE bytes and publishes them as frames:
nothing after ``[DONE]`` (an upstream that breaks off after it has finished
is only logged), an error event and no ``[DONE]`` when it breaks off before,
the usage chunk hidden from a caller who did not ask for it. Before ``[DONE]``
goes out the collected chunks are handed to ``on_done`` (storing happens
there), so a caller repeating the moment it sees ``[DONE]`` gets a hit.

:func:`json_as_stream` covers an upstream that answers a stream request with
plain JSON: a completion is replayed as SSE, anything else is an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.api.coalesce import StreamFlight
from proxy.api.sse import DONE, SSEParser, frame, replay_chunks
from proxy.api.usage import for_caller
from proxy.errors import error_body
from proxy.upstream.pool import json_object, upstream_error
from proxy.upstream.transport import TransportError
from semcache.errors import UpstreamError

log = logging.getLogger("semcache.proxy")

OnDone = Callable[[list[dict[str, Any]] | None], Awaitable[None]]


async def pump(response: Any, flight: StreamFlight, *, hide_usage: bool, on_done: OnDone) -> bool:
    """Publish ``response``'s events into ``flight``; True when the upstream sent ``[DONE]``.

    ``on_done`` gets the chunk objects (None after an error or junk event:
    nothing to store) and is shielded: a caller leaving must not cut a store in half.
    """
    parser = SSEParser()
    chunks: list[dict[str, Any]] | None = []
    done = False
    try:
        async for data in response.aiter_bytes():
            out: list[bytes] = []
            for event in parser.feed(data):
                if done:
                    continue  # nothing goes out after [DONE]
                if event.strip() == "[DONE]":
                    done = True
                    await asyncio.shield(on_done(chunks))
                    out.append(DONE)
                    continue
                chunk = _chunk(event)
                if chunk is None:
                    chunks = None
                    out.append(frame(event))
                    continue
                if chunks is not None:
                    chunks.append(chunk)
                shown = for_caller(chunk) if hide_usage else chunk
                if shown is not None:
                    out.append(frame(event if shown is chunk else shown))
            if out:
                flight.publish(b"".join(out))
    except TransportError as exc:
        if done:
            log.info("upstream closed the stream uncleanly after [DONE]: %s", type(exc).__name__)
        else:
            log.warning("upstream stream broke off: %s", type(exc).__name__)
            flight.publish(frame(error_body("upstream stream broke off", 502)))
    return done


def _chunk(event: str) -> dict[str, Any] | None:
    """The chunk object of an event; None for an error event or junk (not stored)."""
    try:
        chunk = json.loads(event)
    except ValueError:
        return None
    if not isinstance(chunk, dict) or "error" in chunk:
        return None
    return chunk


def json_as_stream(content: bytes, headers: dict[str, str], endpoint: str,
                   include_usage: bool) -> tuple[dict[str, Any], bytes]:
    """The completion an upstream sent as JSON to a stream request, and its SSE replay.

    Raises :class:`UpstreamError`: the upstream's error (with its status when
    the body names one, else 502), or 502 for anything that is no completion.
    """
    answer = json_object(content)
    if "error" in answer:
        code = answer["error"].get("code") if isinstance(answer["error"], dict) else None
        status = code if isinstance(code, int) and 400 <= code <= 599 else 502
        raise upstream_error(status, content, headers)
    if not isinstance(answer.get("choices"), list) or not answer["choices"]:
        raise UpstreamError("upstream answered a stream request with JSON that is no completion", status_code=502)
    created = answer.get("created")
    chunks = replay_chunks(answer, None, endpoint, id_=str(answer.get("id", "")),
                           created=created if isinstance(created, int) else 0, include_usage=include_usage)
    return answer, b"".join(frame(c) for c in chunks) + DONE
