"""Real processes for the store benchmarks: redis-server, the engine simulator, proxy replicas, load.

Used by ``bench_store_faults.py`` and ``bench_replicas.py``. Every process is
a real child (``redis-server``, ``python -m evaluation.engine_sim``,
``python -m proxy serve``); load comes from several client processes, each
running many keep-alive ``httpx`` connections, so the load generator is not
one GIL. A proxy can run the code of another tree (``tree=``): a git commit
unpacked with :func:`unpack_commit`, for before/after figures in one run.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from evaluation.bench.bench_proxy import free_port, pct, wait_ready

ROOT = Path(__file__).resolve().parents[2]
MODEL = "sim-model"


def unpack_commit(rev: str, into: Path) -> Path:
    """The tree of git commit ``rev`` under ``into`` (read-only use: run its code)."""
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


class Redis:
    """A redis-server child on its own port and directory; ``extra`` adds flags (persistence)."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None):
        self.port = port or free_port()
        self.workdir, self.extra = workdir, extra
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run bash .ci/setup")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--dir", str(self.workdir), *self.extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def send(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None


BENCH_POLICIES = """\
# Rules only (no example prototypes): an exact repeat is served without embedding, so the
# figures are about the store and the replicas. The simulator stops at max_tokens: keep those.
defaults: {threshold: 0.9, cache_truncated: true}
categories:
  default: {}
"""


def bench_policies(work: Path) -> Path:
    path = work / "bench-policies.yaml"
    path.write_text(BENCH_POLICIES)
    return path


def start_sim(port: int, decode_ms: float = 0.5) -> subprocess.Popen:
    sim = subprocess.Popen([sys.executable, "-m", "evaluation.engine_sim", "--model", MODEL, "--port", str(port),
                            "--prefill-ms-per-token", "0", "--decode-ms-per-token", str(decode_ms),
                            "--default-max-tokens", "16", "--max-batch", "256"], cwd=ROOT)
    wait_ready(f"http://127.0.0.1:{port}/health", sim)
    return sim


def start_proxy(port: int, sim_port: int, redis_url: str, *, prefix: str = "semcache", tree: Path = ROOT,
                policies: Path | None = None, wait: bool = True, **env: str) -> subprocess.Popen:
    """``semcache serve`` on ``port`` with the Redis store, the simulator upstream, the code of ``tree``."""
    environ = {**os.environ, "PYTHONPATH": str(tree), "SEMCACHE_REDIS_PREFIX": prefix,
               "SEMCACHE_SPECULATIVE_FORWARD": "false", **env}
    cmd = [sys.executable, "-m", "proxy", "serve", "--upstream", f"http://127.0.0.1:{sim_port}/v1",
           "--port", str(port), "--store", "redis", "--redis-url", redis_url, "--log-level", "error",
           "--policies", str(policies or tree / "policies" / "default.yaml")]
    proc = subprocess.Popen(cmd, cwd=tree, env=environ)
    if wait:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return proc


def stop(*procs: subprocess.Popen | None) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.terminate()
    for p in procs:
        if p is not None:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def chat(prompt: str) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}


@dataclass
class Tally:
    """What one load phase saw: per request (finish time, latency, HTTP status, X-Semcache-Status)."""

    rows: list[tuple[float, float, int, str]] = field(default_factory=list)

    def merge(self, other: Tally) -> Tally:
        return Tally(self.rows + other.rows)

    def count(self, status: str | None = None) -> int:
        return sum(1 for r in self.rows if r[2] == 200 and (status is None or r[3] == status))

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r[2] != 200)

    def latency_ms(self, q: float) -> float:
        return pct([r[1] / 1000 for r in self.rows], q) if self.rows else float("nan")


async def _drive(urls: list[str], prompts: list[str], connections: int, duration: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + duration

    async def one(i: int) -> None:
        url = urls[i % len(urls)]
        n = i
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                prompt = prompts[n % len(prompts)]
                n += connections
                started = time.monotonic()
                try:
                    r = await client.post("/v1/chat/completions", json=chat(prompt))
                    status, cache = r.status_code, r.headers.get("x-semcache-status", "")
                except httpx.HTTPError:
                    status, cache = 0, "error"
                now = time.monotonic()
                tally.rows.append((now, (now - started) * 1000, status, cache))

    await asyncio.gather(*(one(i) for i in range(connections)))
    return tally


def _worker(urls: list[str], prompts: list[str], connections: int, duration: float, out: mp.Queue) -> None:
    out.put(asyncio.run(_drive(urls, prompts, connections, duration)).rows)


def load(urls: list[str], prompts: list[str], *, clients: int, procs: int, duration: float) -> Tally:
    """``clients`` connections spread over ``procs`` client processes and over ``urls``, for ``duration`` s."""
    queue: mp.Queue = mp.Queue()
    per = [clients // procs + (i < clients % procs) for i in range(procs)]
    workers = [mp.Process(target=_worker, args=(urls[i % len(urls):] + urls[:i % len(urls)], prompts[i::procs]
                                                if len(prompts) >= procs else prompts, n, duration, queue))
               for i, n in enumerate(per)]
    for w in workers:
        w.start()
    rows = [row for _ in workers for row in queue.get()]
    for w in workers:
        w.join()
    return Tally(rows)


def prime(url: str, prompts: list[str]) -> None:
    """Ask each prompt once (misses: the answers get stored)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        for p in prompts:
            c.post("/v1/chat/completions", json=chat(p)).raise_for_status()
