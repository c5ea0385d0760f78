"""Routing without any knowledge of the prompt: round robin and least-loaded."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.upstream.pool import Upstream


class RoundRobin:
    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream:
        return candidates[next(self._counter) % len(candidates)]


class LeastLoaded:
    """Fewest requests in flight from this proxy; ties broken round robin."""

    def __init__(self) -> None:
        self._tie = RoundRobin()

    def choose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream:
        low = min(u.in_flight for u in candidates)
        return self._tie.choose([u for u in candidates if u.in_flight == low], body)
