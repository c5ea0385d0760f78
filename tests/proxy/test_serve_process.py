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
    """``python -m proxy.cli serve FLAGS`` in ``cwd``, importing this tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEMCACHE_ADMIN_TOKEN": ADMIN,
           "SEMCACHE_EMBEDDER__LRU_SIZE": "0"}
    return subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", *flags], cwd=cwd, env=env,
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


def test_serve_from_another_directory_uses_the_shipped_default_policy(tmp_path, engine_sim):
    """Regression (#13 item 12): outside the repository root ``serve`` failed with
    ``policies/default.yaml: cannot read``; the default policy is package data now."""
    port = free_port()
    proc = start_serve(tmp_path, "--upstream", engine_sim.url + "/v1", "--port", str(port))
    try:
        wait_ready(proc, port)
        auth = {"authorization": f"Bearer {ADMIN}"}
        shown = httpx.get(f"http://127.0.0.1:{port}/admin/policies", headers=auth, timeout=10)
        assert shown.status_code == 200 and shown.text == (ROOT / "policies" / "default.yaml").read_text()
        assert shown.headers["x-semcache-policy-source"].endswith(os.path.join("semcache", "policies",
                                                                             "default.yaml"))
        # A reload is in force but never written into the package's file.
        reload = httpx.put(f"http://127.0.0.1:{port}/admin/policies", headers=auth, timeout=10,
                           content="categories:\n  default: {threshold: 0.95}\n")
        assert reload.json()["reloaded"] is True and reload.json()["persisted"] is False
        assert (ROOT / "policies" / "default.yaml").read_text() == shown.text
        assert (tmp_path / ".semcache" / "cache.db").exists()  # state goes to the working directory
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_a_bad_policy_file_fails_before_anything_starts(tmp_path, capsys):
    from proxy.cli import main

    assert main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--policies", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read" in capsys.readouterr().err
