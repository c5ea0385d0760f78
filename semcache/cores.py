"""CPU cores this process may use: the thread count for the ONNX sessions (embedder, verifier)."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """CPU cores usable by this process (respects affinity masks and cgroups pins)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
