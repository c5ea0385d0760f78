"""ONNX Runtime on CPU: :class:`OnnxBackend` (fp32 or int8).

The model is exported on first use into the cache directory (see
:mod:`gpu_embed.export`); at run time only onnxruntime and tokenizers are used.
Pooling happens in the graph; normalisation in numpy.

Both precisions run one text per model call, never padded batches:

* int8 must: dynamic quantisation picks each activation's int8 scale from
  the whole input tensor, so in a padded batch a text's vector depends on its
  neighbours (measured: cosine down to 0.95 between a text embedded alone and
  in a batch of 32) -- a cache key must not depend on who else was asking.
* fp32 gains nothing from batches on CPU: padding wastes what batching saves
  (measured: 198-213 sentences/s in batches of 32 vs 281-333 row by row in
  lanes, same run).

Rows run in parallel *lanes*: with several texts at hand (a micro-batch), each
core takes rows from a shared counter and runs them on a one-thread session.
On small inputs (a question is ~15 tokens) ONNX Runtime cannot keep two
intra-op threads busy inside one row, while two rows side by side use both
cores: measured on the 2-core box, 600-670 int8 rows/s with one two-thread
session vs 750-930 with two one-thread lanes (raw sessions, QQP questions). A
lone text still runs on the all-cores session, the lowest latency for one row
(1.4 ms vs 2.4 ms); both sessions give bit-identical int8 rows (tested).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from semcache.errors import EmbedderError

from gpu_embed.backends.base import encode_in_chunks, l2_normalize, make_identity
from gpu_embed.export import ensure_fp32, ensure_int8
from gpu_embed.hardware import cpu_count, int8_variant
from gpu_embed.model_dir import ModelInfo
from gpu_embed.probe import ProbeVerdict
from gpu_embed.tokenize import TextTokenizer

def _session(path: Path, threads: int | None, spin_between_runs: bool = False):
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise EmbedderError("the 'onnxruntime' package is required for ONNX backends") from exc
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Parallelism comes from intra-op threads (the all-cores session) or from
    # lanes calling a one-thread session side by side; never from inter-op.
    options.intra_op_num_threads = threads or cpu_count()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if not spin_between_runs:
        # Threads spin inside a run (its many short parallel sections need them hot) but stop
        # when it returns, instead of holding the cores the verifier's run needs next.
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EmbedderError(f"cannot load ONNX model {path}: {exc}") from exc


class OnnxRunner:
    """ONNX sessions + tokenizer: texts in, unit float32 rows out, one text per call.

    A lone text runs on the ``threads`` (default: all cores) session; several
    texts run ``lanes`` (default: the CPU cores) rows side by side.
    """

    def __init__(self, path: Path, info: ModelInfo, *, threads: int | None = None, head_tokens: int = 64,
                 lanes: int | None = None, spin_between_runs: bool = False):
        self.path = Path(path)
        self._session = _session(self.path, threads, spin_between_runs)
        self._tokenizer = TextTokenizer(info.path, info.max_seq_length, head_tokens)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dim = info.dim
        self.lanes = max(1, lanes or cpu_count())
        self._lane_session = _session(self.path, 1) if self.lanes > 1 else None
        self._lane_pool = (ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="gpu-embed-lane")
                           if self.lanes > 1 else None)

    def _run(self, texts: list[str], session=None) -> np.ndarray:
        feeds = {k: v for k, v in self._tokenizer.encode(texts).items() if k in self._inputs}
        (pooled,) = (session or self._session).run(["embedding"], feeds)
        return l2_normalize(pooled)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) <= 1 or self._lane_pool is None:
            return encode_in_chunks(texts, 1, self._run, self.dim)
        return self._encode_in_lanes(list(texts))

    def _encode_in_lanes(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Rows differ in length, so lanes pull the next index instead of
        # taking fixed shares; next() on a count is atomic under the GIL.
        counter = itertools.count()
        session = self._lane_session

        def lane() -> None:
            while (i := next(counter)) < len(texts):
                out[i] = self._run([texts[i]], session)[0]

        helpers = [self._lane_pool.submit(lane) for _ in range(min(self.lanes, len(texts)) - 1)]
        try:
            lane()  # the calling thread is a lane too
        finally:
            for helper in helpers:
                helper.result()  # re-raises a lane's error after all lanes stopped
        return out

    def close(self) -> None:
        """Stop the lane threads and drop the sessions."""
        if self._lane_pool is not None:
            self._lane_pool.shutdown(wait=True)
            self._lane_pool = None
        self._session = self._lane_session = None


class OnnxBackend:
    """ONNX Runtime CPU backend; ``precision`` is ``"fp32"`` or ``"int8"``."""

    kind = "onnx"

    def __init__(self, info: ModelInfo, cache_dir: Path, precision: str = "int8", *,
                 threads: int | None = None, head_tokens: int = 64, lanes: int | None = None,
                 spin_between_runs: bool = False):
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
        self._runner = OnnxRunner(path, info, threads=threads, head_tokens=head_tokens, lanes=lanes,
                                  spin_between_runs=spin_between_runs)
        self.model_file = path
        self.dim = info.dim
        self.identity = make_identity(info, self.kind, self.precision, head_tokens)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._runner.encode(texts)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
        self._runner = None  # type: ignore[assignment]
