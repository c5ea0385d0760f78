"""Embedder benchmark (issue 6): latency, throughput, batcher overhead, int8 quality.

    .venv/bin/python -m evaluation.bench.bench_embed [--duration 3] [--backends torch-cpu,onnx-fp32,onnx-int8]

A backend name ending in ``-1lane`` (e.g. ``onnx-int8-1lane``) is that backend
with ``onnx_lanes=1`` -- one row at a time on the all-cores session, the
baseline for the side-by-side lanes the default uses. ``-spin`` / ``-stopspin``
set ``onnx_spin_between_runs`` (the all-cores session's threads keep spinning after
a run, ORT's default, or stop when it returns).

Per backend, in one run: single-query latency p50/p99 calling the backend
directly and through the micro-batching embedder (LRU off, every query a
distinct QQP question), the difference of the p50s ("batcher overhead on a lone
request"), and closed-loop throughput with 1, 8 and 32 concurrent callers. CUDA
is added when a GPU is usable (plus raw batch-256 throughput). Then the
int8-vs-fp32 quality figures on QQP and PAWS (gpu_embed.quality).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from gpu_embed.embedder import LocalEmbedder
from gpu_embed.factory import load_backend
from gpu_embed.hardware import cpu_count, cuda_available
from gpu_embed.probe import PROBE_SENTENCES
from gpu_embed.settings import EmbedderSettings
from evaluation.workloads.data import DATA



_VARIANTS = (("-1lane", "onnx_lanes", 1), ("-spin", "onnx_spin_between_runs", True),
             ("-stopspin", "onnx_spin_between_runs", False))
"""Backend-name suffixes and the setting each stands for (``onnx-int8-spin-1lane``: both)."""


def load_texts(n: int = 4000) -> list[str]:
    path = DATA / "qqp" / "qqp-dev.jsonl"
    if not path.exists():
        return list(PROBE_SENTENCES) * (n // len(PROBE_SENTENCES) + 1)
    seen: dict[str, None] = {}
    with path.open() as handle:
        for line in handle:
            row = json.loads(line)
            seen.setdefault(row["a"], None)
            seen.setdefault(row["b"], None)
            if len(seen) >= n:
                break
    return list(seen)


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1e3
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


async def measure(backend, texts: list[str], settings: EmbedderSettings, n_single: int,
                  duration: float) -> dict:
    source = itertools.cycle(texts)
    for _ in range(20):
        backend.encode([next(source)])
    direct = []
    for _ in range(n_single):
        text = next(source)
        t0 = time.perf_counter()
        backend.encode([text])
        direct.append(time.perf_counter() - t0)
    emb = LocalEmbedder(backend, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                        max_queue=settings.max_queue, lru_size=0)
    for _ in range(20):
        await emb.embed([next(source)])
    batched = []
    for _ in range(n_single):
        text = next(source)
        t0 = time.perf_counter()
        await emb.embed([text])
        batched.append(time.perf_counter() - t0)
    result = {"identity": backend.identity, "direct_p50_ms": percentiles(direct)[0],
              "direct_p99_ms": percentiles(direct)[1], "embedder_p50_ms": percentiles(batched)[0],
              "embedder_p99_ms": percentiles(batched)[1]}
    result["batcher_overhead_ms"] = result["embedder_p50_ms"] - result["direct_p50_ms"]
    for callers in (1, 8, 32):
        done = 0
        before = (emb.batcher.stats.batches, emb.batcher.stats.texts)
        stop = time.perf_counter() + duration

        async def caller():
            nonlocal done
            while time.perf_counter() < stop:
                await emb.embed([next(source)])
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        result[f"throughput_{callers}"] = done / (time.perf_counter() - t0)
        batches = emb.batcher.stats.batches - before[0]
        result[f"mean_batch_{callers}"] = (emb.batcher.stats.texts - before[1]) / max(1, batches)
    await emb.batcher.aclose()
    if backend.kind == "cuda":
        batch = [next(source) for _ in range(256)]
        backend.encode(batch)
        t0, rounds = time.perf_counter(), 0
        while time.perf_counter() - t0 < duration:
            backend.encode(batch)
            rounds += 1
        result["cuda_batch256_throughput"] = 256 * rounds / (time.perf_counter() - t0)
    return result


def device_note() -> str:
    note = f"{platform.processor() or platform.machine()}, {cpu_count()} cores"
    if cuda_available():
        import torch

        note += f", GPU {torch.cuda.get_device_name(0)}"
    return note


def median_row(name: str, rounds: list[dict]) -> dict:
    """Per-figure medians over the rounds of one backend (labelled ``name (median)``)."""
    numeric = [k for k, v in rounds[0].items() if isinstance(v, (int, float)) and k != "round"]
    return {"backend": f"{name} (median)", "identity": rounds[0]["identity"],
            **{k: float(np.median([r[k] for r in rounds])) for k in numeric}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="torch-cpu,onnx-fp32,onnx-int8-1lane,onnx-int8")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per throughput point")
    parser.add_argument("--singles", type=int, default=300, help="sequential queries per latency figure")
    parser.add_argument("--quality-limit", type=int, default=2000, help="pairs per quality data set")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the backends this many times, interleaved, and add the medians: this "
                             "box's speed drifts by ~25%% between minutes, so compare medians of rounds")
    args = parser.parse_args(argv)
    settings = EmbedderSettings()
    names = args.backends.split(",")
    if cuda_available() and "cuda" not in names:
        names.insert(0, "cuda")
    texts = load_texts()
    print(f"device: {device_note()}; load average {os.getloadavg()[0]:.2f}")
    rows = []
    for round_no in range(args.rounds):
        for name in names:
            base, update = name, {}
            for suffix, field, value in _VARIANTS:
                if base.endswith(suffix):
                    base, update = base[: -len(suffix)], {**update, field: value}
            backend = load_backend(base, settings.model_copy(update=update))
            rows.append({"backend": name, "round": round_no, **asyncio.run(measure(backend, texts, settings,
                                                                                    args.singles, args.duration))})
            backend.close()
    if args.rounds > 1:
        rows += [median_row(name, [r for r in rows if r["backend"] == name]) for name in names]
    header = (f"{'backend':<24} {'direct p50/p99 ms':>18} {'embedder p50/p99 ms':>20} {'overhead ms':>11} "
              f"{'1 caller/s':>10} {'8 callers/s':>11} {'32 callers/s':>12} {'batch@32':>8}")
    print(header)
    for r in rows:
        print(f"{r['backend']:<24} {r['direct_p50_ms']:>8.2f} / {r['direct_p99_ms']:<7.2f} "
              f"{r['embedder_p50_ms']:>9.2f} / {r['embedder_p99_ms']:<8.2f} {r['batcher_overhead_ms']:>11.3f} "
              f"{r['throughput_1']:>10.0f} {r['throughput_8']:>11.0f} {r['throughput_32']:>12.0f} "
              f"{r['mean_batch_32']:>8.1f}")
        if "cuda_batch256_throughput" in r:
            print(f"  cuda raw batch 256: {r['cuda_batch256_throughput']:.0f} sentences/s")
    quality = []
    from gpu_embed.quality import format_report, run_quality_check

    for rel in ("qqp/qqp-dev.jsonl", "paws/paws-dev.jsonl"):
        path = DATA / rel
        if path.exists():
            report = run_quality_check(path, limit=args.quality_limit, threshold=0.9, settings=settings)
            print(format_report(report))
            quality.append(report.model_dump())
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": device_note(), "backends": rows, "quality": quality}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
