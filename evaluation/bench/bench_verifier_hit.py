"""Semantic-hit latency through HTTP with the cross-encoder verifier on vs off, same run.

    .venv/bin/python -m evaluation.bench.bench_verifier_hit [--requests 1000] [--after policies/default.yaml]

Starts the engine simulator and two ``semcache serve`` processes (SQLite,
default CPU embedder), one per policy: ``--after`` (default: the shipped
policy, verifier on) and ``--before`` (the same file with the verifier off
and the old 0.90 cosine threshold, written to a temp file unless given).
Two phases, each from one keep-alive client, the two proxies alternating in
blocks of 50 so load on the shared box hits both alike:

* **repeated**: primed with one question, then asked one *rewording* of it
  (a semantic hit: embedding LRU + index search + guards + verifier, never
  the exact path) ``--requests`` times. The embedding and, with the
  cross-encoder, its score for the pair (its memo) are computed once.
* **unique**: primed with :data:`QUESTIONS`, then asked up to ``--requests``
  *different* rewordings of them (filler words around each), each once: every
  ask embeds a new text and runs the verifier on a new pair. Only the asks
  that hit count (their number is printed).
* **near misses**: :data:`NEAR_MISSES`, other questions on the same topics
  (with filler words, each asked once, ``Cache-Control: no-store`` so none is
  stored): the verifier judges up to 4 close candidates before the request
  goes upstream. Only the asks that miss count; the others were served another
  question's answer, and their number is printed (a few of these questions are
  close to a cached one: "change" vs "reset my password", "delivery" vs
  "shipping address"; most are not: "renew" vs "cancel my subscription").
  The simulator decodes in 0 ms, so a miss costs the proxy's decision plus the
  simulator's HTTP round trip.

Prints p50/p99 per side and phase, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from evaluation.bench.bench_proxy import ROOT, MODEL, chat_request, free_port, machine, pct, wait_ready

CACHED = "How do I reset my password?"
ASKED = "how do i reset my password please"
QUESTIONS = [
    "How do I reset my password?", "How can I track my order?", "How do I cancel my subscription?",
    "Where can I download my invoice?", "How do I change my shipping address?",
    "How can I contact customer support?", "How do I update my payment method?",
    "How long does a refund take?", "How do I delete my account?", "Can I change my delivery date?",
]
PREFIXES = ["", "hi, ", "hello, ", "hey there, ", "quick question: ", "sorry to bother you, "]
SUFFIXES = ["", " please", " thanks", " thank you", " thanks a lot", " please help"]


NEAR_MISSES = [
    "How do I change my password?", "How can I cancel my order?", "How do I pause my subscription?",
    "Where can I download my receipt?", "How do I change my billing address?",
    "How can I contact the sales team?", "How do I remove my payment method?",
    "How long does shipping take?", "How do I create an account?", "Can I change my delivery address?",
    "How do I recover my username?", "How can I return my order?", "How do I renew my subscription?",
    "Where can I see my order history?", "How do I add a shipping address?",
]


def near_misses(limit: int) -> list[str]:
    """Distinct texts of :data:`NEAR_MISSES` with filler words (never a cached question)."""
    forms = [(p, s) for p in PREFIXES for s in SUFFIXES]
    out = [f"{p}{q[0].lower() + q[1:] if p else q}{s}" for p, s in forms for q in NEAR_MISSES]
    return out[:limit]


def unique_rewordings(limit: int) -> list[str]:
    """Distinct rewordings of :data:`QUESTIONS` (never the question itself), interleaved across questions."""
    forms = [(p, s) for p in PREFIXES for s in SUFFIXES if p or s]
    out = [f"{p}{q[0].lower() + q[1:] if p else q}{s}" for p, s in forms for q in QUESTIONS]
    return out[:limit]


def verifier_off(policy: Path, out: Path) -> Path:
    raw = yaml.safe_load(policy.read_text())
    for body in (raw.get("categories") or {}).values():
        if body and "verifier" in body:
            body.pop("verifier")
            body.pop("calibration", None)
            body["threshold"] = 0.90
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def storing_truncated(policy: Path, out: Path) -> Path:
    raw = yaml.safe_load(policy.read_text())
    raw.setdefault("defaults", {})["cache_truncated"] = True
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def run(args: argparse.Namespace) -> dict:
    import uvloop

    from evaluation.bench.bench_proxy import _sequential

    work = Path(tempfile.mkdtemp(prefix="semcache-vbench-"))
    before = args.before or verifier_off(args.after, work / "before.yaml")
    # The simulator stops at max_tokens ("length"): store such answers so the primer is cached.
    after, before = (storing_truncated(p, work / f"{name}.yaml") for p, name in ((args.after, "a"), (before, "b")))
    sim_port = free_port()
    # Audits off: an audit that finds the simulator's two (different) answers apart quarantines the
    # entry for the rewording and stores its own answer, and every later ask is an exact repeat.
    env = {**os.environ, "SEMCACHE_LOG_LEVEL": "warning", "SEMCACHE_AUDITS": "false"}
    procs = [subprocess.Popen([sys.executable, "-m", "evaluation.engine_sim", "--model", MODEL, "--port",
                               str(sim_port), "--decode-ms-per-token", "0"], cwd=ROOT, env=env)]
    ports = {}
    for name, policy in (("after", after), ("before", before)):
        ports[name] = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--upstream",
                                       f"http://127.0.0.1:{sim_port}/v1", "--port", str(ports[name]),
                                       "--policies", str(policy), "--sqlite-path", str(work / f"{name}.db"),
                                       "--log-level", "warning"], cwd=ROOT, env=env))
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/health", procs[0])
        times: dict[str, list[float]] = {}
        for (name, port), proc in zip(ports.items(), procs[1:]):
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            uvloop.run(_sequential(port, [chat_request(port, CACHED)]))
            time.sleep(1.0)  # the answer is stored after it is sent
            head = uvloop.run(_sequential(port, [chat_request(port, ASKED)]))[0][2].lower()
            if b"x-semcache-status: hit" not in head:
                raise SystemExit(f"{name}: the rewording is not a hit: {head[:400]!r}")
            uvloop.run(_sequential(port, [chat_request(port, ASKED)] * 100))  # warm-up
            uvloop.run(_sequential(port, [chat_request(port, q) for q in QUESTIONS]))  # primes the unique phase
            times[name] = []
        time.sleep(1.0)
        for _ in range(args.requests // 50):
            for name, port in ports.items():
                times[name] += [s for s, _, _ in uvloop.run(_sequential(port, [chat_request(port, ASKED)] * 50))]
        out = {**{f"repeated_{name}_hit_p{q}_ms": pct(t, q / 100) for name, t in times.items() for q in (50, 99)},
               "repeated_requests_per_side": len(times["after"])}
        asks = unique = unique_rewordings(args.requests)
        hit_times: dict[str, list[float]] = {name: [] for name in ports}
        for start in range(0, len(asks), 50):
            for name, port in ports.items():
                got = uvloop.run(_sequential(port, [chat_request(port, q) for q in asks[start:start + 50]]))
                hit_times[name] += [s for s, status, head in got if b"x-semcache-status: hit" in head.lower()]
        for name, t in hit_times.items():
            out.update({f"unique_{name}_hit_p{q}_ms": pct(t, q / 100) if t else None for q in (50, 99)})
            out[f"unique_{name}_hits"] = len(t)
        asks = near_misses(args.requests)
        missed: dict[str, list[float]] = {name: [] for name in ports}
        for start in range(0, len(asks), 50):
            for name, port in ports.items():
                got = uvloop.run(_sequential(port, [chat_request(port, q, "cache-control: no-store\r\n")
                                                    for q in asks[start:start + 50]]))
                missed[name] += [s for s, status, head in got if b"x-semcache-status: miss" in head.lower()]
        for name, t in missed.items():
            out.update({f"near_miss_{name}_p{q}_ms": pct(t, q / 100) if t else None for q in (50, 99)})
            out[f"near_miss_{name}_misses"] = len(t)
            out[f"near_miss_{name}_served"] = len(asks) - len(t)  # another question's answer served (see NEAR_MISSES)
        return {**out, "unique_asked_per_side": len(unique), "near_miss_asked_per_side": len(asks),
                "after": str(args.after),
                "before": str(args.before or "verifier off"), "load_average": os.getloadavg(),
                "machine": machine()}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="semantic hits per side")
    parser.add_argument("--after", type=Path, default=ROOT / "policies" / "default.yaml")
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
