"""``semcache serve`` as a real process: started from another directory, stopped the way
docker, systemd and Kubernetes stop it (SIGTERM), interrupted with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "serve-process-admin"


def start_serve(cwd: Path, *flags: str) -> subprocess.Popen:
    """``python -m proxy serve FLAGS`` in ``cwd``, importing this tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEMCACHE_ADMIN_TOKEN": ADMIN,
           "SEMCACHE_EMBEDDER__LRU_SIZE": "0"}
    return subprocess.Popen([sys.executable, "-m", "proxy", "serve", *flags], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited {proc.returncode}: {proc.communicate()[1][-2000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become ready")


def test_a_bad_policy_file_fails_before_anything_starts(tmp_path, capsys):
    from proxy.cli import main

    assert main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--policies", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read" in capsys.readouterr().err


# --- the local engine's lifecycle (#14 item 11): the llama.cpp child never outlives the command ---------

def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...), None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie is dead, only not yet reaped


def engine_child(parent: int, timeout_s: float = 60.0) -> int:
    """The pid of ``parent``'s llama.cpp child, once it exists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[1]) == parent:
                try:
                    if b"llama_cpp.server" in (entry / "cmdline").read_bytes():
                        return int(entry.name)
                except OSError:
                    continue
        time.sleep(0.02)
    raise AssertionError("no local engine child appeared")


def assert_gone(pid: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)  # leave no orphan behind, then fail
        raise AssertionError(f"the local engine (pid {pid}) outlived the command")


@pytest.fixture
def serve_local(tmp_path):
    """``semcache serve`` with no upstream (so it starts the real local engine), in a scratch directory."""
    procs = []

    def start(*flags: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        procs.append(start_serve(tmp_path, "--port", str(port), *flags))
        return procs[-1], port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_serve_from_another_directory_then_sigterm(serve_local, tmp_path):
    """Regressions: outside the repository root ``serve`` failed with ``policies/default.yaml:
    cannot read`` (#13 item 12: the default policy is package data now); SIGTERM left the
    llama.cpp child running (#14 item 11)."""
    proc, port = serve_local()
    wait_ready(proc, port)
    engine = engine_child(proc.pid)
    auth = {"authorization": f"Bearer {ADMIN}"}
    shown = httpx.get(f"http://127.0.0.1:{port}/admin/policies", headers=auth, timeout=10)
    assert shown.status_code == 200 and shown.text == (ROOT / "policies" / "default.yaml").read_text()
    assert shown.headers["x-semcache-policy-source"].endswith(os.path.join("semcache", "policies", "default.yaml"))
    # A reload is in force but never written into the package's file.
    reload = httpx.put(f"http://127.0.0.1:{port}/admin/policies", headers=auth, timeout=10,
                       content="categories:\n  default: {threshold: 0.95}\n")
    assert reload.json()["reloaded"] is True and reload.json()["persisted"] is False
    assert (ROOT / "policies" / "default.yaml").read_text() == shown.text
    assert (tmp_path / ".semcache" / "cache.db").exists()  # state goes to the working directory

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert_gone(engine)
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in err
    assert f"pid {engine}" in out  # the ready line names the engine's pid


@pytest.mark.parametrize(("sig", "returncode", "message"), [
    (signal.SIGTERM, -signal.SIGTERM, ""),
    (signal.SIGINT, 130, "semcache: interrupted"),
])
def test_signal_while_the_local_engine_starts(serve_local, sig, returncode, message):
    """SIGTERM or Ctrl-C before the engine is ready: it is stopped, and no traceback is printed."""
    proc, _ = serve_local()
    engine = engine_child(proc.pid)
    assert alive(engine) and proc.poll() is None
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert_gone(engine)
    assert proc.returncode == returncode and "Traceback" not in err and message in err


def test_local_llm_command_stops_its_engine_on_sigterm(tmp_path):
    """``semcache local-llm`` (SIGKILL, where no clean-up can run: tests/proxy/test_parent_death.py)."""
    sig = signal.SIGTERM
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "local-llm", "--port", str(port), "--threads", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        engine = engine_child(proc.pid)
        deadline = time.monotonic() + 120
        while "local engine:" not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < deadline, "local-llm did not become ready"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert_gone(engine)
        assert proc.returncode == -sig and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
