"""Pure-ASGI guard on request bodies: over a size limit 413, not in within a deadline 408 (OpenAI-shaped).

The deadline covers the whole body from its first read: a body trickled one
byte at a time would otherwise hold a request (and its memory) forever,
since neither uvicorn nor httptools has a body read timeout.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import error_body


class _TooLarge(HTTPException):
    """Raised from ``receive`` when a body without a (truthful) length passes the limit.

    An ``HTTPException`` because FastAPI turns any other exception raised while
    it reads the body into "400 error parsing the body"; this one it re-raises,
    and the app's handler answers it (413, OpenAI-shaped).
    """

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body exceeds {max_bytes} bytes")


class _TooSlow(HTTPException):
    """Raised from ``receive`` when the body did not arrive within the deadline (closes the connection)."""

    def __init__(self, timeout_s: float):
        super().__init__(408, f"request body not received within {timeout_s:g} s",
                         headers={"connection": "close"})


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    @staticmethod
    async def _refuse(send: Send, exc: HTTPException) -> None:
        body = json.dumps(error_body(str(exc.detail), exc.status_code)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send, _TooLarge(self.max_bytes))
                    return
        seen = 0
        started = False
        body_done = False
        deadline: float | None = None

        async def counted_receive() -> Message:
            nonlocal seen, body_done, deadline
            if body_done or self.timeout_s is None:  # e.g. a streaming response waiting for a disconnect
                message = await receive()
            else:
                if deadline is None:
                    deadline = time.monotonic() + self.timeout_s
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise _TooSlow(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except (_TooLarge, _TooSlow) as exc:  # raised outside FastAPI's body parsing (which answers them itself)
            if not started:
                await self._refuse(send, exc)
