"""Issue #14 item 4: header size cap, head and body deadlines, connection cap (real sockets, real server)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evaluation.bench.stall_harness import HealthProber, proxy_process
from evaluation.replay.systems import Process

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def strict_proxy(tmp_path_factory, engine_sim) -> Iterator[Process]:
    """A proxy with short deadlines and a small connection cap, so the tests take seconds."""
    env = {"SEMCACHE_HEADER_TIMEOUT_S": "1", "SEMCACHE_BODY_TIMEOUT_S": "2", "SEMCACHE_MAX_CONNECTIONS": "64"}
    with proxy_process(f"{engine_sim.url}/v1", tmp_path_factory.mktemp("strict"), env=env) as server:
        yield server


def connect(server: Process, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def trickle(sock: socket.socket, pieces, delay_s: float) -> None:
    """Send ``pieces`` one by one, ``delay_s`` apart, until done or the server closes the connection."""
    try:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(delay_s)
    except (BrokenPipeError, ConnectionResetError):
        pass


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_huge_header_is_431_and_costs_no_memory(proxy):
    before = rss_kib(proxy.proc.pid)
    sock = connect(proxy)
    sent = 0
    try:
        sock.sendall(HEAD + b"X-Big: ")
        chunk = b"a" * 65536
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert sent < 64 * 1024 * 1024  # cut off long before the end
    assert rss_kib(proxy.proc.pid) - before < 20_000
    assert httpx.get(proxy.url + "/healthz", timeout=5).status_code == 200


def test_default_limits_allow_normal_headers(proxy):
    answer = httpx.get(proxy.url + "/healthz", headers={"x-fine": "b" * 8000}, timeout=5)
    assert answer.status_code == 200


def test_a_trickled_body_is_cut_off(strict_proxy):
    sock = connect(strict_proxy)
    sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n")
    started = time.monotonic()
    trickle(sock, [b"{"] * 20, 0.5)  # one byte every 0.5 s: 10 s if never cut off
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request body not received" in answer
    assert time.monotonic() - started < 6


def test_a_trickled_head_is_cut_off(strict_proxy):
    sock = connect(strict_proxy)
    started = time.monotonic()
    trickle(sock, [bytes([b]) for b in HEAD], 0.2)  # slowloris: one byte of the head every 0.2 s
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 4


def test_idle_connections_are_closed_and_capped(strict_proxy):
    with HealthProber(strict_proxy.url, interval_s=0.05) as probe:
        socks = [connect(strict_proxy) for _ in range(60)]
        time.sleep(0.3)
        # Over the cap (64, the prober's connection included): refused at once.
        extra = [connect(strict_proxy) for _ in range(10)]
        refused = [read_all(s) for s in extra]
        assert sum(r.startswith(b"HTTP/1.1 503") for r in refused) >= 6, refused
        # The idle ones are closed by the server within the head deadline (1 s).
        started = time.monotonic()
        for s in socks:
            assert read_all(s) == b""
        assert time.monotonic() - started < 3
        for s in socks + extra:
            s.close()
        time.sleep(0.2)
    assert httpx.get(strict_proxy.url + "/healthz", timeout=5).status_code == 200
