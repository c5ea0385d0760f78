"""What every backend provides: the :class:`Backend` protocol and shared helpers.

A backend is synchronous and single-threaded from the caller's point of view:
the micro-batcher calls ``encode`` from one worker thread, off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from gpu_embed.model_dir import ModelInfo

DEFAULT_HEAD_TOKENS = 64


class Backend(Protocol):
    """A loaded model that turns texts into unit float32 rows."""

    kind: str  # "onnx", "torch", "cuda"
    precision: str  # "fp32", "fp16", "int8-vnni", ...
    identity: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return ``(len(texts), dim)`` float32, L2-normalised rows."""
        ...

    def close(self) -> None:
        """Release the model (sessions, GPU memory)."""
        ...


def make_identity(info: ModelInfo, kind: str, precision: str, head_tokens: int) -> str:
    """``name@hash/kind/precision`` (plus the truncation rule when not the default).

    The hash is of the model's files, so a retrained model in the same folder
    never shares cache keys with the old one; the truncation rule changes the
    vectors of long prompts, so a non-default one is part of the identity too.
    """
    identity = f"{info.name}@{info.short_hash}/{kind}/{precision}"
    if head_tokens != DEFAULT_HEAD_TOKENS:
        identity += f"/head{head_tokens}"
    return identity


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale rows to unit length (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # The bundled MiniLM folder lacks its Normalize module, and fp16/int8 drift
    # off the unit sphere anyway: always normalise here, explicitly.
    np.maximum(norms, 1e-12, out=norms)
    return vectors / norms


def encode_in_chunks(
    texts: Sequence[str], chunk: int, run: Callable[[list[str]], np.ndarray], dim: int
) -> np.ndarray:
    """Run ``run`` over chunks of at most ``chunk`` texts, grouped by length.

    Sorting by length before chunking keeps padding (wasted compute) low when
    a large batch mixes short and long texts; rows come back in input order.
    """
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    if len(texts) <= chunk:
        return run(list(texts))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        out[idx] = run([texts[i] for i in idx])
    return out
