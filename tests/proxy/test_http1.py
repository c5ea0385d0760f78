"""The lean upstream client (proxy.upstream.http1) against the real engine simulator over loopback,
and against small raw servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from proxy.app import create_app
from proxy.upstream.http1 import Http1Client
from proxy.upstream.transport import ConnectError, ConnectTimeout, ReadTimeout, RemoteProtocolError
from tests.proxy.conftest import BagOfWordsEmbedder, make_settings

HEADERS = {"content-type": "application/json"}


def chat(prompt: str, **extra) -> bytes:
    return json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": 8, **extra}).encode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def raw_server(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                     ) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw TCP server on loopback; yields its base URL and a list counting accepted connections."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()


async def test_keep_alive_connection_is_reused(engine_sim):
    client = Http1Client()
    url = engine_sim.url + "/v1/chat/completions"
    try:
        seen = []
        for i in range(3):
            r = await client.request("POST", url, HEADERS, chat(f"reuse {i}"))
            body = json.loads(await r.aread())
            assert r.status_code == 200 and body["object"] == "chat.completion"
            (origin,) = client._origins.values()
            assert len(origin.idle) == 1
            seen.append(origin.idle[0])
        assert seen[0] is seen[1] is seen[2]
    finally:
        await client.aclose()


async def test_concurrent_requests_use_separate_connections_then_pool_them(engine_sim):
    client = Http1Client(max_connections=4)
    url = engine_sim.url + "/v1/chat/completions"
    try:
        async def one(i: int) -> int:
            r = await client.request("POST", url, HEADERS, chat(f"parallel {i}"))
            await r.aread()
            return r.status_code

        assert await asyncio.gather(*(one(i) for i in range(8))) == [200] * 8
        (origin,) = client._origins.values()
        assert 1 <= len(origin.idle) <= 4
    finally:
        await client.aclose()


async def test_streaming_is_delivered_chunk_by_chunk(engine_sim):
    client = Http1Client()
    try:
        r = await client.request("POST", engine_sim.url + "/v1/chat/completions", HEADERS,
                                 chat("stream please", stream=True, max_tokens=12))
        assert r.status_code == 200
        assert (r.header("content-type") or "").startswith("text/event-stream")
        pieces = [chunk async for chunk in r.aiter_bytes()]
        assert len(pieces) > 2  # the simulator decodes token by token (1 ms each)
        text = b"".join(pieces).decode()
        assert text.rstrip().endswith("data: [DONE]")
        assert text.count("data: ") >= 12
        (origin,) = client._origins.values()
        assert len(origin.idle) == 1  # a stream read to its end leaves the connection reusable
    finally:
        await client.aclose()


async def test_closing_a_stream_early_drops_the_connection(engine_sim):
    client = Http1Client()
    try:
        r = await client.request("POST", engine_sim.url + "/v1/chat/completions", HEADERS,
                                 chat("cut me off", stream=True, max_tokens=40))
        async for _ in r.aiter_bytes():
            break
        await r.aclose()
        (origin,) = client._origins.values()
        assert len(origin.idle) == 0
        again = await client.request("POST", engine_sim.url + "/v1/chat/completions", HEADERS, chat("after"))
        assert again.status_code == 200 and json.loads(await again.aread())["choices"]
    finally:
        await client.aclose()


async def test_error_status_and_body_come_back_as_sent(engine_sim):
    client = Http1Client()
    try:
        r = await client.request("POST", engine_sim.url + "/v1/chat/completions", HEADERS,
                                 json.dumps({"model": "no-such-model", "messages": [
                                     {"role": "user", "content": "x"}]}).encode())
        body = json.loads(await r.aread())
        assert r.status_code == 404 and body["error"]["param"] == "model"
        r = await client.request("GET", engine_sim.url + "/v1/models", {})
        assert [m["id"] for m in json.loads(await r.aread())["data"]] == ["sim-model"]
    finally:
        await client.aclose()


async def test_dead_upstream_is_a_connect_error():
    client = Http1Client(connect_timeout=2.0)
    with pytest.raises(ConnectError):
        await client.request("POST", f"http://127.0.0.1:{closed_port()}/v1/chat/completions", HEADERS, b"{}")
    await client.aclose()


async def test_connect_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue: further SYNs are dropped, connect hangs
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        await asyncio.sleep(0.05)
        client = Http1Client(connect_timeout=0.3)
        with pytest.raises(ConnectTimeout):
            await client.request("POST", f"http://127.0.0.1:{port}/x", HEADERS, b"{}")
        await client.aclose()
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_read_timeouts_before_headers_and_mid_body():
    async def silent(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(2)

    async def stalls(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await writer.drain()
        await asyncio.sleep(2)

    client = Http1Client(read_timeout=0.2)
    async with raw_server(silent) as (url, _):
        with pytest.raises(ReadTimeout):
            await client.request("POST", url + "/x", HEADERS, b"{}")
    async with raw_server(stalls) as (url, _):
        r = await client.request("POST", url + "/x", HEADERS, b"{}")
        with pytest.raises(ReadTimeout):
            await r.aread()
    await client.aclose()


async def test_framing_chunked_and_until_close_and_malformed():
    async def chunked(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    async def until_close(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    async def cut(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()

    async def junk(reader, writer):
        await reader.read(65536)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    client = Http1Client(read_timeout=5)
    for handler, expected in ((chunked, b"hello world"), (until_close, b"all of it")):
        async with raw_server(handler) as (url, _):
            r = await client.request("POST", url + "/x", HEADERS, b"{}")
            assert await r.aread() == expected
    async with raw_server(cut) as (url, _):
        r = await client.request("POST", url + "/x", HEADERS, b"{}")
        with pytest.raises(RemoteProtocolError):
            await r.aread()
    async with raw_server(junk) as (url, _):
        with pytest.raises(RemoteProtocolError):
            await client.request("POST", url + "/x", HEADERS, b"{}")
    await client.aclose()


async def test_a_connection_the_server_closed_is_replaced():
    async def one_then_close(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # then close, as a keep-alive timeout would

    client = Http1Client()
    async with raw_server(one_then_close) as (url, accepted):
        for _ in range(3):
            r = await client.request("POST", url + "/x", HEADERS, b"{}")
            assert await r.aread() == b"ok"
            await asyncio.sleep(0.1)
        assert len(accepted) == 3
    await client.aclose()


async def test_header_injection_is_refused():
    client = Http1Client()
    with pytest.raises(Exception, match="line break"):
        await client.request("POST", "http://127.0.0.1:1/x", {"authorization": "a\r\nx-evil: 1"}, b"{}")
    await client.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_proxy_maps_dead_and_silent_upstreams_to_openai_errors(tmp_path, policy_file, stream):
    async def silent(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(2)

    body = {"model": "sim-model", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    async with raw_server(silent) as (silent_url, _):
        for upstream, status in ((f"http://127.0.0.1:{closed_port()}/v1", 502), (silent_url + "/v1", 504)):
            settings = make_settings(tmp_path, policy_file, upstreams=[upstream], upstream_read_timeout=0.3)
            app = create_app(settings, embedder=BagOfWordsEmbedder())
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as c:
                    r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == status
            error = r.json()["error"]
            assert error["message"] and error["type"] and r.headers["x-semcache-status"] in {"miss", "bypass"}


async def test_body_pieces_that_arrive_together_are_handed_over_together():
    async def burst(reader, writer):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"".join(b"9\r\ndata: %d\n\n\r\n" % i for i in range(5)))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"9\r\ndata: 5\n\n\r\n0\r\n\r\n")
        await writer.drain()

    client = Http1Client(read_timeout=5)
    async with raw_server(burst) as (url, _):
        r = await client.request("POST", url + "/x", HEADERS, b"{}")
        pieces = [chunk async for chunk in r.aiter_bytes()]
    await client.aclose()
    assert pieces == [b"".join(b"data: %d\n\n" % i for i in range(5)), b"data: 5\n\n"]
