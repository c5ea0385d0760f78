"""Real model: ONNX export and reuse, normalisation, batched == single, backends agree."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

from gpu_embed import export
from gpu_embed.embedder import LocalEmbedder
from gpu_embed.model_dir import load_model_info
from gpu_embed.probe import PROBE_SENTENCES
from gpu_embed.settings import default_model_path

TEXTS = list(PROBE_SENTENCES[:24])


def test_rows_are_unit_float32(int8_backend, fp32_backend):
    for backend in (int8_backend, fp32_backend):
        rows = backend.encode(TEXTS)
        assert rows.dtype == np.float32 and rows.shape == (len(TEXTS), 384)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_identity_names_model_backend_and_precision(int8_backend, fp32_backend):
    info = load_model_info(default_model_path())
    assert fp32_backend.identity == f"all-MiniLM-L6-v2@{info.short_hash}/onnx/fp32"
    assert int8_backend.identity.startswith(f"all-MiniLM-L6-v2@{info.short_hash}/onnx/int8-")
    assert int8_backend.identity != fp32_backend.identity


@pytest.mark.parametrize("which", ["int8_backend", "fp32_backend"])
async def test_batched_equals_single(which, request):
    backend = request.getfixturevalue(which)
    emb = LocalEmbedder(backend, lru_size=0, max_batch_size=64)
    singles = [await emb.embed([t]) for t in TEXTS]
    batched = await asyncio.gather(*(emb.embed([t]) for t in TEXTS))
    assert emb.batcher.stats.largest_batch > 1  # the concurrent calls really were batched
    whole = await emb.embed(TEXTS)
    for i, single in enumerate(singles):
        # Padding changes summation order only: equal to float tolerance.
        np.testing.assert_allclose(batched[i], single, atol=2e-5)
        np.testing.assert_allclose(whole[i : i + 1], single, atol=2e-5)
    await emb.batcher.aclose()  # not emb.aclose(): the backend is shared by the session


def test_int8_is_close_to_fp32(int8_backend, fp32_backend):
    cos = np.sum(int8_backend.encode(TEXTS) * fp32_backend.encode(TEXTS), axis=1)
    assert cos.mean() > 0.99 and cos.min() > 0.95
    assert int8_backend.verdict is not None and int8_backend.verdict.passed


def test_fp32_matches_torch_cpu(settings, fp32_backend):
    pytest.importorskip("sentence_transformers")
    from gpu_embed.factory import load_backend

    torch_backend = load_backend("torch-cpu", settings)
    assert torch_backend.identity.endswith("/torch/fp32")
    cos = np.sum(torch_backend.encode(TEXTS) * fp32_backend.encode(TEXTS), axis=1)
    assert cos.min() > 0.9999


def test_export_is_reused_not_redone(settings, int8_backend, fp32_backend, monkeypatch):
    info = load_model_info(settings.model_path)
    folder = export.model_cache_dir(info, settings.cache_dir)
    assert folder.is_relative_to(settings.cache_dir)  # never inside site-packages
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.onnx")}
    assert {"model-fp32.onnx"} < stamps.keys()

    def forbidden(*args, **kwargs):
        raise AssertionError("export ran again")

    monkeypatch.setattr(export, "_export_raw", forbidden)
    import onnxruntime.quantization

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", forbidden)
    from gpu_embed.factory import load_backend

    again = load_backend("onnx-int8", settings)
    assert again.model_file == int8_backend.model_file
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.onnx")} == stamps
    assert not list(folder.glob(".tmp-*"))  # no half-written leftovers
    assert oct(os.stat(again.model_file).st_mode & 0o777) == "0o644"
    np.testing.assert_allclose(again.encode(TEXTS[:3]), int8_backend.encode(TEXTS[:3]), atol=1e-6)


@pytest.fixture(scope="module")
def int8_three_lanes(settings):
    from gpu_embed.factory import load_backend

    backend = load_backend("onnx-int8", settings.model_copy(update={"onnx_lanes": 3}))
    yield backend
    backend.close()


def test_int8_lanes_give_exactly_the_rows_of_one_at_a_time(int8_three_lanes, monkeypatch):
    runner = int8_three_lanes._runner
    assert runner.lanes == 3
    texts = (TEXTS * 3)[:64]
    alone = np.concatenate([int8_three_lanes.encode([t]) for t in texts])
    threads: set[str] = set()
    real_run = runner._run

    def spy(batch, session=None):
        threads.add(threading.current_thread().name)
        return real_run(batch, session)

    monkeypatch.setattr(runner, "_run", spy)
    together = int8_three_lanes.encode(texts)
    # Lane sessions use one thread, the lone-text session all cores: int8 must
    # still give bit-identical rows, or cache keys would depend on traffic.
    np.testing.assert_array_equal(together, alone)
    assert len(threads) > 1  # rows really ran side by side


def test_an_error_in_a_lane_reaches_the_caller_and_lanes_keep_working(int8_three_lanes, monkeypatch):
    runner = int8_three_lanes._runner
    real_run = runner._run

    def failing(batch, session=None):
        if batch == ["poison"]:
            raise RuntimeError("bad row")
        return real_run(batch, session)

    monkeypatch.setattr(runner, "_run", failing)
    with pytest.raises(RuntimeError, match="bad row"):
        int8_three_lanes.encode(TEXTS[:10] + ["poison"] + TEXTS[10:20])
    monkeypatch.undo()
    rows = int8_three_lanes.encode(TEXTS[:6])
    np.testing.assert_array_equal(rows, np.concatenate([int8_three_lanes.encode([t]) for t in TEXTS[:6]]))


def test_one_lane_starts_no_threads_and_close_stops_the_lanes(settings):
    from gpu_embed.factory import load_backend

    one = load_backend("onnx-int8", settings.model_copy(update={"onnx_lanes": 1}))
    assert one._runner.lanes == 1 and one._runner._lane_pool is None
    two = load_backend("onnx-int8", settings.model_copy(update={"onnx_lanes": 2}))
    np.testing.assert_array_equal(two.encode(TEXTS), one.encode(TEXTS))
    pool = two._runner._lane_pool
    two.close()
    assert pool._shutdown
    assert not [t for t in threading.enumerate() if t.name.startswith("gpu-embed-lane") and t in pool._threads]
    one.close()
