"""A lean pooled HTTP/1.1 client for engines: an asyncio protocol over ``httptools``.

Why: on the shared 2-core box a pooled ``httpx.AsyncClient`` cost ~1.6 ms per
forwarded request more than a raw keep-alive socket (``evaluation/RESULTS.md``,
proxy section), about a quarter of the miss overhead; this client is within
~0.1 ms of the raw socket. Against aiohttp (its C parser), same run, same
engine simulator, interleaved (``evaluation/bench/bench_http_client.py``, RESULTS.md
"Engine HTTP client"): p50 0.83 vs 1.09 ms (JSON), 2.21 vs 2.17 ms (16-event
stream), 404-792 vs 212-271 requests/s at 32 concurrent, and aiohttp lost one
request to a keep-alive race (``ServerDisconnectedError``) in one of four runs,
which this client retries. The p50 difference (~0.25 ms) is small against the
2 ms miss-overhead target; the throughput and the retry decide: kept.

Scope, on purpose: plain ``http://`` origins; one request at a time per
connection, idle connections kept (LIFO, ``keepalive_expiry``) up to
``max_connections`` per origin, callers beyond that wait; bodies framed by
content-length, chunked, or until close; streamed reads with back-pressure;
a connect timeout and a per-read timeout (like httpx's). Not: TLS, proxies
from the environment, redirects, cookies, compression (it asks for
``identity``), HTTP/2. A request on a reused keep-alive connection that the
engine had closed before answering a single byte is retried once on a fresh
connection (the keep-alive race); nothing else is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from proxy.upstream.transport import ConnectError, ConnectTimeout, ReadTimeout, RemoteProtocolError, TransportError

HIGH_WATER = 256 * 1024  # buffered body bytes before the socket is paused
LOW_WATER = 64 * 1024


class _Connection(asyncio.Protocol):
    """One socket; a fresh parser per response. The reading side of a response lives here."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = self.complete = self.received = self.keep_alive = False
        self.error: TransportError | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # -------------------------------------------------------- asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport (asyncio's or uvloop's)

    def data_received(self, data: bytes) -> None:
        if self.parser is None or self.complete:  # bytes nobody asked for: unusable connection
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = RemoteProtocolError(f"malformed response from upstream: {exc}")
            self.abort()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.parser is not None and not self.complete and self.error is None:
            if self.headers_done and self._until_close():
                self.complete = True
            else:
                stage = "the body" if self.headers_done else "a response"
                self.error = RemoteProtocolError(f"upstream closed the connection before {stage} was complete")
        self._wake()

    # ------------------------------------------------------ httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # only valid until the message completes
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True

    # ------------------------------------------------------------------ use
    def start(self, request: bytes) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status, self.headers = 0, []
        self.headers_done = self.complete = self.received = self.keep_alive = False
        self.error = None
        if self.closed or self.transport is None:
            self.error = RemoteProtocolError("upstream closed the connection before a response was complete")
            return
        self.transport.write(request)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None and not self._chunks

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def wait_headers(self, timeout: float) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    async def next_chunk(self, timeout: float) -> bytes:
        """The next body bytes; ``b""`` once the body is complete."""
        while True:
            if self._chunks:
                # Everything buffered at once: a stream's events that came in one read go on as one
                # chunk (fewer hops through the caller's relay), as aiohttp's iter_any does.
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._paused and self._buffered < LOW_WATER and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait(timeout)

    def _until_close(self) -> bool:
        names = {name for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    async def _wait(self, timeout: float) -> None:
        waiter = self._waiter = self.loop.create_future()
        expiry = self.loop.call_later(timeout, _expire, waiter, timeout)
        try:
            await waiter
        finally:
            expiry.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout(f"no data from upstream within {timeout:g}s"))


class _Origin:
    """The connections to one ``host:port``: idle ones, and a bound on those in use."""

    def __init__(self, host: str, port: int, max_connections: int):
        self.host, self.port = host, port
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(max_connections)

    def take_idle(self, expiry: float) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < expiry:
                return conn
            conn.abort()
        return None

    def give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().abort()


class Http1Response:
    """A response whose status and headers are in; read the body once, then it is closed."""

    def __init__(self, conn: _Connection, origin: _Origin, read_timeout: float):
        self._conn, self._origin, self._read_timeout = conn, origin, read_timeout
        self.status_code = conn.status
        self.headers = conn.headers
        self._done = False

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k == key), None)

    def header_items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers]

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._done:
            raise RuntimeError("response body already read or closed")
        try:
            while chunk := await self._conn.next_chunk(self._read_timeout):
                yield chunk
        finally:
            await self.aclose()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Release the connection: back to the pool when the body was read whole, else closed."""
        if self._done:
            return
        self._done = True
        if self._conn.reusable():
            self._origin.give_back(self._conn)
        else:
            self._conn.abort()
        self._origin.slots.release()


class Http1Client:
    """:class:`proxy.upstream.transport.UpstreamClient` for ``http://`` engines (see the module docstring)."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 600.0,
                 max_connections: int = 512, keepalive_expiry: float = 5.0):
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_connections, self.keepalive_expiry = max_connections, keepalive_expiry
        self._origins: dict[tuple[str, int], _Origin] = {}

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None = None) -> Http1Response:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Http1Client serves http:// URLs only, not {url!r}")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        origin = self._origins.get((host, port))
        if origin is None:
            origin = self._origins[(host, port)] = _Origin(host, port, self.max_connections)
        request = _encode(method, target, parts.netloc, headers, body)
        await origin.slots.acquire()
        try:
            for _ in range(2):
                conn = origin.take_idle(self.keepalive_expiry)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(origin)
                conn.start(request)
                try:
                    await conn.wait_headers(self.read_timeout)
                except RemoteProtocolError:
                    conn.abort()
                    if reused and not conn.received:
                        continue  # the engine closed this idle connection as we sent: once more, fresh
                    raise
                except BaseException:
                    conn.abort()
                    raise
                return Http1Response(conn, origin, self.read_timeout)
            raise AssertionError("unreachable: a fresh connection is never retried")
        except BaseException:
            origin.slots.release()
            raise

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), origin.host, origin.port)
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {origin.host}:{origin.port} "
                                 f"within {self.connect_timeout:g}s") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()


def _encode(method: str, target: str, netloc: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {netloc}", "accept-encoding: identity",
             "user-agent: semcache"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise TransportError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:
        raise TransportError(f"request headers are not latin-1: {exc}") from exc
    return head + body if body else head


__all__ = ["Http1Client", "Http1Response", "TransportError"]
