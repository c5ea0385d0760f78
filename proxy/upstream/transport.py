"""The seam between the proxy and the HTTP client that reaches the engines.

:class:`UpstreamClient` is one method, ``request``, returning an
:class:`UpstreamResponse` whose body is read (or streamed) afterwards. Two
implementations: :class:`proxy.upstream.http1.Http1Client` (lean, plain ``http://``,
used for engines by default) and :class:`HttpxClient` (``https://`` engines,
and in-process tests through ``httpx.ASGITransport``).

Errors, one root (the serving layer maps them: timeouts 504, the rest 502)::

    TransportError               the request could not be completed
    +-- ConnectError             could not connect (refused, unresolvable, reset)
    +-- RemoteProtocolError      the engine closed early or answered malformed HTTP
    +-- TransportTimeout
        +-- ConnectTimeout       no connection within the connect timeout
        +-- ReadTimeout          no bytes within the read timeout
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import httpx


class TransportError(Exception):
    """The request to the engine could not be completed."""


class ConnectError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


class TransportTimeout(TransportError):
    pass


class ConnectTimeout(TransportTimeout):
    pass


class ReadTimeout(TransportTimeout):
    pass


class UpstreamResponse(Protocol):
    status_code: int

    def header_items(self) -> list[tuple[str, str]]:
        """The response headers, names lower-cased, in order."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None = None) -> UpstreamResponse:
        """Send a request; return once the status and headers are in (body unread: caller closes)."""
        ...

    async def aclose(self) -> None: ...


def _mapped(exc: httpx.HTTPError) -> TransportError:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ConnectTimeout(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return ReadTimeout(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(str(exc) or type(exc).__name__)
    return RemoteProtocolError(f"{type(exc).__name__}: {exc}")


class _HttpxResponse:
    def __init__(self, response: httpx.Response):
        self._response = response
        self.status_code = response.status_code

    def header_items(self) -> list[tuple[str, str]]:
        return [(k.lower(), v) for k, v in self._response.headers.items()]

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    async def aread(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxClient:
    """:class:`UpstreamClient` over an ``httpx.AsyncClient`` (errors mapped to :class:`TransportError`)."""

    def __init__(self, client: httpx.AsyncClient):
        self.client = client

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes | None = None) -> _HttpxResponse:
        request = self.client.build_request(method, url, content=body, headers=dict(headers))
        try:
            return _HttpxResponse(await self.client.send(request, stream=True))
        except httpx.HTTPError as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        await self.client.aclose()
