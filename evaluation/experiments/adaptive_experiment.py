"""Static vs load-adaptive policies on a bursty trace (issue #18).

``python -m evaluation.experiments.adaptive_experiment --out evaluation/results/adaptive``

One workload with paraphrases (:mod:`evaluation.workloads.workload`, the requests
``semcache eval workload`` builds) over a generated BurstGPT-format trace is
replayed twice through a real ``semcache serve`` process (real MiniLM
embedder, SQLite) in front of a fresh engine simulator sized so that bursts
overload it: once with adaptation off (``SEMCACHE_ADAPTIVE=false``, the global
kill switch: the policy as written) and once on; same policy file otherwise.
Then the same on a calm trace (no bursts), where the two must match.

During each replay the engine's queue (its ``/metrics``) and the controller's
effective threshold (``/admin/adaptive``) are sampled every 0.25 s. "During
bursts" means arrivals inside the trace's burst windows (the arrival rate over
a centred 3 s window above the midpoint of calm and burst rates): the same requests
for both systems. Figures: requests and tokens that reached the engine,
TTFT p50/p95 of requests that reached the engine, queue depth, and the
false-hit rate (a hit whose answer was first produced for another intent)
overall and during bursts. Writes ``result.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from evaluation.replay import replay, systems
from evaluation.workloads import traces, workload

TOKEN = replay.TOKEN


def burst_windows(arrivals: list[traces.Arrival], rate: float, factor: float, window_s: float = 3.0) -> list[bool]:
    """Per arrival: inside a burst (arrival rate over a centred window above the calm/burst midpoint)?"""
    t = np.array([a.timestamp for a in arrivals])
    counts = np.searchsorted(t, t + window_s / 2, side="right") - np.searchsorted(t, t - window_s / 2, side="left")
    return list(counts / window_s > rate * (1 + factor) / 2)


def _proxy(upstream: str, policy: Path, store: Path, log: Path, *, adaptive: bool, max_waiting: float,
           scrape_s: float) -> systems.Process:
    env = {"SEMCACHE_ADAPTIVE": "true" if adaptive else "false", "SEMCACHE_PRESSURE__MAX_WAITING": str(max_waiting),
           "SEMCACHE_UPSTREAM_METRICS_INTERVAL_S": str(scrape_s), "SEMCACHE_SPECULATIVE_FORWARD": "false"}
    return systems.Process([sys.executable, "-m", "proxy", "serve", "--upstream", upstream, "--port", "{port}",
                            "--policies", str(policy), "--store", "sqlite", "--sqlite-path", str(store),
                            "--admin-token", TOKEN, "--log-level", "warning"], "/readyz", log, env=env)


async def _sample(sim_url: str, proxy_url: str, start: float, stop: asyncio.Event) -> list[dict[str, Any]]:
    """Engine queue and effective threshold every 0.25 s until ``stop``."""
    out = []
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            row: dict[str, Any] = {"t": round(time.perf_counter() - start, 3)}
            try:
                text = (await client.get(sim_url + "/metrics")).text
                for fam in text_string_to_metric_families(text):
                    if fam.name in ("vllm:num_requests_waiting", "vllm:num_requests_running"):
                        row[fam.name.split("_")[-1]] = sum(s.value for s in fam.samples)
                snap = (await client.get(proxy_url + "/admin/adaptive",
                                         headers={"authorization": f"Bearer {TOKEN}"})).json()
                row["threshold"] = snap["categories"]["default"]["effective_threshold"]
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            out.append(row)
            await asyncio.sleep(0.25)
    return out


async def _replay(url: str, sim_url: str, requests: list[workload.Request], deadline_s: float) -> tuple[list, list]:
    stop = asyncio.Event()
    start = time.perf_counter()
    sampler = asyncio.create_task(_sample(sim_url, url, start, stop))
    records = await replay.drive(url, requests, speedup=1.0, concurrency=256, deadline_s=deadline_s,
                                 progress=False, stream=True)
    stop.set()
    return records, await sampler


def run_system(wdir: Path, requests: list[workload.Request], policy: Path, tmp: Path, *, adaptive: bool,
               args: argparse.Namespace) -> dict[str, Any]:
    name = "adaptive" if adaptive else "static"
    with systems.engine_sim(wdir / "answers.jsonl", tmp / f"{wdir.name}-{name}-sim.log", decode_ms=args.decode_ms,
                            max_batch=args.max_batch) as sim, \
            _proxy(sim.url + "/v1", policy, tmp / f"{wdir.name}-{name}.db", tmp / f"{wdir.name}-{name}.log",
                   adaptive=adaptive, max_waiting=args.max_waiting, scrape_s=0.25) as px:
        began, started_at = time.perf_counter(), time.time()
        records, timeline = asyncio.run(_replay(px.url, sim.url, requests, args.seconds * 2))
        with httpx.Client(timeout=10) as client:
            snap = client.get(px.url + "/admin/adaptive", headers={"authorization": f"Bearer {TOKEN}"}).json()
    return {"records": records, "timeline": timeline, "events": snap["events"], "moves": snap["moves"],
            "started_at": started_at,
            "wall_s": round(time.perf_counter() - began, 1)}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def figures(records: list[dict[str, Any]], burst: list[bool]) -> dict[str, Any]:
    """The comparison figures of one replay (``burst``: per request index)."""
    def part(rows: list[dict[str, Any]]) -> dict[str, Any]:
        upstream = [r for r in rows if r["status"] != "hit"]
        hits = [r for r in rows if r["status"] == "hit"]
        judged = [r for r in hits if r["correct"] is not None]
        wrong = sum(1 for r in judged if r["correct"] is False)
        ttft = [r["ttft_s"] for r in upstream if r["ttft_s"] is not None]
        return {"requests": len(rows), "to_engine": len(upstream),
                "engine_tokens": sum(r["upstream_prompt_tokens"] + r["upstream_completion_tokens"] for r in upstream),
                "hits": len(hits), "hit_rate": round(len(hits) / max(1, len(rows)), 4),
                "false_hits": wrong, "false_hit_rate": round(wrong / max(1, len(judged)), 4),
                "ttft_p50_s": _pct(ttft, 50), "ttft_p95_s": _pct(ttft, 95),
                "errors": sum(1 for r in rows if r.get("http") != 200)}

    return {"all": part(records), "bursts": part([r for r in records if burst[r["i"]]])}


def _plots(result: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for trace, runs in result["traces"].items():
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
        for name, color in (("static", "tab:gray"), ("adaptive", "tab:blue")):
            tl = [row for row in runs[name]["timeline"] if "waiting" in row]
            ax1.plot([r["t"] for r in tl], [r["waiting"] for r in tl], color=color, label=name)
            th = [row for row in runs[name]["timeline"] if "threshold" in row]
            ax2.plot([r["t"] for r in th], [r["threshold"] for r in th], color=color, label=name)
        for start, end in result["burst_spans"][trace]:
            for ax in (ax1, ax2):
                ax.axvspan(start, end, color="tab:red", alpha=0.08)
        ax1.axhline(result["meta"]["max_waiting"], color="tab:red", lw=0.8, ls="--")
        ax1.set_ylabel("engine queue (waiting)")
        ax2.set_ylabel("effective threshold (default)")
        ax2.set_xlabel("seconds (shaded: bursts)")
        ax1.legend()
        ax1.set_title(f"{trace} trace: static vs load-adaptive policy")
        path = out / f"adaptive-{trace}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path.name)
    return made


def _spans(arrivals: list[traces.Arrival], burst: list[bool]) -> list[tuple[float, float]]:
    spans, start = [], None
    for a, b in zip(arrivals, burst):
        if b and start is None:
            start = a.timestamp
        elif not b and start is not None:
            spans.append((round(start, 2), round(a.timestamp, 2)))
            start = None
    if start is not None:
        spans.append((round(start, 2), round(arrivals[-1].timestamp, 2)))
    return spans


def report(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [f"adaptive experiment: {m['requests']} (bursty) / {m['calm_requests']} (calm) requests, "
             f"calm rate {m['rate']}/s, bursts x{m['burst_factor']}; engine-sim max_batch {m['max_batch']}, "
             f"decode {m['decode_ms']} ms/token; pressure target max_waiting {m['max_waiting']}", "",
             "| trace | policy | part | requests | to engine | engine tokens | hit rate | false-hit rate | "
             "TTFT p50 / p95 (s, engine-served) | moves |", "|---|---|---|---|---|---|---|---|---|---|"]
    for trace, runs in result["traces"].items():
        for name in ("static", "adaptive"):
            f = runs[name]["figures"]
            for part in ("all", "bursts"):
                x = f[part]
                lines.append(f"| {trace} | {name} | {part} | {x['requests']} | {x['to_engine']} | "
                             f"{x['engine_tokens']} | {x['hit_rate']:.3f} | {x['false_hit_rate']:.3f} "
                             f"({x['false_hits']}) | {x['ttft_p50_s']} / {x['ttft_p95_s']} | "
                             f"{runs[name]['moves'] if part == 'all' else ''} |")
        s, a = runs["static"]["figures"]["bursts"], runs["adaptive"]["figures"]["bursts"]
        if s["to_engine"]:
            lines.append(f"\n{trace}: during bursts, requests to the engine {s['to_engine']} -> {a['to_engine']} "
                         f"({(a['to_engine'] - s['to_engine']) / s['to_engine']:+.1%}), tokens "
                         f"{s['engine_tokens']} -> {a['engine_tokens']} "
                         f"({(a['engine_tokens'] - s['engine_tokens']) / max(1, s['engine_tokens']):+.1%})\n")
        events = runs["adaptive"]["events"]
        if events:
            t0 = runs["adaptive"].get("started_at")
            since = "s into the replay" if t0 is not None else "s after the first move"
            t0 = events[0]["at"] if t0 is None else t0
            lines.append(f"{trace}: controller moves of the adaptive run ({since}; the first "
                         f"{min(8, len(events))} of {len(events)}):\n")
            lines += [f"    {e['at'] - t0:7.1f} s  {e['action']:<7} {e['old_threshold']:.4f} -> "
                      f"{e['new_threshold']:.4f}  ({e['reason']})" for e in events[:8]]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.experiments.adaptive_experiment", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--policy", type=Path, default=Path("policies/default.yaml"))
    p.add_argument("--interval-s", type=float, default=1.0,
                   help="under_load.interval_s for the run (the shipped 5 s is for hour-long bursts; the trace "
                        "compresses them)")
    p.add_argument("--seconds", type=float, default=90.0, help="bursty trace length")
    p.add_argument("--calm-seconds", type=float, default=45.0)
    p.add_argument("--rate", type=float, default=3.0, help="calm arrivals per second")
    p.add_argument("--burst-factor", type=float, default=5.0)
    p.add_argument("--calm-s", type=float, default=15.0, help="mean calm period of the trace")
    p.add_argument("--burst-s", type=float, default=8.0, help="mean burst period of the trace")
    p.add_argument("--pool", type=int, default=60, help="intents per category in play")
    p.add_argument("--max-response-tokens", type=int, default=48)
    p.add_argument("--decode-ms", type=float, default=10.0)
    p.add_argument("--max-batch", type=int, default=3)
    p.add_argument("--max-waiting", type=float, default=8.0, help="pressure target (SEMCACHE_PRESSURE__MAX_WAITING)")
    p.add_argument("--data", type=Path, default=workload.DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adaptive-first", action="store_true",
                   help="replay the adaptive policy first (to see how much the order, i.e. the box's load, moves "
                        "the figures)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    policy = args.out / "policy.yaml"
    policy.write_text(args.policy.read_text().replace("interval_s: 5", f"interval_s: {args.interval_s}"))
    intents = workload.load_intents(args.data)
    result: dict[str, Any] = {"meta": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                       "started": time.time()}, "traces": {}, "burst_spans": {}}
    plans = {"bursty": traces.generate(100_000, rate=args.rate, burst_factor=args.burst_factor, calm_s=args.calm_s,
                                       burst_s=args.burst_s, seed=args.seed),
             "calm": traces.generate(100_000, rate=args.rate, burst_factor=1.0, seed=args.seed)}
    for trace, arrivals in plans.items():
        length = args.seconds if trace == "bursty" else args.calm_seconds
        arrivals = [a for a in arrivals if a.timestamp < length]
        burst = burst_windows(arrivals, args.rate, args.burst_factor) if trace == "bursty" else [False] * len(arrivals)
        requests = workload.build(arrivals, intents, pool=args.pool, max_response_tokens=args.max_response_tokens,
                                  seed=args.seed)
        wdir = args.out / f"workload-{trace}"
        workload.write(requests, wdir, arrivals, {"trace": trace, "seed": args.seed})
        result["meta"]["requests" if trace == "bursty" else "calm_requests"] = len(requests)
        result["burst_spans"][trace] = _spans(arrivals, burst)
        runs = {}
        for adaptive in ((True, False) if args.adaptive_first else (False, True)):
            run = run_system(wdir, requests, policy, args.out, adaptive=adaptive, args=args)
            run["figures"] = figures(run["records"], burst)
            runs["adaptive" if adaptive else "static"] = run
            print(f"{trace} {'adaptive' if adaptive else 'static'}: {json.dumps(run['figures'])}", flush=True)
        result["traces"][trace] = runs
    result["plots"] = _plots(result, args.out)
    (args.out / "result.json").write_text(json.dumps(result))
    text = report(result)
    (args.out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
