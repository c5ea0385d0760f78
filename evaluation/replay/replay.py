"""Replay a workload through live systems and record every request (``semcache eval replay``).

One engine simulator (answering from the workload's answer book) serves as
the upstream; each system of :mod:`evaluation.replay.systems` (``gptcache`` is
GPTCache itself, :mod:`evaluation.replay.gptcache_system`) is replayed in turn
with the same requests at the same speed-up. Per request we record the
workload category and intent, the cache status (``X-Semcache-Status``), the
similarity, whether a hit was **correct**, time to first token and total
latency (streamed), and the upstream tokens it cost (0 for a hit).

A hit is correct when the answer served was first produced for a request of
the same intent: every answer that came from upstream is remembered by a
digest of its text, with its intent, so this works with any deterministic
upstream. A hit whose answer was never seen from upstream is recorded with
``correct = null``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from evaluation.replay import systems
from evaluation.workloads import workload

MODEL = "sim-model"
TOKEN = "eval-admin-token"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


async def _read_json(resp: httpx.Response) -> tuple[list[str], dict[str, Any], None]:
    """A plain JSON answer: its text(s) and usage (no time to first token)."""
    answer = json.loads(await resp.aread()) if resp.status_code == 200 else {}
    parts = [(c.get("message") or {}).get("content") or "" for c in answer.get("choices") or []]
    return parts, answer.get("usage") or {}, None


async def _read_sse(resp: httpx.Response, sent: float) -> tuple[list[str], dict[str, Any], float | None]:
    """A streamed answer: its text pieces, the usage chunk, and the time to the first piece."""
    ttft, parts, usage = None, [], {}
    async for line in resp.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                ttft = ttft or time.perf_counter() - sent
                parts.append(text)
        usage = chunk.get("usage") or usage
    return parts, usage, ttft


async def _one(client: httpx.AsyncClient, url: str, r: workload.Request, origin: dict[str, str],
               scheduled: float, start: float, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": r.text}],
                            "max_tokens": r.response_tokens + 16}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    sent = time.perf_counter()
    rec: dict[str, Any] = {"i": r.i, "t": r.t, "category": r.category, "intent": r.intent,
                           "lag_s": round(sent - start - scheduled, 4)}
    ttft, parts, usage = None, [], {}
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
            rec["http"] = resp.status_code
            rec["status"] = resp.headers.get("x-semcache-status", "direct")
            rec["cache_category"] = resp.headers.get("x-semcache-category")
            sim = resp.headers.get("x-semcache-similarity")
            rec["similarity"] = float(sim) if sim else None
            # Plain JSON is cheaper for big runs; streaming measures time to first token.
            parts, usage, ttft = await (_read_sse(resp, sent) if stream else _read_json(resp))
    except httpx.HTTPError as exc:
        rec.update(http=0, status="error", error=type(exc).__name__)
    rec["total_s"] = round(time.perf_counter() - sent, 5)
    rec["ttft_s"] = round(ttft, 5) if ttft is not None else None
    digest = _digest("".join(parts))
    if rec["status"] == "hit":
        seen = origin.get(digest)
        rec["correct"] = None if seen is None else seen == r.intent
        rec["upstream_prompt_tokens"] = rec["upstream_completion_tokens"] = 0
    else:
        if parts and rec.get("http") == 200:
            origin.setdefault(digest, r.intent)
        rec["correct"] = None
        rec["upstream_prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        rec["upstream_completion_tokens"] = int(usage.get("completion_tokens") or 0)
    return rec


async def drive(url: str, requests: list[workload.Request], *, speedup: float, concurrency: int,
                deadline_s: float, progress: bool = True, desc: str = "replay",
                stream: bool = True) -> list[dict[str, Any]]:
    """Send ``requests`` at their arrival times / ``speedup``, at most ``concurrency`` in flight."""
    from tqdm import tqdm

    origin: dict[str, str] = {}
    limit = asyncio.Semaphore(concurrency)
    start = time.perf_counter()
    bar = tqdm(total=len(requests), desc=desc, unit="req", disable=not progress, leave=False, mininterval=5)
    records: list[dict[str, Any]] = []

    async def run(r: workload.Request, scheduled: float) -> None:
        try:
            records.append(await _one(client, url, r, origin, scheduled, start, stream))
        finally:
            limit.release()
            bar.update(1)

    timeout = httpx.Timeout(120, connect=10)
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=concurrency)) as client:
        tasks = []
        for r in requests:
            scheduled = r.t / speedup
            delay = scheduled - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            await limit.acquire()
            if time.perf_counter() - start > deadline_s:
                limit.release()
                break
            tasks.append(asyncio.create_task(run(r, scheduled)))
        await asyncio.gather(*tasks)
    bar.close()
    return sorted(records, key=lambda rec: rec["i"])


async def _admin_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(url + "/admin/stats", headers={"authorization": f"Bearer {TOKEN}"})
        resp.raise_for_status()
        return resp.json()


def _best_threshold(pairs_json: Path) -> float:
    """The best-F1 global threshold of an ``eval pairs --json`` result, waiting until it exists."""
    while not Path(pairs_json).exists():
        time.sleep(5)
    return float(json.loads(Path(pairs_json).read_text())["global_sweep"]["best_f1"]["threshold"])


def _gptcache_description(threshold: float) -> str:
    from evaluation.replay.gptcache_system import GPTCACHE_VERSION, gptcache_threshold_to_cosine

    return (f"gptcache {GPTCACHE_VERSION}: sqlite + faiss store, SearchDistanceEvaluation, all-MiniLM-L6-v2, "
            f"similarity_threshold {threshold} (cosine >= {gptcache_threshold_to_cosine(threshold):.2f})")


def replay(workdir: Path, *, systems_wanted: list[str], speedup: float, concurrency: int, limit: int | None,
           best_threshold: float, policy: Path, decode_ms: float, max_batch: int, deadline_s: float,
           progress: bool = True, stream: bool = True, best_threshold_from: Path | None = None,
           gptcache_threshold: float = 0.8, logs_to: Path | None = None) -> dict[str, Any]:
    """Replay the workload in ``workdir`` through each wanted system; returns the result document.

    ``logs_to``: a directory that keeps each server's log (they live in a temporary
    directory otherwise), so a failed request can be traced after the run.
    """
    requests = workload.read(workdir)[:limit]
    with tempfile.TemporaryDirectory(prefix="semcache-replay-") as tmp:
        tmpdir = Path(tmp)
        policies = systems.policy_files(tmpdir, policy, best_threshold)
        if best_threshold_from is not None:
            policies.pop("global-best")  # written when its turn comes: the pair run may still be going
        result: dict[str, Any] = {
            "meta": {"workload": str(workdir), "requests": len(requests), "speedup": speedup,
                     "concurrency": concurrency, "decode_ms_per_token": decode_ms, "max_batch": max_batch,
                     "best_threshold": best_threshold, "policy": str(policy), "stream": stream,
                     "gptcache_threshold": gptcache_threshold, "started": time.time()},
            "systems": {},
        }
        with systems.engine_sim(Path(workdir) / "answers.jsonl", tmpdir / "engine-sim.log",
                                decode_ms=decode_ms, max_batch=max_batch) as sim:
            opts = dict(speedup=speedup, concurrency=concurrency, deadline_s=deadline_s, progress=progress,
                        stream=stream)
            for name in systems_wanted:
                began = time.perf_counter()
                if name == "gptcache":
                    with systems.gptcache(sim.url + "/v1", gptcache_threshold, tmpdir / "gptcache",
                                          tmpdir / "gptcache.log") as gc:
                        records = asyncio.run(drive(gc.url, requests, desc=name, **opts))
                        stats = asyncio.run(_admin_stats(gc.url))
                    described = _gptcache_description(gptcache_threshold)
                elif name == "direct":
                    records, stats, described = asyncio.run(drive(sim.url, requests, desc=name, **opts)), None, None
                else:
                    if name not in policies:
                        best = _best_threshold(best_threshold_from)
                        result["meta"]["best_threshold"] = best
                        policies[name] = systems.policy_files(tmpdir, policy, best)[name]
                    with systems.proxy(sim.url + "/v1", policies[name], tmpdir / f"{name}.db", TOKEN,
                                       tmpdir / f"{name}.log") as px:
                        records = asyncio.run(drive(px.url, requests, desc=name, **opts))
                        stats = asyncio.run(_admin_stats(px.url))
                    described = policies[name].read_text()
                result["systems"][name] = {"records": records, "admin_stats": stats, "policy": described,
                                           "wall_s": round(time.perf_counter() - began, 2)}
        if logs_to is not None:
            logs_to.mkdir(parents=True, exist_ok=True)
            for log in tmpdir.glob("*.log"):
                shutil.copy(log, logs_to / log.name)
            result["meta"]["logs"] = str(logs_to)
    return result


def run_cli(args: Any) -> int:
    wanted = args.systems.split(",")
    unknown = set(wanted) - set(systems.SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    if "gptcache" in wanted and (why := systems.gptcache_missing()):
        print(f"skipping system gptcache: {why}", file=sys.stderr)
        wanted.remove("gptcache")
    result = replay(args.workload, systems_wanted=wanted, speedup=args.speedup, concurrency=args.concurrency,
                    limit=args.limit, best_threshold=args.best_threshold, policy=args.policy,
                    decode_ms=args.decode_ms, max_batch=args.max_batch, deadline_s=args.max_seconds,
                    stream=not args.no_stream, best_threshold_from=args.best_threshold_from,
                    gptcache_threshold=args.gptcache_threshold,
                    logs_to=args.out.parent / f"{args.out.stem}-logs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result), encoding="utf-8")
    from evaluation.reports.summary import format_table, summarise

    print(format_table(summarise(result)))
    print(f"result: {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay a workload through live proxies and baselines",
                       description="Start the engine simulator and one semcache proxy per system on loopback, "
                                   "replay the workload through each, write one result JSON.")
    p.add_argument("--workload", type=Path, required=True, help="directory written by 'eval workload'")
    p.add_argument("--out", type=Path, required=True, help="result JSON file")
    p.add_argument("--systems", default=",".join(systems.SYSTEMS),
                   help="comma-separated (default: all six; gptcache is skipped when its extra is not installed)")
    p.add_argument("--gptcache-threshold", type=float, default=0.8,
                   help="GPTCache's own similarity_threshold (0.8 as it ships = cosine 0.6)")
    p.add_argument("--policy", type=Path, default=Path("policies/default.yaml"), help="semcache's policy file")
    p.add_argument("--best-threshold", type=float, default=0.80,
                   help="global-best's threshold: the best-F1 threshold of 'eval pairs' on the dev data")
    p.add_argument("--best-threshold-from", type=Path, default=None,
                   help="take global-best's threshold from this 'eval pairs --json' output (waits for the file)")
    p.add_argument("--speedup", type=float, default=10.0, help="replay arrivals this many times faster")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N requests")
    p.add_argument("--max-seconds", type=float, default=1800, help="stop sending after this long per system")
    p.add_argument("--decode-ms", type=float, default=2.0, help="engine-sim decode time per output token")
    p.add_argument("--max-batch", type=int, default=64, help="engine-sim concurrent requests")
    p.add_argument("--no-stream", action="store_true",
                   help="plain JSON responses (cheaper for big runs; no time-to-first-token)")
    p.set_defaults(handler=run_cli)
