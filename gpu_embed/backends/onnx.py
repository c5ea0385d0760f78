"""ONNX Runtime on CPU: :class:`OnnxBackend` (fp32 or int8).

The model is exported on first use into the cache directory (see
:mod:`gpu_embed.export`); at run time only onnxruntime and tokenizers are used.
Pooling happens in the graph; normalisation in numpy.

int8 runs one text per model call. Dynamic quantisation picks each
activation's int8 scale from the whole input tensor, so in a padded batch a
text's vector depends on its neighbours (measured: cosine down to 0.95
between a text embedded alone and in a batch of 32) -- a cache key must not
depend on who else was asking. Row by row, int8 vectors are batch-invariant,
and on CPU this costs nothing measurable (int8 throughput alone vs batched
was within noise: 326-353 vs 306-383 sentences/s on a loaded 2-core box).
fp32 is batch-invariant to float tolerance and runs whole batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semcache.errors import EmbedderError

from gpu_embed.backends.base import encode_in_chunks, l2_normalize, make_identity
from gpu_embed.export import ensure_fp32, ensure_int8
from gpu_embed.hardware import cpu_count, int8_variant
from gpu_embed.model_dir import ModelInfo
from gpu_embed.probe import ProbeVerdict
from gpu_embed.tokenize import TextTokenizer

# CPU batches beyond this gain nothing (the cores are saturated) and cost
# padding memory; larger requests are split.
_CPU_CHUNK = 64


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise EmbedderError("the 'onnxruntime' package is required for ONNX backends") from exc
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One request runs at a time (the batcher's single worker), so all cores go
    # to intra-op parallelism and none to inter-op.
    options.intra_op_num_threads = threads or cpu_count()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EmbedderError(f"cannot load ONNX model {path}: {exc}") from exc


class OnnxRunner:
    """One ONNX session + tokenizer: texts in, unit float32 rows out."""

    def __init__(self, path: Path, info: ModelInfo, *, threads: int | None = None, head_tokens: int = 64,
                 row_by_row: bool = False):
        self.path = Path(path)
        self._chunk = 1 if row_by_row else _CPU_CHUNK
        self._session = _session(self.path, threads)
        self._tokenizer = TextTokenizer(info.path, info.max_seq_length, head_tokens)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dim = info.dim

    def _run(self, texts: list[str]) -> np.ndarray:
        feeds = {k: v for k, v in self._tokenizer.encode(texts).items() if k in self._inputs}
        (pooled,) = self._session.run(["embedding"], feeds)
        return l2_normalize(pooled)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode_in_chunks(texts, self._chunk, self._run, self.dim)


class OnnxBackend:
    """ONNX Runtime CPU backend; ``precision`` is ``"fp32"`` or ``"int8"``."""

    kind = "onnx"

    def __init__(self, info: ModelInfo, cache_dir: Path, precision: str = "int8", *,
                 threads: int | None = None, head_tokens: int = 64):
        if precision == "fp32":
            path = ensure_fp32(info, cache_dir)
            self.verdict: ProbeVerdict | None = None
            self.precision = "fp32"
        elif precision == "int8":
            variant = int8_variant()
            path, self.verdict = ensure_int8(info, cache_dir, variant)
            self.precision = f"int8-{variant}"
        else:
            raise EmbedderError(f"unknown ONNX precision {precision!r} (fp32 or int8)")
        self._runner = OnnxRunner(path, info, threads=threads, head_tokens=head_tokens,
                                  row_by_row=self.precision != "fp32")
        self.model_file = path
        self.dim = info.dim
        self.identity = make_identity(info, self.kind, self.precision, head_tokens)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._runner.encode(texts)

    def close(self) -> None:
        self._runner = None  # type: ignore[assignment]  # drops the session
