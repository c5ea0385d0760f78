"""Time for semcache: every TTL, recency and timestamp goes through a ``Clock``.

Tests inject :class:`ManualClock` and move time explicitly instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch (float)."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock (``time.time``): entries outlive a process restart."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds

    def set(self, at: float) -> None:
        self._now = float(at)
