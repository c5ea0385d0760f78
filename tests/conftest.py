"""Shared fixtures: free ports, a real redis-server, live uvicorn servers, live engines."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from evaluation.replay.fleet import Redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """An ASGI app served by real uvicorn (uvloop + httptools) in a thread with its own loop."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="uvloop", http="httptools",
                                log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class RedisServer(Redis):
    """A throwaway redis-server: no persistence, its own port and directory."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, "--save", "", "--appendonly", "no")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def engine_sim() -> Iterator[LiveServer]:
    """The engine simulator serving model ``sim-model`` (fast: 1 ms per output token)."""
    from evaluation.engine_sim import SimSettings, create_app

    settings = SimSettings(model="sim-model", decode_ms_per_token=1.0, default_max_tokens=64)
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory) -> Iterator[str]:
    """The real local engine (SmolLM2 on llama.cpp); yields its base URL."""
    from proxy.upstream.local_llm import LocalLLM

    engine = LocalLLM(threads=2, log_path=tmp_path_factory.mktemp("llm") / "llama.log")
    with engine:
        httpx.get(engine.base_url + "/models", timeout=5).raise_for_status()
        yield engine.base_url


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(app) as server``: serve an ASGI app with real uvicorn."""
    return LiveServer


@pytest.fixture
def fresh_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may stop it)."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
