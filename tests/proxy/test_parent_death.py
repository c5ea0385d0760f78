"""The parent-death launcher: a child started through it dies when its parent is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.proxy.test_serve_process import ROOT, alive, assert_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

PARENT = """
import subprocess, sys, time
from proxy.upstream.parent_death import die_with_parent
child = subprocess.Popen(die_with_parent(["sleep", "60"]), start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_a_parent_killed_by_sigkill():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while b"sleep" not in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]:  # exec'd: same pid
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert alive(child)
        parent.send_signal(signal.SIGKILL)  # no clean-up can run
        parent.wait(timeout=10)
        assert_gone(child, timeout_s=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_the_launcher_runs_nothing_when_its_parent_is_already_gone(tmp_path):
    marker = tmp_path / "ran"
    # PARENT_PID 1 is not the launcher's parent: as if the parent had died before prctl.
    proc = subprocess.run([sys.executable, "-m", "proxy.upstream.parent_death", "1", "/usr/bin/touch", str(marker)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert proc.returncode == 1 and not marker.exists()
    proc = subprocess.run([sys.executable, "-m", "proxy.upstream.parent_death", str(os.getpid()), "/usr/bin/touch",
                           str(marker)], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert proc.returncode == 0 and marker.exists()
