"""Child processes that die with the proxy: ``PR_SET_PDEATHSIG`` set, then ``exec``.

``python -m proxy.upstream.parent_death PARENT_PID CMD...`` asks Linux to
SIGKILL the process when the thread that started it exits, checks that
PARENT_PID is still its parent (if not, the parent died before the request
took hold: it exits), and execs CMD in its place, keeping the pid. The
parent's own clean-up (SIGTERM, then wait) stays the normal way out; this
covers a parent that dies without one (SIGKILL, the OOM killer, a crash).

A launcher rather than ``subprocess.Popen(preexec_fn=...)``: ``preexec_fn``
can deadlock in a process with threads. Elsewhere than Linux the command runs
as it is. The signal follows the *thread* that called ``Popen``: start the
child from one that outlives it (the main thread), not from a worker thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(command: Sequence[str]) -> list[str]:
    """``command`` run through this launcher, so it is killed when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-m", __name__, str(os.getpid()), *command]


def _main(argv: Sequence[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print(f"usage: python -m {__spec__.name if __spec__ else 'parent_death'} PARENT_PID CMD...",
              file=sys.stderr)
        return 2
    parent, command = int(argv[0]), list(argv[1:])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        print(f"parent_death: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    if os.getppid() != parent:
        return 1  # the parent is already gone: nobody would stop this child
    os.execvp(command[0], command)  # searches PATH like Popen does
    return 1  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
