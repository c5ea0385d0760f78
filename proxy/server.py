"""The HTTP server of ``semcache serve``: uvicorn (uvloop + httptools) with limits for a public port.

What uvicorn offers is used as it is: ``timeout_keep_alive`` (an idle
connection between requests is closed). What it lacks with httptools is added
by :class:`GuardedHttpToolsProtocol` (issue #14: one 200 MiB header value was
buffered whole; 2,000 connections that never sent a request were held
forever):

* a cap on a request's head (request line + headers): past
  ``max_header_bytes`` the answer is 431 and the connection is closed, so a
  huge header costs at most that much memory;
* a deadline for the head: a connection that has not sent a complete request
  head ``header_timeout_s`` after it opened (or after its previous request
  began) is answered 408 and closed (slowloris, half-open connections);
* a connection cap: past ``max_connections`` open connections a new one is
  answered 503 and closed at once.

The body's own deadline (a body trickled one byte at a time) is an ASGI guard:
:class:`proxy.api.limits.BodySizeLimit`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.settings import ProxySettings


def _plain_response(status: bytes, message: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a head size cap, a head deadline and a connection cap."""

    def __init__(self, *args: Any, max_header_bytes: int, header_timeout_s: float, max_connections: int,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(b"503 Service Unavailable", b"too many connections")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused: whatever else comes is not read
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: the chunk that completes a head may carry body bytes too.
        if self._in_head and self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse(b"431 Request Header Fields Too Large",
                         b"request line and headers exceed %d bytes" % self.max_header_bytes)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            # Up to 10% later at random: connections opened in a burst are not all closed in one loop turn.
            delay = self.header_timeout_s * (1.0 + 0.1 * random.random())
            self._head_timer = self.loop.call_later(delay, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(b"408 Request Timeout", b"request head not received in time")
            else:  # an idle connection that never sent anything: just close it
                self.transport.close()

    def _refuse(self, status: bytes, message: bytes) -> None:
        self._disarm_head_timer()
        self.transport.write(_plain_response(status, message))
        self.transport.close()


def uvicorn_config(app: Any, settings: ProxySettings) -> uvicorn.Config:
    """The uvicorn configuration ``semcache serve`` runs ``app`` with."""
    protocol = functools.partial(GuardedHttpToolsProtocol, max_header_bytes=settings.max_header_bytes,
                                 header_timeout_s=settings.header_timeout_s,
                                 max_connections=settings.max_connections)
    return uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop", http=protocol,
                          timeout_keep_alive=settings.keep_alive_timeout_s, log_level=settings.log_level,
                          access_log=settings.log_level == "debug")


class FrozenHeapServer(uvicorn.Server):
    """uvicorn's server that, once started, moves everything alive to the GC's permanent generation.

    Python's full (generation 2) collection walks every tracked object, and
    it runs on the event loop: after start-up (libraries, the embedder, the
    tokenizer, the rebuilt catalog: ~100k objects) each one held every request
    for 41-55 ms on a quiet 2-core box and over 100 ms under load, the last
    ``/healthz`` stalls of the 10-minute fuzz run (issue #14). What is alive
    after start-up lives as long as the process, so the collector need not
    look at it again (``gc.freeze``, as CPython's docs advise for servers);
    reference counting still frees it, and what is made later is collected
    as before.
    """

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        gc.collect()
        gc.freeze()


def serve(app: Any, settings: ProxySettings) -> None:
    """Run ``app`` until interrupted."""
    FrozenHeapServer(uvicorn_config(app, settings)).run()
