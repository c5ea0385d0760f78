"""The systems a replay compares, and the processes that run them on loopback.

Every system but ``direct`` is a real ``semcache serve`` process with its own
fresh SQLite store and a policy file:

* ``direct``      no cache: the client talks to the upstream itself;
* ``exact``       exact-match cache: threshold 0.9999, no guards (only
                  normalised-text repeats hit);
* ``global-0.80`` one global threshold 0.80 and no guards, as GPTCache ships it;
* ``global-best`` one global threshold, the best-F1 one from the pair evaluation
                  on the dev data (``--best-threshold``);
* ``semcache``    the category policy file under test (default ``policies/default.yaml``);
* ``gptcache``    GPTCache 0.1.44 itself (faiss + SQLite, our MiniLM embedder, its
                  own threshold 0.8 = cosine 0.6): :mod:`evaluation.replay.gptcache_system`,
                  only where the ``gptcache`` extra is installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

GLOBAL_POLICY = """\
defaults:
  threshold: {threshold}
  ttl_seconds: null
  guards: {{numbers: false, negation: false, entities: false, identifiers: false}}
categories:
  default: {{}}
"""


SYSTEMS = ("direct", "exact", "global-0.80", "global-best", "semcache", "gptcache")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def policy_files(workdir: Path, semcache_policy: Path, best_threshold: float) -> dict[str, Path | None]:
    """System name -> policy file (None for ``direct``), written into ``workdir``."""
    out: dict[str, Path | None] = {"direct": None}
    for name, threshold in (("exact", 0.9999), ("global-0.80", 0.80), ("global-best", best_threshold)):
        path = workdir / f"{name}.yaml"
        path.write_text(GLOBAL_POLICY.format(threshold=threshold), encoding="utf-8")
        out[name] = path
    out["semcache"] = Path(semcache_policy).resolve()
    return out


class Process:
    """A child process on a free loopback port, stopped (by its own pid) on exit."""

    def __init__(self, args: list[str], ready_path: str, log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.ready_path = ready_path
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Process:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[:4]} exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"{self.args[:4]} not ready after 120 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def engine_sim(answers: Path, log: Path, *, decode_ms: float, max_batch: int) -> Process:
    return Process([sys.executable, "-m", "evaluation.engine_sim", "--port", "{port}", "--answers", str(answers),
                    "--decode-ms-per-token", str(decode_ms), "--max-batch", str(max_batch),
                    "--max-waiting", "100000", "--max-model-len", "32768"], "/v1/models", log)


def proxy(upstream: str, policy: Path, store: Path, token: str, log: Path) -> Process:
    return Process([sys.executable, "-m", "proxy", "serve", "--upstream", upstream, "--port", "{port}",
                    "--policies", str(policy), "--store", "sqlite", "--sqlite-path", str(store),
                    "--admin-token", token, "--log-level", "warning"], "/readyz", log)


def gptcache(upstream: str, threshold: float, data_dir: Path, log: Path) -> Process:
    """GPTCache behind its loopback OpenAI server, GPTCache's store under ``data_dir``."""
    return Process([sys.executable, "-m", "evaluation.replay.gptcache_system", "--port", "{port}", "--upstream", upstream,
                    "--threshold", str(threshold), "--data-dir", str(data_dir)], "/readyz", log)


def gptcache_missing() -> str | None:
    """Why the ``gptcache`` system cannot run here, or None when its extra is installed."""
    from evaluation.replay.gptcache_system import missing_backends

    missing = missing_backends()
    return f"the gptcache extra is not installed (missing {', '.join(missing)}; pip install -e '.[gptcache]')" \
        if missing else None
