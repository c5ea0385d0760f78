"""The learned hit verifier: is the cached answer right for this new query?

Runs on a candidate after the similarity threshold and the guards, before
serving (see :class:`VerifierGate`); per category, ``policy.verifier``
switches it on, picks the ``model`` and sets ``min_probability``. Two models:

* ``trees`` (:mod:`semcache.verifier.model`): a small tree ensemble over cheap
  pair features (:mod:`semcache.verifier.features`), ~0.25 ms, run inline;
* ``cross-encoder`` (:mod:`semcache.verifier.cross_encoder`): int8 MiniLM-L6
  reading both queries together, a few ms of CPU, run on a worker thread.

Both are trained by ``python -m evaluation.training.train_verifier`` (``--cross-encoder``
for the second). The gate only ever sees the few index candidates above the
category's similarity threshold (its pre-filter), never an exact repeat.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcache.errors import CacheUnavailableError, ConfigError
from semcache.verifier.cross_encoder import DEFAULT_DIR, CrossEncoderVerifier, log_odds
from semcache.verifier.model import DEFAULT_ARTEFACT, Verifier

log = logging.getLogger("semcache.verifier")


def policy_probabilities(settings, model, triples: list[tuple[str, str, float]]):
    """P(right) for each ``(query, cached query, cosine)`` as the category's ``verifier`` settings
    score it (both orders, held within ``one_order_margin``, where they say so): ``semcache
    calibrate`` and ``semcache eval pairs``; the gate computes the same score, or enough of it to
    decide (:func:`policy_verdicts`), so a cut-off certifies the numbers serving compares."""
    if settings.both_orders:  # cross-encoder only (VerifierSettings checks it)
        return model.probabilities_of(triples, both_orders=True, margin=settings.one_order_margin)
    return model.probabilities_of(triples)


def policy_verdicts(settings, model, triples: list[tuple[str, str, float]], bars: list[float]):
    """``(P, exact)`` per triple, decided against every cut-off in ``bars``: P is
    :func:`policy_probabilities`' score, or, with a ``one_order_margin``, one on the same side of
    every bar (``exact`` False: the second order was not read)."""
    if settings.both_orders and settings.one_order_margin is not None:
        return model.judge(triples, margin=settings.one_order_margin, bars=bars)
    probs = policy_probabilities(settings, model, triples)
    return probs, np.ones(len(triples), dtype=bool)


@dataclass(frozen=True, slots=True)
class VerifierVerdict:
    passed: bool
    probability: float
    reason: str
    margin: float = 0.0
    """0: ``probability`` is the served score. Else (``one_order_margin``) it is the first order's
    alone, and the served score lies within this many log-odds of it: :meth:`decides`."""

    def decides(self, bar: float) -> bool:
        """Is ``probability >= bar`` what the served score says at ``bar``? (:func:`decides`)"""
        return decides(self.probability, self.margin, bar)


def decides(probability: float, margin: float, bar: float) -> bool:
    """Does a verifier ``probability`` known to within ``margin`` log-odds of the served score
    (0: it is that score) say at ``bar`` what the served score says? Log-odds as
    :meth:`CrossEncoderVerifier.judge` reads them, so a bar of 0 or 1 is a number too."""
    if not margin:
        return True
    return abs(float(log_odds(np.array([probability, bar])) @ [1.0, -1.0])) > margin


class VerifierGate:
    """Loads each model on first use (off the event loop) and judges candidates.

    Tree scoring takes ~0.25 ms of pure CPU (``evaluation/bench/bench_verifier.py``),
    less than a thread hand-off, so it runs inline; the cross-encoder's
    milliseconds run on a worker thread so other requests are not stalled.
    """

    def __init__(self, verifier: Verifier | None = None, *, path: str | Path = DEFAULT_ARTEFACT,
                 cross_encoder: CrossEncoderVerifier | None = None, cross_encoder_path: str | Path = DEFAULT_DIR):
        self._models = {"trees": verifier, "cross-encoder": cross_encoder}
        self._loaders = {"trees": lambda: Verifier.load(path),
                         "cross-encoder": lambda: CrossEncoderVerifier.load(cross_encoder_path)}
        self._lock = asyncio.Lock()

    async def model(self, kind: str = "trees") -> Verifier | CrossEncoderVerifier:
        if self._models[kind] is None:
            async with self._lock:
                if self._models[kind] is None:
                    self._models[kind] = await asyncio.to_thread(self._loaders[kind])
        return self._models[kind]

    async def preload(self, policies) -> None:
        """Load the models ``policies`` use now, so the first lookup does not wait for one (~0.5 s).

        A model that cannot be loaded is logged; lookups that need it then
        report the cache unavailable (plain proxying), as they would anyway.
        """
        for kind in sorted({p.verifier.model for p in policies if p.verifier.enabled}):
            try:
                await self.model(kind)
            except ConfigError as exc:
                log.warning("verifier %s unavailable, its categories will be proxied uncached: %s", kind, exc)

    def memo_snapshot(self) -> dict[str, int]:
        """The cross-encoder's pair memo: ``hits``, ``misses``, ``pairs`` (zeros until it is loaded)."""
        model = self._models["cross-encoder"]
        if model is None:
            return {"hits": 0, "misses": 0, "pairs": 0}
        return {"hits": model.memo.hits, "misses": model.memo.misses, "pairs": len(model.memo)}

    async def check(self, policy, query: str, cached_query: str, similarity: float) -> VerifierVerdict | None:
        """``None`` when the policy does not use the verifier."""
        verdicts = await self.check_many(policy, query, [(cached_query, similarity)])
        return None if verdicts is None else verdicts[0]

    async def check_many(self, policy, query: str, candidates: list[tuple[str, float]],
                         min_probability: float | None = None,
                         cut_offs: list[float] | None = None) -> list[VerifierVerdict] | None:
        """Verdicts for ``(cached query, similarity)`` candidates of ``query``, in one worker-thread hop.

        ``None`` when the policy does not use the verifier. ``min_probability``:
        the cut-off in force when load adaptation moved it (else the policy's). (The cross-encoder
        still runs each pair alone: its int8 scores depend on a run's other
        pairs, see :meth:`CrossEncoderVerifier.probabilities_of`.) ``cut_offs``:
        the bars each verdict must decide (:meth:`VerifierVerdict.decides`); by
        default every one this lookup may compare it with (:func:`bars`). The cut-off
        ``passed`` is read against is always one of them.
        """
        settings = policy.verifier
        if not settings.enabled:
            return None
        try:
            verifier = await self.model(settings.model)
        except ConfigError as exc:
            raise CacheUnavailableError(f"verifier unavailable: {exc}") from exc
        cut = settings.min_probability if min_probability is None else min_probability
        if settings.model == "trees":
            probs = [verifier.probability(query, cached, sim) for cached, sim in candidates]
            exact = [True] * len(candidates)
        else:
            triples = [(query, cached, sim) for cached, sim in candidates]
            decide = bars(settings, min_probability) if cut_offs is None else sorted({cut, *cut_offs})
            probs, exact = await asyncio.to_thread(policy_verdicts, settings, verifier, triples, decide)
        out = []
        for p, whole, (_, sim) in zip(probs, exact, candidates, strict=True):
            p = float(p)
            passed = p >= cut
            op = ">=" if passed else "<"
            out.append(VerifierVerdict(passed, p, f"verifier p={p:.3f}{'' if whole else ' (one order)'} {op} "
                                                  f"{cut:.2f} at similarity {sim:.3f} ({policy.name})",
                                       0.0 if whole else settings.one_order_margin))
        return out


def bars(settings, min_probability: float | None = None, overruling: list[str] | None = None) -> list[float]:
    """The cut-offs a verifier probability may be compared with in a lookup: ``min_probability``
    (the one load adaptation set, and the policy's, which the what-if log replays), and the
    ``overrule`` bar above either of each guard in ``overruling`` (default: of every guard the
    policy lets the verifier overrule, for a candidate whose guards are not checked yet)."""
    cuts = {settings.min_probability} | ({min_probability} if min_probability is not None else set())
    over = settings.active_overrule
    guards = over if overruling is None else [g for g in overruling if g in over]
    return sorted(cuts | {max(over[g], cut) for g in guards for cut in cuts})


__all__ = ["CrossEncoderVerifier", "Verifier", "VerifierGate", "VerifierVerdict", "bars", "decides",
           "policy_probabilities", "policy_verdicts"]
