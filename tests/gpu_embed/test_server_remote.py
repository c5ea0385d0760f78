"""The embed-server (OpenAI shape, errors) and the remote embedder against a live server."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from gpu_embed.embedder import LocalEmbedder
from gpu_embed.remote import RemoteEmbedder
from gpu_embed.server import create_embed_app
from gpu_embed.settings import EmbedderSettings
from semcache.errors import EmbedderError, EmbedderOverloadedError
from tests.gpu_embed.conftest import FakeBackend

TEXTS = ["how do I reset my password?", "what is the capital of france?", "hi"]


@pytest.fixture(scope="module")
def real_server(int8_backend):
    from tests.gpu_embed.conftest import LiveServer

    local = LocalEmbedder(int8_backend, lru_size=0)
    with LiveServer(create_embed_app(embedder=local)) as srv:
        yield srv, local


async def test_remote_matches_local(real_server):
    srv, local = real_server
    remote = RemoteEmbedder.connect_sync(EmbedderSettings(backend="remote", remote_url=srv.url))
    try:
        assert remote.identity == local.identity and remote.dim == local.dim
        rows = await remote.embed(TEXTS)
        np.testing.assert_allclose(rows, local.backend.encode(TEXTS), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
        many = await asyncio.gather(*(remote.embed([f"question number {i}"]) for i in range(100)))
        assert all(m.shape == (1, 384) for m in many)
        np.testing.assert_allclose(many[7], local.backend.encode(["question number 7"]), atol=1e-6)
    finally:
        await remote.aclose()


def test_openai_shape_and_errors(real_server):
    srv, local = real_server
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        body = client.post("/v1/embeddings", json={"input": "hello", "model": "anything"}).json()
        assert body["object"] == "list" and body["model"] == local.identity
        assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
        assert len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["prompt_tokens"] == 1
        for bad in ({"input": [1, 2, 3]}, {"input": [[1, 2]]}, {"input": []}, {"nope": 1},
                    {"input": "x", "dimensions": 12}):
            r = client.post("/v1/embeddings", json=bad)
            assert r.status_code == 400, bad
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
        assert client.get("/healthz").json()["identity"] == local.identity
        assert client.get("/v1/embeddings/identity").json()["dim"] == 384


class _Scripted:
    """An Embedder whose behaviour the test chooses."""

    dim = 8

    def __init__(self, identity="fake@0/fake/fp32", error=None, delay=0.0):
        self.identity, self.error, self.delay = identity, error, delay

    async def embed(self, texts):
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return FakeBackend().encode(texts)

    async def aclose(self):
        pass


async def test_overload_and_failure_map_to_embedder_errors(live_server):
    scripted = _Scripted()
    with live_server(create_embed_app(embedder=scripted)) as srv:
        remote = RemoteEmbedder.connect_sync(EmbedderSettings(backend="remote", remote_url=srv.url))
        try:
            scripted.error = EmbedderOverloadedError("queue full")
            with pytest.raises(EmbedderOverloadedError):
                await remote.embed(["a"])
            scripted.error = EmbedderError("model crashed")
            with pytest.raises(EmbedderError, match="500"):
                await remote.embed(["b"])
            scripted.error = None
            scripted.identity = "other@1/onnx/fp32"  # the server now serves another model
            with pytest.raises(EmbedderError, match="now serves"):
                await remote.embed(["c"])
        finally:
            await remote.aclose()


async def test_timeout_maps_to_embedder_error(live_server):
    with live_server(create_embed_app(embedder=_Scripted(delay=2.0))) as srv:
        remote = RemoteEmbedder.connect_sync(
            EmbedderSettings(backend="remote", remote_url=srv.url, remote_timeout_s=0.2))
        try:
            with pytest.raises(EmbedderError, match="timed out"):
                await remote.embed(["slow"])
        finally:
            await remote.aclose()


def test_app_builds_its_embedder_from_settings(live_server, settings):
    with live_server(create_embed_app(settings.model_copy(update={"backend": "onnx-fp32"}))) as srv:
        info = httpx.get(f"{srv.url}/healthz", timeout=5).json()
        assert info["status"] == "ok" and info["identity"].endswith("/onnx/fp32")
        assert info["backend"] == "onnx" and info["precision"] == "fp32"
        r = httpx.post(f"{srv.url}/v1/embeddings", json={"input": ["a", "b"], "encoding_format": "base64"})
        assert [d["index"] for d in r.json()["data"]] == [0, 1]
