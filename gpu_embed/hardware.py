"""What the machine offers: CPU instruction sets and whether a CUDA GPU is usable.

Both checks avoid importing torch unless an NVIDIA driver is present, because
importing torch costs seconds and most CPU-only starts never need it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from semcache.cores import cpu_count  # re-exported: the backends and benchmarks import it from here


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def int8_variant(flags: frozenset[str] | None = None) -> str:
    """The dynamic-quantisation recipe for this CPU: ``"vnni"`` or ``"avx2"``.

    With VNNI (AVX-512 VNNI or AVX-VNNI) the u8 x s8 dot products accumulate in
    32 bits, so full 8-bit weights are safe. Without it, AVX2's ``vpmaddubsw``
    saturates 16-bit intermediates, so weights are quantised to 7 bits
    (``reduce_range``) at some cost in accuracy.
    """
    flags = cpu_flags() if flags is None else flags
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & flags:
        return "vnni"
    return "avx2"


def nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver is loaded (cheap, no torch import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    if not nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
