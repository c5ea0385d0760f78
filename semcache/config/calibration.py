"""Operating points with a bounded false-hit rate (``max_false_hit_rate``).

Given labelled pairs scored the way the cache would score them (cosine
similarity, or the verifier's probability), :func:`choose` returns the
loosest cut-off whose false-hit rate among served pairs is below the target
*with confidence*: the one-sided Clopper-Pearson upper bound of
``false_hits / served`` at ``confidence`` (default 95%) must be <= target.

Cut-offs are tested in fixed sequence, from the strictest to the loosest,
stopping at the first that fails (Learn-then-Test style fixed-sequence
testing): because the sequence is fixed in advance, the chance that the
chosen cut-off's true rate exceeds the target is at most ``1 - confidence``,
not inflated by trying many cut-offs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    i = np.arange(k + 1)
    steps = np.r_[0.0, np.cumsum(np.log((n - i[:-1]) / (i[:-1] + 1.0)))]  # log C(n, i)
    terms = steps + i * (math.log(p) - math.log1p(-p)) + n * math.log1p(-p)
    top = terms.max()
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate with ``k`` events in ``n`` trials."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0
    for _ in range(60):  # P(X <= k | p) falls as p rises: bisect for P = alpha
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    value: float | None
    """Serve scores >= value; ``None`` when no cut-off meets the target (serve nothing)."""
    n_labelled: int
    served: int
    false_hits: int
    estimated_rate: float
    upper_bound: float
    confidence: float


def choose(scores, labels, target: float, *, confidence: float = 0.95, servable=None,
           min_value: float | None = None, grid: int = 20) -> OperatingPoint:
    """The loosest cut-off on ``scores`` meeting ``target`` (labels: 1 = right answer).

    ``servable`` (bool per pair) marks pairs another stage would already
    reject (e.g. a guard): they count as not served at any cut-off.
    ``min_value`` is the loosest cut-off allowed. With too little evidence
    (no pairs at all, or too few served ones) the answer is ``value=None``:
    serve nothing.
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=int)
    if len(scores) == 0:  # no evidence: no cut-off can be shown to meet the target
        return OperatingPoint(None, 0, 0, 0, 0.0, 0.0, confidence)
    ok = np.ones(len(scores), bool) if servable is None else np.asarray(servable, bool)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    served_cum, wrong_cum = np.cumsum(ok[order]), np.cumsum((labels[order] == 0) & ok[order])
    alpha = 1.0 - confidence
    # The sequence of cut-offs depends on the scores only, never on the labels. It
    # starts at the smallest served count that would pass with an observed rate of a
    # quarter of the target (so one early false hit among the top scores does not end
    # the sequence), or where zero false hits could pass if the data are too few,
    # and walks down a grid of at most ``grid`` points.
    n_min = math.ceil(math.log(alpha) / math.log1p(-target))
    total = int(served_cum[-1]) if len(s) else 0
    for n in np.unique(np.geomspace(n_min, max(n_min, total), 64).round().astype(int)):
        if _binom_cdf(math.ceil(n * target / 4), int(n), target) <= alpha:  # ceil: at least one false hit
            n_min = int(n)
            break
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each distinct score
    ends = ends[served_cum[ends] >= n_min]
    if min_value is not None:
        ends = ends[s[ends] >= min_value]
    if len(ends) > grid:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, grid).round().astype(int))]
    chosen = None
    for j in ends:
        # upper bound <= target  <=>  P(X <= false_hits | served, target) <= alpha
        if _binom_cdf(int(wrong_cum[j]), int(served_cum[j]), target) > alpha:
            break
        chosen = j
    if chosen is None:
        return OperatingPoint(None, len(scores), 0, 0, 0.0, 0.0, confidence)
    served, false_hits = int(served_cum[chosen]), int(wrong_cum[chosen])
    return OperatingPoint(float(s[chosen]), len(scores), served, false_hits, false_hits / served,
                          clopper_pearson_upper(false_hits, served, confidence), confidence)


@dataclass(frozen=True, slots=True)
class TrapBound:
    """The loosest cut-off serving few enough trap pairs (:func:`trap_cut`)."""

    value: float | None
    """Serve scores >= value; ``-inf`` when serving every servable trap still meets the target, ``None``
    when there are too few traps to show the target met at all (serve nothing)."""
    n: int
    served: int
    upper_bound: float


def trap_cut(scores, target: float, *, confidence: float = 0.95, servable=None) -> TrapBound:
    """The loosest cut-off at which the share of trap pairs served has an upper bound <= ``target``.

    ``scores`` are the trap pairs' only (``servable`` as in :func:`choose`).
    Unlike a false-hit rate, the share served of a fixed set of traps can only
    grow as the cut-off falls, so the loosest passing cut-off is found
    directly, with no sequence to test: the most traps ``k`` whose one-sided
    Clopper-Pearson bound over all ``n`` traps still meets the target, then a
    cut-off just above the ``k+1``-th highest servable trap score.
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    ok = np.ones(n, bool) if servable is None else np.asarray(servable, bool)
    s = np.sort(scores[ok])[::-1]
    k = -1
    while k + 1 <= len(s) and clopper_pearson_upper(k + 1, n, confidence) <= target:
        k += 1
    if k < 0:  # too few traps to show even zero served meets the target: no evidence, serve nothing
        return TrapBound(None, n, 0, clopper_pearson_upper(0, n, confidence))
    if k >= len(s):
        return TrapBound(-math.inf, n, len(s), clopper_pearson_upper(len(s), n, confidence))
    value = float(np.nextafter(s[k], np.inf))  # above the (k+1)-th: at most k traps (ties go unserved too)
    served = int((s >= value).sum())
    return TrapBound(value, n, served, clopper_pearson_upper(served, n, confidence))
