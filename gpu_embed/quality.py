"""int8-vs-fp32 quality check on labelled pair data (``python -m gpu_embed.quality``).

Usage::

    python -m gpu_embed.quality --data ../shared/data/qqp/qqp-dev.jsonl [--limit N]
        [--threshold 0.9] [--json]

Rows are ``{"a", "b", "label"}`` (label 1 = same intent). Both texts of each
pair are embedded with ONNX fp32 and with ONNX int8; reported: per-vector
cosine int8 vs fp32, the shift of pair similarities (mean, p99, max), how many
pairs cross the threshold, and precision/recall of "similarity >= threshold"
for each precision, plus the int8 threshold that restores fp32's precision.

Thresholds are calibrated per model identity (``name@hash/backend/precision``
is part of every cache key): a threshold tuned for fp32 is not automatically
right for int8 or for another model. To recalibrate, run this command on pair
data resembling your traffic, read ``int8_threshold_matching_fp32_precision``
(or sweep ``--threshold``), and set that threshold in the policy used with
that identity.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from gpu_embed.settings import EmbedderSettings

DEFAULT_DATA = Path("../shared/data/qqp/qqp-dev.jsonl")


class PrecisionRecall(BaseModel):
    precision: float
    recall: float
    predicted_positive: int


class QualityReport(BaseModel):
    """What :func:`run_quality_check` measured."""

    data: str
    pairs: int
    positives: int
    threshold: float
    fp32_identity: str
    int8_identity: str
    vector_cosine_mean: float
    vector_cosine_min: float
    shift_mean: float
    shift_p99: float
    shift_max: float
    pairs_crossing_threshold: int
    fp32: PrecisionRecall
    int8: PrecisionRecall
    int8_threshold_matching_fp32_precision: float | None


def load_pairs(path: Path, limit: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """The first ``limit`` pairs of a JSON-lines pair file."""
    a, b, labels = [], [], []
    with Path(path).open() as handle:
        for line in handle:
            if limit is not None and len(a) >= limit:
                break
            row = json.loads(line)
            a.append(str(row["a"]))
            b.append(str(row["b"]))
            labels.append(int(row["label"]))
    return a, b, np.asarray(labels, dtype=bool)


def _pr(sims: np.ndarray, labels: np.ndarray, threshold: float) -> PrecisionRecall:
    predicted = sims >= threshold
    tp = int(np.sum(predicted & labels))
    return PrecisionRecall(precision=tp / max(1, int(predicted.sum())), recall=tp / max(1, int(labels.sum())),
                           predicted_positive=int(predicted.sum()))


def _matching_threshold(sims: np.ndarray, labels: np.ndarray, target_precision: float) -> float | None:
    """Lowest threshold at which ``sims`` reach ``target_precision`` (None if never)."""
    order = np.argsort(-sims)
    tp = np.cumsum(labels[order])
    precision = tp / np.arange(1, len(order) + 1)
    ok = np.nonzero(precision >= target_precision)[0]
    return float(sims[order][ok[-1]]) if len(ok) else None


def _embed_pairs(backend, a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    unique = list(dict.fromkeys(a + b))
    rows = backend.encode(unique)
    index = {t: i for i, t in enumerate(unique)}
    return rows[[index[t] for t in a]], rows[[index[t] for t in b]]


def run_quality_check(data: Path = DEFAULT_DATA, *, limit: int | None = 2000, threshold: float = 0.9,
                      settings: EmbedderSettings | None = None) -> QualityReport:
    """Embed the pairs in ``data`` with ONNX fp32 and int8 and compare (see module doc)."""
    from gpu_embed.factory import load_backend

    settings = settings or EmbedderSettings()
    a, b, labels = load_pairs(data, limit)
    if not a:
        raise ValueError(f"{data}: no pairs")
    fp32 = load_backend("onnx-fp32", settings)
    int8 = load_backend("onnx-int8", settings)
    fa, fb = _embed_pairs(fp32, a, b)
    qa, qb = _embed_pairs(int8, a, b)
    s_fp32 = np.sum(fa * fb, axis=1)
    s_int8 = np.sum(qa * qb, axis=1)
    shift = np.abs(s_int8 - s_fp32)
    vec_cos = np.concatenate([np.sum(fa * qa, axis=1), np.sum(fb * qb, axis=1)])
    fp32_pr = _pr(s_fp32, labels, threshold)
    return QualityReport(
        data=str(data), pairs=len(a), positives=int(labels.sum()), threshold=threshold,
        fp32_identity=fp32.identity, int8_identity=int8.identity,
        vector_cosine_mean=float(vec_cos.mean()), vector_cosine_min=float(vec_cos.min()),
        shift_mean=float(shift.mean()), shift_p99=float(np.quantile(shift, 0.99)), shift_max=float(shift.max()),
        pairs_crossing_threshold=int(np.sum((s_fp32 >= threshold) != (s_int8 >= threshold))),
        fp32=fp32_pr, int8=_pr(s_int8, labels, threshold),
        int8_threshold_matching_fp32_precision=_matching_threshold(s_int8, labels, fp32_pr.precision),
    )


def format_report(r: QualityReport) -> str:
    """A human-readable summary."""
    match = r.int8_threshold_matching_fp32_precision
    return "\n".join([
        f"int8 vs fp32 on {r.data}: {r.pairs} pairs ({r.positives} positive), threshold {r.threshold}",
        f"  identities: {r.fp32_identity} | {r.int8_identity}",
        f"  per-vector cosine int8 vs fp32: mean {r.vector_cosine_mean:.4f}, min {r.vector_cosine_min:.4f}",
        f"  pair similarity shift: mean {r.shift_mean:.4f}, p99 {r.shift_p99:.4f}, max {r.shift_max:.4f}",
        f"  pairs crossing the threshold: {r.pairs_crossing_threshold}",
        f"  fp32: precision {r.fp32.precision:.4f}, recall {r.fp32.recall:.4f}",
        f"  int8: precision {r.int8.precision:.4f}, recall {r.int8.recall:.4f} "
        f"(delta P {r.int8.precision - r.fp32.precision:+.4f}, R {r.int8.recall - r.fp32.recall:+.4f})",
        f"  int8 threshold giving fp32's precision: {'n/a' if match is None else f'{match:.4f}'}",
        "  thresholds are per model identity: set the recalibrated one in the policy used with "
        f"{r.int8_identity}",
    ])


def main(argv: list[str] | None = None) -> int:
    """``python -m gpu_embed.quality`` (there is no ``semcache`` subcommand for it)."""
    parser = argparse.ArgumentParser(prog="python -m gpu_embed.quality",
                                     description="int8-vs-fp32 embedding quality on labelled pairs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSON-lines pairs {a, b, label}")
    parser.add_argument("--limit", type=int, default=2000, help="first N pairs (default 2000; 0 = all)")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--model-path", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"{args.data} not found")
    settings = EmbedderSettings(**({"model_path": args.model_path} if args.model_path else {}))
    report = run_quality_check(args.data, limit=args.limit or None, threshold=args.threshold, settings=settings)
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
