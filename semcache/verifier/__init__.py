"""The learned hit verifier: is the cached answer right for this new query?

Runs on a candidate after the similarity threshold and the guards, before
serving (see :class:`VerifierGate`); per category, ``policy.verifier``
switches it on and sets ``min_probability``. The model
(:mod:`semcache.verifier.model`) is a small tree ensemble over cheap pair
features (:mod:`semcache.verifier.features`), trained by
``python -m evaluation.train_verifier --seed 0``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from semcache.errors import CacheUnavailableError, ConfigError
from semcache.verifier.model import DEFAULT_ARTEFACT, Verifier


@dataclass(frozen=True, slots=True)
class VerifierVerdict:
    passed: bool
    probability: float
    reason: str


class VerifierGate:
    """Loads the model on first use (off the event loop) and judges candidates.

    Scoring one candidate takes ~0.25 ms of pure CPU (measured in
    ``evaluation/bench_verifier.py``), less than a thread hand-off, so it runs
    inline.
    """

    def __init__(self, verifier: Verifier | None = None, *, path: str | Path = DEFAULT_ARTEFACT):
        self._verifier = verifier
        self._path = path
        self._lock = asyncio.Lock()

    async def model(self) -> Verifier:
        if self._verifier is None:
            async with self._lock:
                if self._verifier is None:
                    self._verifier = await asyncio.to_thread(Verifier.load, self._path)
        return self._verifier

    async def check(self, policy, query: str, cached_query: str, similarity: float) -> VerifierVerdict | None:
        """``None`` when the policy does not use the verifier."""
        settings = policy.verifier
        if not settings.enabled:
            return None
        try:
            verifier = await self.model()
        except ConfigError as exc:
            raise CacheUnavailableError(f"verifier unavailable: {exc}") from exc
        p = verifier.probability(query, cached_query, similarity)
        passed = p >= settings.min_probability
        op = ">=" if passed else "<"
        return VerifierVerdict(passed, p, f"verifier p={p:.3f} {op} {settings.min_probability:.2f} "
                                          f"at similarity {similarity:.3f} ({policy.name})")


__all__ = ["Verifier", "VerifierGate", "VerifierVerdict"]
