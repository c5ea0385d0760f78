"""Backend selection, the factory's errors, and a light ``import gpu_embed``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import gpu_embed
from gpu_embed import factory
from gpu_embed.factory import auto_candidates
from gpu_embed.hardware import int8_variant
from gpu_embed.settings import CACHE_DIR_ENV, EmbedderSettings, default_cache_dir
from semcache.errors import EmbedderError
from semcache.protocols import Embedder


def test_auto_order():
    assert auto_candidates(cuda=True, onnx_unsupported=None) == ["cuda", "onnx-int8", "onnx-fp32", "torch-cpu"]
    assert auto_candidates(cuda=False, onnx_unsupported=None) == ["onnx-int8", "onnx-fp32", "torch-cpu"]
    assert auto_candidates(cuda=False, onnx_unsupported="Dense head") == ["torch-cpu"]


def test_int8_recipe_follows_cpu_flags():
    assert int8_variant(frozenset({"avx2", "avx512f", "avx512_vnni"})) == "vnni"
    assert int8_variant(frozenset({"avx2", "avx_vnni"})) == "vnni"
    assert int8_variant(frozenset({"avx2", "fma"})) == "avx2"


async def test_auto_on_a_machine_without_gpu_picks_onnx_int8(settings, monkeypatch):
    monkeypatch.setattr(factory, "cuda_available", lambda: False)
    emb = gpu_embed.build_embedder(settings.model_copy(update={"backend": "auto"}))
    try:
        assert isinstance(emb, Embedder)
        assert "/onnx/int8-" in emb.identity
        rows = await emb.embed(["how do I reset my password?"])
        assert rows.shape == (1, emb.dim) and rows.dtype == np.float32
    finally:
        await emb.aclose()


def test_auto_falls_back_to_fp32_when_int8_check_fails(settings, monkeypatch, int8_backend):
    monkeypatch.setattr(factory, "cuda_available", lambda: False)
    failed = int8_backend.verdict.model_copy(update={"passed": False})
    from gpu_embed.backends import onnx

    real = onnx.ensure_int8
    monkeypatch.setattr(onnx, "ensure_int8", lambda *a, **k: (real(*a, **k)[0], failed))
    backend = factory._load_auto(settings)
    assert backend.identity.endswith("/onnx/fp32")


def test_remote_needs_url_and_a_reachable_server():
    with pytest.raises(EmbedderError, match="remote_url"):
        gpu_embed.build_embedder(EmbedderSettings(backend="remote"))
    with pytest.raises(EmbedderError, match="cannot reach"):
        gpu_embed.build_embedder(EmbedderSettings(backend="remote", remote_url="http://127.0.0.1:9",
                                                  remote_timeout_s=0.5))


def test_not_a_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedderError, match="not a local sentence-transformers model"):
        gpu_embed.build_embedder(EmbedderSettings(backend="onnx-fp32", model_path=tmp_path))


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert EmbedderSettings().cache_dir == tmp_path
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert str(default_cache_dir()).endswith(".cache/semcache/onnx")


def test_settings_defaults_and_validation():
    s = EmbedderSettings()
    assert (s.backend, s.max_batch_size, s.max_wait_ms, s.max_queue, s.lru_size) == ("auto", 64, 1.0, 1024, 4096)
    assert (s.model_path / "tokenizer.json").exists()
    with pytest.raises(ValueError):
        EmbedderSettings(backend="tpu")
    with pytest.raises(ValueError):
        EmbedderSettings(max_batch_size=0)


def test_import_is_light():
    code = ("import sys, gpu_embed, gpu_embed.factory, gpu_embed.server, gpu_embed.remote;"
            "import json; print(json.dumps([m for m in ('torch', 'sentence_transformers', 'onnxruntime',"
            " 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
