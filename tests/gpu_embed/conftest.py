"""Shared fixtures: a real ONNX export in a per-session cache, a live embed-server."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gpu_embed.settings import EmbedderSettings
from evaluation.workloads.data import DATA as SHARED_DATA



@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> Path:
    """Where this session exports ONNX models (``SEMCACHE_TEST_CACHE_DIR`` to reuse across runs)."""
    env = os.environ.get("SEMCACHE_TEST_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def settings(onnx_cache) -> EmbedderSettings:
    return EmbedderSettings(cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def int8_backend(settings):
    from gpu_embed.factory import load_backend

    return load_backend("onnx-int8", settings)


@pytest.fixture(scope="session")
def fp32_backend(settings):
    from gpu_embed.factory import load_backend

    return load_backend("onnx-fp32", settings)


class FakeBackend:
    """A deterministic numpy "model": row i encodes hash(text); counts calls."""

    kind = "fake"
    precision = "fp32"
    identity = "fake@0/fake/fp32"
    dim = 8

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.delay_s = delay_s
        self.gate = gate
        self.calls: list[int] = []
        self.fail_next: Exception | None = None
        self.closed = False

    def encode(self, texts) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls.append(len(texts))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        rng = [np.random.default_rng(abs(hash(t)) % (2**32)).normal(size=self.dim) for t in texts]
        rows = np.asarray(rng, dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real uvicorn server on a free loopback port, in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("embed-server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server():
    """Factory: ``with live_server(app) as srv: srv.url``."""
    return LiveServer


def pytest_report_header(config) -> str:
    return f"gpu_embed shared data: {SHARED_DATA} ({'present' if SHARED_DATA.exists() else 'absent'})"


@pytest.fixture(scope="session")
def qqp_path() -> Iterator[Path]:
    path = SHARED_DATA / "qqp" / "qqp-dev.jsonl"
    if not path.exists():
        pytest.skip(f"shared pair data absent: {path}")
    yield path
