"""Fixtures of the proxy's in-process tests: the proxy app over the engine simulator (ASGI)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from proxy.settings import ProxySettings

TEST_POLICIES = """\
defaults:
  threshold: 0.80
  cache_truncated: true
categories:
  private:
    cacheable: false
    match: {keywords: [password]}
  faq:
    shared_namespace: public
    match: {keywords: [faq]}
  default: {}
"""
ADMIN_TOKEN = "admin-secret"


class BagOfWordsEmbedder:
    """A deterministic stand-in embedder for proxy-logic tests (hashed bag of words).

    Only for tests of HTTP and serving logic; the integration tests use the
    real embedder.
    """

    dim = 256
    identity = "test/bag-of-words"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) or ["<empty>"]:
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[row] /= np.linalg.norm(out[row])
        return out


def make_settings(tmp_path: Path, policy_file: Path, **overrides) -> ProxySettings:
    values = dict(upstreams=["http://sim/v1"], sqlite_path=tmp_path / "cache.db", policies=policy_file,
                  admin_token=ADMIN_TOKEN)
    values.update(overrides)
    return ProxySettings(**values)


class Harness:
    """The proxy app in process, its upstream the simulator in process."""

    def __init__(self, client: httpx.AsyncClient, sim_app, app):
        self.client = client
        self.sim = sim_app
        self.app = app

    def upstream_requests(self) -> float:
        """Requests the simulated engine has finished (from its own metrics)."""
        registry = self.sim.state.engine.metrics.registry
        return sum(s.value for m in registry.collect() if m.name == "vllm:request_success"
                   for s in m.samples if s.name.endswith("_total"))




def metric_sample(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples (in exposition ``text``) whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(TEST_POLICIES)
    return path


@pytest.fixture
async def harness(tmp_path, policy_file) -> AsyncIterator[Harness]:
    sim_app = create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=0.0, default_max_tokens=64))
    app = create_app(make_settings(tmp_path, policy_file), embedder=BagOfWordsEmbedder(),
                     upstream_transport=httpx.ASGITransport(app=sim_app))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy",
                                     headers={"authorization": "Bearer key-a"}) as client:
            yield Harness(client, sim_app, app)


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def make_proxy(tmp_path, policy_file) -> Callable:
    """``async with make_proxy(**settings) as client``: a proxy app in process, no upstream."""

    @asynccontextmanager
    async def make(**overrides) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(make_settings(tmp_path, policy_file, **overrides), embedder=BagOfWordsEmbedder())
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as client:
                yield client

    return make

