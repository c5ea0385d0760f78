"""Does one hostile request stall the proxy? ``/healthz`` latency meanwhile, before and after (issue #14).

Starts the engine simulator and, for each source tree given (``--before``:
e.g. a checkout of the commit before the fixes; ``--after``: default this
tree), a real ``semcache serve`` process, then sends each hostile input while
a prober polls ``/healthz`` every 10 ms from this process, and prints per
case: the worst and median ``/healthz`` latency, the hostile request's status
and how long it took. ``/healthz`` does no work, so its worst latency is how
long the proxy's event loop was stalled.

    git worktree add --detach /tmp/semcache-before <commit-before>
    python -m evaluation.bench.bench_stall --before /tmp/semcache-before

Cases: ReDoS in the default policy's code pattern (N word characters, item 1);
megabytes of ordinary words (item 2); a policy reload nested 5,000 deep and a
240 KB one (item 3); a 32 MiB header, a body trickled one byte every 0.5 s,
500 connections that never send a request (item 4).
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from evaluation.bench.stall_harness import HealthProber, proxy_process
from evaluation.replay.systems import Process

ADMIN = "bench-admin"
# Passed to both trees; a tree without the setting ignores it.
ENV = {"SEMCACHE_ADMIN_TOKEN": ADMIN, "SEMCACHE_PERSIST_POLICY_RELOADS": "false", "SEMCACHE_BODY_TIMEOUT_S": "5"}
WORDS = ("the quick brown fox jumps over a lazy dog while seventeen engineers review "
         "distributed caching proposals about latency budgets and python services").split()


def words(n_chars: int) -> str:
    rng = random.Random(n_chars)
    out, size = [], 0
    while size < n_chars:
        out.append(rng.choice(WORDS))
        size += len(out[-1]) + 1
    return " ".join(out)


def chat(url: str, text: str) -> str:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    try:
        return str(httpx.post(url + "/v1/chat/completions", json=body, timeout=900).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def put_policy(url: str, text: str) -> str:
    try:
        return str(httpx.put(url + "/admin/policies", content=text.encode(), timeout=900,
                             headers={"authorization": f"Bearer {ADMIN}"}).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _read_status(sock: socket.socket) -> str:
    try:
        head = sock.recv(64)
    except OSError as exc:
        return type(exc).__name__
    return head.split(b"\r\n", 1)[0].decode(errors="replace")[9:12] if head else "closed"


def huge_header(url: str, mib: int = 32) -> str:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: p\r\nX-Big: ")
            for _ in range(mib * 16):
                sock.sendall(b"a" * 65536)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            return _read_status(sock) + " (cut off)"
        return _read_status(sock) + f" (all {mib} MiB read)"


def slow_body(url: str, seconds: float = 8.0) -> str:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=seconds + 5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                sock.sendall(b" ")
                time.sleep(0.5)
        except OSError:
            return _read_status(sock) + " (cut off)"
        sock.settimeout(0.5)
        status = _read_status(sock)
        return status + f" (still open after {seconds:g} s)" if status in ("TimeoutError", "timeout") else status


def half_open(url: str, count: int = 500, wait_s: float = 12.0) -> str:
    port = int(url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    time.sleep(wait_s)
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            still_open += s.recv(1) != b""
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        s.close()
    return f"{still_open}/{count} held after {wait_s:g} s"


def cases() -> list[tuple[str, Callable[[str], str]]]:
    nested = "categories:\n  default:\n    match:\n      metadata: " + "[" * 5000 + "]" * 5000 + "\n"
    big_policy = "categories:\n" + "".join(
        f"  c{i}:\n    match: {{keywords: [{', '.join(f'kw{i}x{j}' for j in range(60))}]}}\n" for i in range(380))
    out: list[tuple[str, Callable[[str], str]]] = []
    for n in (10_000, 20_000, 40_000):
        out.append((f"redos {n // 1000}k word chars", lambda url, n=n: chat(url, "a" * n)))
    for mb in (1, 3.5):
        out.append((f"{mb:g} MB of words", lambda url, mb=mb: chat(url, words(int(mb * 1_000_000)))))
    out.append(("policy nested 5000 deep", lambda url: put_policy(url, nested)))
    out.append((f"policy {len(big_policy) // 1000} KB", lambda url: put_policy(url, big_policy)))
    out.append(("32 MiB header", huge_header))
    out.append(("body 1 byte / 0.5 s", slow_body))
    out.append(("500 idle connections", half_open))
    return out


def measure(tree: Path, upstream: str, workdir: Path) -> list[dict]:
    rows = []
    with proxy_process(upstream, workdir, tree=tree, env=ENV) as proxy:
        for name, send in cases():
            time.sleep(1.0)  # let the previous case's aftermath (e.g. storing its answer) finish first
            with HealthProber(proxy.url) as probe:
                started = time.perf_counter()
                outcome = send(proxy.url)
                took = time.perf_counter() - started
            rows.append({"case": name, "healthz_max_ms": probe.max_s * 1000, "healthz_p50_ms": probe.percentile(0.5) * 1000,
                         "probes": probe.count, "failed_probes": probe.failures, "outcome": outcome, "took_s": took})
            print(f"  [{tree.name}] {name}: healthz max {probe.max_s * 1000:.0f} ms, {outcome}, {took:.1f} s",
                  file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="source tree of the code before the fixes (optional)")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[2], help="tree to measure")
    args = parser.parse_args(argv)
    trees = [("before", args.before)] if args.before else []
    trees.append(("after", args.after))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sim = Process([sys.executable, "-m", "evaluation.engine_sim", "--port", "{port}", "--decode-ms-per-token",
                       "1", "--prefill-ms-per-token", "0", "--max-model-len", "10000000", "--default-max-tokens", "4"], "/v1/models", work / "sim.log")
        with sim:
            results = {label: measure(tree, sim.url + "/v1", work / label) for label, tree in trees}
    labels = [label for label, _ in trees]
    header = "| case | " + " | ".join(f"{l}: /healthz max (p50) | {l}: answer, time" for l in labels) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(labels)))
    for i, (name, _) in enumerate(cases()):
        cells = []
        for label in labels:
            r = results[label][i]
            cells.append(f"{r['healthz_max_ms']:.0f} ms ({r['healthz_p50_ms']:.1f})")
            cells.append(f"{r['outcome']}, {r['took_s']:.1f} s")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
