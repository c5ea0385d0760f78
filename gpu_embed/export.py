"""Exporting a local model to ONNX (fp32, int8) in a cache directory, once.

Layout: ``<cache_dir>/<model>-<content hash>-ort<version>/``
``model-fp32.onnx``, ``model-int8-<variant>.onnx`` and
``int8-<variant>.verdict.json`` (the built-in quality check, see
:mod:`gpu_embed.probe`). Files are written to a temporary name and renamed, and
exports hold an exclusive ``flock`` on ``.lock``, so concurrent first starts
(several proxy workers) neither corrupt nor duplicate the work; later starts
just find the files.

The export needs torch + transformers (the ``semcache[torch]`` extra) once;
running the exported model needs only onnxruntime and tokenizers (no optimum).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from semcache.errors import EmbedderError

from gpu_embed.model_dir import ModelInfo
from gpu_embed.probe import ProbeVerdict, run_probe

log = logging.getLogger(__name__)

_OPSET = 17


def model_cache_dir(info: ModelInfo, cache_dir: Path) -> Path:
    """The folder holding this model's exports (keyed by content and ORT version)."""
    import onnxruntime

    return Path(cache_dir) / f"{info.name}-{info.content_hash[:16]}-ort{onnxruntime.__version__}"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tmp_path(folder: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp makes 0600; the cache may be shared between users
    return Path(name)


def _export_raw(info: ModelInfo, out: Path) -> None:
    """``torch.onnx.export`` of transformer + pooling (normalisation is done in numpy)."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EmbedderError(
            "exporting the model to ONNX needs torch and transformers "
            "(pip install 'semcache[torch]'); or use backend='torch-cpu'"
        ) from exc

    # Eager attention traces to the MatMul/Softmax pattern that ORT's
    # transformer optimizer fuses into its Attention kernel (SDPA does not).
    model = AutoModel.from_pretrained(str(info.path), attn_implementation="eager").eval()
    pooling = info.pooling

    class Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            if pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if pooling == "max":
                return (hidden + (mask - 1.0) * 1e9).max(dim=1).values
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    with torch.no_grad(), _quiet_warnings():
        torch.onnx.export(
            Pooled(model), (sample, sample, torch.zeros_like(sample)), str(out),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"], dynamic_axes=axes, opset_version=_OPSET,
            dynamo=False,  # the dynamo exporter needs onnxscript, which we do not ship
        )


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _optimize(info: ModelInfo, raw: Path, out: Path) -> bool:
    """Fuse attention/LayerNorm/GELU with ORT's transformer optimizer; False if not possible."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with _quiet_warnings():
            opt = optimize_model(str(raw), model_type="bert", num_heads=info.num_heads,
                                 hidden_size=info.dim)
            opt.save_model_to_file(str(out))
        return True
    except Exception as exc:  # the optimizer only knows some architectures
        log.warning("ONNX graph optimisation skipped for %s: %s", info.name, exc)
        return False


def ensure_fp32(info: ModelInfo, cache_dir: Path) -> Path:
    """Path to the fp32 ONNX model, exporting it first if needed."""
    if info.onnx_unsupported:
        raise EmbedderError(f"{info.name}: ONNX backend unavailable: {info.onnx_unsupported}")
    folder = model_cache_dir(info, cache_dir)
    target = folder / "model-fp32.onnx"
    if target.exists():
        return target
    with _locked(folder):
        if target.exists():  # another process finished while we waited
            return target
        log.info("exporting %s to ONNX in %s (first use only)", info.name, folder)
        raw, fused = _tmp_path(folder, ".onnx"), _tmp_path(folder, ".onnx")
        try:
            _export_raw(info, raw)
            chosen = raw
            if _optimize(info, raw, fused) and _same_vectors(info, raw, fused):
                chosen = fused
            os.replace(chosen, target)
        finally:
            raw.unlink(missing_ok=True)
            fused.unlink(missing_ok=True)
    return target


def _same_vectors(info: ModelInfo, a: Path, b: Path) -> bool:
    """Guard the graph optimiser: the fused model must give the raw model's vectors."""
    from gpu_embed.backends.onnx import OnnxRunner

    verdict = run_probe(OnnxRunner(a, info, lanes=1).encode, OnnxRunner(b, info, lanes=1).encode)
    if verdict.min_cosine < 0.9999:
        log.warning("fused ONNX graph changed vectors (min cosine %.6f); using unfused", verdict.min_cosine)
        return False
    return True


def quantize_options(variant: str) -> dict:
    """``quantize_dynamic`` keyword arguments for the CPU's int8 recipe.

    Per-channel weights are needed for quality (per-tensor weights gave
    per-vector cosine down to 0.93 on MiniLM); ``reduce_range`` avoids AVX2's
    16-bit saturation (see :func:`gpu_embed.hardware.int8_variant`).
    """
    from onnxruntime.quantization import QuantType

    return {
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "reduce_range": variant != "vnni",
        "op_types_to_quantize": ["MatMul", "Attention"],
        # Fused contrib ops defeat shape inference; their outputs are float.
        "extra_options": {"DefaultTensorType": 1},
    }


def ensure_int8(info: ModelInfo, cache_dir: Path, variant: str) -> tuple[Path, ProbeVerdict]:
    """Path to the int8 model for ``variant`` and its built-in quality verdict."""
    fp32 = ensure_fp32(info, cache_dir)
    folder = fp32.parent
    target = folder / f"model-int8-{variant}.onnx"
    verdict_path = folder / f"int8-{variant}.verdict.json"
    if target.exists() and verdict_path.exists():
        return target, ProbeVerdict.model_validate_json(verdict_path.read_text())
    with _locked(folder):
        if not (target.exists() and verdict_path.exists()):
            from onnxruntime.quantization import quantize_dynamic

            from gpu_embed.backends.onnx import OnnxRunner

            log.info("quantising %s to int8 (%s)", info.name, variant)
            tmp, tmp_verdict = _tmp_path(folder, ".onnx"), _tmp_path(folder, ".json")
            try:
                root = logging.getLogger()
                was_disabled, root.disabled = root.disabled, True
                try:  # quantize_dynamic logs a pre-processing hint on the root logger
                    with _quiet_warnings():
                        quantize_dynamic(str(fp32), str(tmp), **quantize_options(variant))
                finally:
                    root.disabled = was_disabled
                verdict = run_probe(OnnxRunner(fp32, info, lanes=1).encode, OnnxRunner(tmp, info, lanes=1).encode)
                tmp_verdict.write_text(verdict.model_dump_json())
                os.replace(tmp, target)
                os.replace(tmp_verdict, verdict_path)
            finally:
                tmp.unlink(missing_ok=True)
                tmp_verdict.unlink(missing_ok=True)
    verdict = ProbeVerdict.model_validate_json(verdict_path.read_text())
    log.info("int8 check for %s: %s", info.name, json.dumps(verdict.model_dump()))
    return target, verdict
