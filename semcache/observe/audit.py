"""Live false-hit measurement: audits of semantic hits, their judge, and the estimate.

A semantic cache that cannot say how often it is wrong cannot be tuned, and a
controller that relaxes thresholds under load needs a live bound to stay
inside. So a fraction of *semantic* hits (never exact repeats: those are the
same request) is also sent to the engine, off the caller's path and only
while the engine is idle (the proxy decides when: :mod:`proxy.api.audit`).
This module holds what does not need HTTP:

* :class:`AuditSettings`, the per-category policy block ``audit:``;
* :class:`AnswerJudge`, which compares the cached answer with the fresh one;
* :class:`FalseHitEstimator`, per-category counts and a two-sided
  Clopper-Pearson interval on the false-hit rate;
* :func:`quarantine_pair`, which stops one cached entry from answering one
  query text again (the entry stays valid for its own question and others).

The judge. Engines sample, so two right answers to one question are rarely
equal; two answers to different questions rarely mean the same. An audit
counts as *agree* when the answers' embeddings (the cache's own embedder)
have cosine similarity >= ``answer_min_similarity`` **and** every number in
the shorter answer also occurs in the longer one (a recipe for 4 served for
8 people differs in its numbers while its wording stays close). Anything
else is a *false hit*. The judge leans towards "false": a sampled engine
that rewords a lot is counted against the cache, so the estimate is an upper-
leaning one, which is the safe side for a budget.

The estimate. Audited hits are a uniform random sample of the category's
semantic hits (each is picked with the same probability before its outcome is
known), so ``false / audited`` estimates the category's false-hit rate among
semantic hits without bias. Explicit ``correct: false`` feedback is added as
further evidence (it only ever raises the estimate: people report wrong
answers more readily than right ones). The interval is the exact two-sided
Clopper-Pearson interval at ``confidence``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from semcache.config.calibration import _binom_cdf, clopper_pearson_upper
from semcache.decide.guards import numbers_in
from semcache.config.policy import AuditSettings
from semcache.observe.stats import HIST_BINS, similarity_bin

if TYPE_CHECKING:
    from semcache.cache import SemanticCache
    from semcache.protocols import Embedder


@dataclass(frozen=True, slots=True)
class Judgement:
    agree: bool
    similarity: float
    reason: str


def answer_text(response: dict[str, Any]) -> str:
    """The first choice's text of an OpenAI chat or completions answer ('' when none)."""
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


class AnswerJudge:
    """Do a cached answer and a fresh answer to the new query say the same thing?"""

    # Answers are compared on their start: the embedder reads 256 tokens anyway, and a
    # bounded input keeps one audit's judging cost bounded (two embeddings).
    MAX_CHARS = 4000

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    async def judge(self, cached: str, fresh: str, *, min_similarity: float) -> Judgement:
        cached, fresh = cached[: self.MAX_CHARS], fresh[: self.MAX_CHARS]
        if not cached.strip() or not fresh.strip():
            return Judgement(False, 0.0, "an answer is empty")
        if " ".join(cached.split()) == " ".join(fresh.split()):
            return Judgement(True, 1.0, "answers equal")
        vectors = await self.embedder.embed([cached, fresh])
        a, b = np.asarray(vectors[0], dtype=np.float32), np.asarray(vectors[1], dtype=np.float32)
        sim = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
        short, long_ = sorted((numbers_in(cached), numbers_in(fresh)), key=len)
        missing = short - long_
        if missing:
            return Judgement(False, sim, f"numbers differ ({', '.join(sorted(missing)[:3])})")
        if sim < min_similarity:
            return Judgement(False, sim, f"answer similarity {sim:.3f} < {min_similarity:.2f}")
        return Judgement(True, sim, f"answer similarity {sim:.3f} >= {min_similarity:.2f}")


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval on a rate with ``k`` events in ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1.0 + confidence) / 2  # each side gets half of 1 - confidence
    upper = clopper_pearson_upper(k, n, tail)
    if k <= 0:
        return 0.0, upper
    alpha = 1.0 - tail
    lo, hi = 0.0, k / n
    for _ in range(60):  # P(X >= k | p) rises with p: bisect for P = alpha
        mid = (lo + hi) / 2
        if 1.0 - _binom_cdf(k - 1, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo, upper


@dataclass(slots=True)
class _Counts:
    audited: int = 0
    false: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_reason: str | None = None
    false_similarity: list[int] = field(default_factory=lambda: [0] * HIST_BINS)
    """Lookup similarity of the audited hits judged false: where in the hit histogram false hits sit."""


class FalseHitEstimator:
    """Per-category audit outcomes (plain counters, like :class:`~semcache.observe.stats.CacheStats`)."""

    def __init__(self, confidence: float = 0.95):
        self.confidence = confidence
        self._by_category: dict[str, _Counts] = defaultdict(_Counts)

    def record(self, category: str, judgement: Judgement, lookup_similarity: float | None = None) -> None:
        """One audit's outcome; ``lookup_similarity`` is the audited hit's query similarity."""
        counts = self._by_category[category]
        counts.audited += 1
        if not judgement.agree:
            counts.false += 1
            counts.last_reason = judgement.reason
            if lookup_similarity is not None:
                counts.false_similarity[similarity_bin(lookup_similarity)] += 1

    def skip(self, category: str, why: str) -> None:
        """An audit that was due but not run (engine busy, audits in flight, upstream error)."""
        self._by_category[category].skipped[why] += 1

    def estimate(self, category: str, feedback: dict[str, Any] | None = None) -> dict[str, Any]:
        c = self._by_category.get(category, _Counts())
        wrong = int((feedback or {}).get("wrong", 0))
        reports = int((feedback or {}).get("reports", 0))
        k, n = c.false + wrong, c.audited + reports
        low, high = clopper_pearson_interval(k, n, self.confidence)
        return {
            "audited": c.audited, "audit_false_hits": c.false, "feedback_reports": reports,
            "feedback_wrong": wrong, "samples": n,
            "false_hit_rate": k / n if n else None,
            "lower": low if n else None, "upper": high if n else None,
            "confidence": self.confidence, "skipped": dict(c.skipped), "last_false_reason": c.last_reason,
            "false_hit_similarity_hist": list(c.false_similarity),
        }

    def snapshot(self, feedback: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Every category with audits or feedback; ``feedback`` is :meth:`FeedbackBook.snapshot`."""
        feedback = feedback or {}
        names = set(self._by_category) | set(feedback)
        return {name: self.estimate(name, feedback.get(name)) for name in sorted(names)}

    def upper_bound(self, category: str, feedback: dict[str, Any] | None = None) -> float | None:
        """The interval's upper end, or None before any sample (for budget-bounded controllers)."""
        est = self.estimate(category, feedback)
        return est["upper"]


async def quarantine_pair(cache: SemanticCache, entry_id: str, query_digest: str) -> bool:
    """Entry ``entry_id`` never again answers a query whose text digest is ``query_digest``.

    Written into the stored entry (atomically, so replicas and restarts keep it)
    and into the in-memory catalog at once. False when the entry is gone.
    """

    def block(entry):
        if query_digest in entry.blocked_queries:
            return entry
        return entry.model_copy(update={"blocked_queries": [*entry.blocked_queries, query_digest]})

    stored = await cache.doc_store.update(entry_id, block)
    meta = cache.catalog.get(entry_id)
    if meta is not None:
        meta.blocked = meta.blocked | {query_digest}
    return stored is not None or meta is not None


__all__ = ["AnswerJudge", "AuditSettings", "FalseHitEstimator", "Judgement", "answer_text",
           "clopper_pearson_interval", "quarantine_pair"]
