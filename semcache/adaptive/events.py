"""The controller's event log: every move it made (or, in dry run, would have made).

Bounded (the newest ``maxlen`` events), shown in ``/admin/stats`` and the
reports, and logged at INFO. Events hold category names and figures only,
never prompts.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("semcache.adaptive")


@dataclass(frozen=True, slots=True)
class AdaptiveEvent:
    at: float
    category: str
    action: str
    """``relax`` (a step down), ``restore`` (a step back) or ``reset`` (kill switch, policy change)."""
    reason: str
    pressure: float
    old_threshold: float
    new_threshold: float
    old_ttl_seconds: float | None
    new_ttl_seconds: float | None
    dry_run: bool = False
    cutoff: str = "similarity"
    """What the thresholds are: the cosine ``similarity`` threshold or the ``verifier``'s min_probability."""

    def describe(self) -> str:
        what = "would " + self.action if self.dry_run else self.action
        name = "threshold" if self.cutoff == "similarity" else "verifier min_probability"
        return (f"{self.category}: {what} {name} {self.old_threshold:.3f} -> {self.new_threshold:.3f}, "
                f"ttl {self.old_ttl_seconds} -> {self.new_ttl_seconds} ({self.reason})")


class EventLog:
    """The newest controller moves, oldest first."""

    def __init__(self, maxlen: int = 200):
        self._events: deque[AdaptiveEvent] = deque(maxlen=maxlen)
        self.total = 0

    def add(self, event: AdaptiveEvent) -> None:
        self._events.append(event)
        self.total += 1
        log.info("adaptive policy: %s", event.describe())

    def __iter__(self):
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)

    def snapshot(self, last: int = 50) -> list[dict[str, Any]]:
        return [asdict(e) for e in list(self._events)[-last:]]
