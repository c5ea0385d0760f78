"""The one way to build an embedder: :func:`build_embedder` and backend selection.

``auto`` picks, in order: CUDA (torch fp16) when a GPU is usable; ONNX int8 when
its built-in quality check passed for this model and CPU; ONNX fp32; torch on
CPU (models the ONNX path cannot export). A candidate that fails to load is
logged and the next one is tried; an explicitly named backend either loads or
raises :class:`~semcache.errors.EmbedderError` with the reason.
"""

from __future__ import annotations

import logging

from semcache.errors import EmbedderError

from gpu_embed.backends.base import Backend
from gpu_embed.embedder import LocalEmbedder
from gpu_embed.hardware import cuda_available
from gpu_embed.model_dir import load_model_info
from gpu_embed.settings import EmbedderSettings

log = logging.getLogger(__name__)


def auto_candidates(*, cuda: bool, onnx_unsupported: str | None) -> list[str]:
    """The backends ``auto`` tries, best first, for a machine and model."""
    candidates = ["cuda"] if cuda else []
    if onnx_unsupported is None:
        candidates += ["onnx-int8", "onnx-fp32"]
    candidates.append("torch-cpu")
    return candidates


def load_backend(name: str, settings: EmbedderSettings, *, require_quality: bool = False) -> Backend:
    """Load one named local backend (not ``auto`` or ``remote``).

    With ``require_quality`` an int8 model whose built-in check failed is
    refused (that is how ``auto`` skips it); named explicitly it is used, with
    a warning.
    """
    info = load_model_info(settings.model_path)
    if name in ("onnx-int8", "onnx-fp32"):
        from gpu_embed.backends.onnx import OnnxBackend

        backend = OnnxBackend(info, settings.cache_dir, name.split("-")[1],
                              threads=settings.onnx_threads, head_tokens=settings.head_tokens,
                              lanes=settings.onnx_lanes, spin_between_runs=settings.onnx_spin_between_runs)
        verdict = backend.verdict
        if verdict is not None and not verdict.passed:
            message = (f"int8 quality check failed for {info.name} on this CPU "
                       f"(probe cosine min {verdict.min_cosine:.4f}, mean {verdict.mean_cosine:.4f})")
            if require_quality:
                backend.close()
                raise EmbedderError(message)
            log.warning("%s; using it because backend='onnx-int8' was requested", message)
        return backend
    if name in ("torch-cpu", "cuda"):
        from gpu_embed.backends.sbert import TorchBackend

        return TorchBackend(info, "cuda" if name == "cuda" else "cpu", head_tokens=settings.head_tokens,
                            cuda_batch_size=settings.cuda_batch_size, threads=settings.onnx_threads)
    raise EmbedderError(f"unknown local backend {name!r}")


def _load_auto(settings: EmbedderSettings) -> Backend:
    info = load_model_info(settings.model_path)
    failures = []
    for name in auto_candidates(cuda=cuda_available(), onnx_unsupported=info.onnx_unsupported):
        try:
            backend = load_backend(name, settings, require_quality=True)
        except EmbedderError as exc:
            log.warning("embedder backend %s unavailable: %s", name, exc)
            failures.append(f"{name}: {exc}")
            continue
        log.info("embedder backend: %s", backend.identity)
        return backend
    raise EmbedderError("no embedder backend could be loaded: " + "; ".join(failures))


def build_embedder(settings: EmbedderSettings | None = None):
    """Build the embedder ``settings`` describe; returns an object satisfying ``Embedder``.

    Loading happens here, synchronously (seconds; the first run on a machine
    also exports the ONNX model, ~20 s): call it at start-up, or via
    ``await asyncio.to_thread(build_embedder, settings)`` from a running loop.
    It never touches an event loop, so it is safe to call from one. Close the
    result with ``await embedder.aclose()``.
    """
    settings = settings or EmbedderSettings()
    if settings.backend == "remote":
        from gpu_embed.remote import RemoteEmbedder

        if not settings.remote_url:
            raise EmbedderError("backend 'remote' needs remote_url (the embed-server's base URL)")
        return RemoteEmbedder.connect_sync(settings)
    backend = _load_auto(settings) if settings.backend == "auto" else load_backend(settings.backend, settings)
    if settings.warmup:
        backend.encode(["warm-up"])  # first ORT/torch call allocates; keep it off the first request
    return LocalEmbedder(backend, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                         max_queue=settings.max_queue, lru_size=settings.lru_size)
