"""A bounded ring of recent lookups, kept so a policy change can be replayed before it is made.

For every lookup the cache records the category, the decision (status, stage,
reason), the threshold and TTL in force, the query's digest and, for a
semantic search, each candidate the index returned: its similarity, its age,
whether it was expired or quarantined for this query, and whether it passes
the category's guards. :mod:`semcache.observe.whatif` replays these records at another
threshold or TTL.

How the candidates are known. The lookup keeps the index's answer (the
nearest ``candidates`` entries and their similarities) in its key context,
but its decision loop stops at the first candidate below the threshold, so
guards are never run on lower ones. :meth:`LookupLog.record`, called once
right after the decision, fills in what the decision already tells: the
served entry passed; a candidate at or above the threshold ranked before it
(or any, on a miss) was refused by a guard or the verifier. The guards of the others (down to
``guard_floor``) are run in the background, off the caller's path, with the
same :func:`semcache.decide.diffrule.check` the lookup uses; at most
``max_pending`` lookups' checks wait in one queue, worked off by one task that
yields to the event loop between lookups; candidates of lookups beyond that
stay ``unknown`` (a replay reports them as undetermined, it never guesses).

Audit outcomes are joined when an audit finishes (:meth:`LookupLog.audited`),
by the served entry's id and the query digest.

Privacy: the query text is kept only with ``keep_text`` (default off: digests
only); the guard checks hold it in memory until they finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semcache.decide import diffrule
from semcache.verifier import decides

if TYPE_CHECKING:
    from semcache.cache import SemanticCache
    from semcache.results import LookupResult

log = logging.getLogger("semcache.observe.lookup_log")

# Candidate verdicts: whether it may answer this query at a low enough threshold.
PASS, EXACT, VERIFIER, UNKNOWN = "pass", "exact", "verifier", "unknown"
SEMANTIC_STAGES = frozenset({"similarity", "guard", "verifier", "audit", "expired"})


@dataclass(slots=True)
class Candidate:
    """One index candidate of a recorded lookup."""

    entry_id: str
    similarity: float
    age_s: float
    """Seconds since the entry was stored, at the time of the lookup."""
    expired: bool
    blocked: bool
    """Quarantined for this query by an audit."""
    verdict: str = UNKNOWN
    """``pass``, ``exact``, ``guard:<name>``, ``verifier`` or ``unknown`` (never checked)."""
    flipped: dict[str, bool | None] | None = None
    """Per guard: would the candidate pass with that one guard switched (short texts only); where the
    verifier decides, only if its probability is known (``None``: not known, the replay says "?")."""
    probability: float | None = None
    """The verifier's P(right) for this pair, where the lookup ran it."""
    probability_margin: float = 0.0
    """Log-odds within which the served score lies from ``probability`` (the first order's alone,
    ``verifier.one_order_margin``); 0 when it is that score."""
    span_threshold: float | None = None
    """Set when the diff rule judged changed spans by embedding them against the category's
    threshold (long prompts): the verdict then holds only at that threshold."""


@dataclass(slots=True)
class LookupRecord:
    """One lookup as decided, with what a replay needs."""

    seq: int
    at: float
    category: str
    status: str
    stage: str
    reason: str
    threshold: float | None
    ttl_seconds: float | None
    query_digest: str | None
    served_entry: str | None
    candidates: list[Candidate] | None
    """None when no semantic search ran (bypass, no-cache) or it was not repeated."""
    guards: dict[str, bool] | None = None
    """The category's guard switches when the lookup was made."""
    audit: str | None = None
    """``agree`` or ``false_hit`` once an audit of this hit finished."""
    query: str | None = field(default=None, repr=False)


class LookupLog:
    """Per category, the last ``capacity`` lookups (a ring: the oldest falls out)."""

    def __init__(self, capacity: int = 10_000, *, keep_text: bool = False, guard_floor: float = 0.5,
                 max_pending: int = 1024):
        self.capacity = capacity
        self.keep_text = keep_text
        self.guard_floor = guard_floor
        self.max_pending = max_pending
        self._rings: dict[str, deque[LookupRecord]] = {}
        self._seq = 0
        self._queue: deque[tuple[SemanticCache, Any, str, list[tuple[Candidate, str]]]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self.unchecked = 0  # candidates left unknown because too many checks were pending

    def __len__(self) -> int:
        return sum(len(r) for r in self._rings.values())

    def records(self, category: str) -> list[LookupRecord]:
        """The category's records, oldest first (a copy: the ring keeps moving)."""
        return list(self._rings.get(category, ()))

    def categories(self) -> list[str]:
        return sorted(self._rings)

    def record(self, cache: SemanticCache, result: LookupResult) -> LookupRecord | None:
        """Append ``result`` (just decided by ``cache``); never raises into the lookup."""
        if self.capacity <= 0:
            return None
        try:
            return self._record(cache, result)
        except Exception:  # the log is an aid to tuning: it must never fail a lookup
            log.exception("lookup log: could not record a lookup")
            return None

    def _record(self, cache: SemanticCache, result: LookupResult) -> LookupRecord:
        ctx, now = result.context, cache.clock.now()
        policy = ctx.policy if ctx is not None else cache.policies.get(result.category)
        self._seq += 1
        rec = LookupRecord(
            seq=self._seq, at=now, category=result.category, status=result.status, stage=result.stage,
            reason=result.reason, threshold=result.threshold,
            ttl_seconds=policy.ttl_seconds if policy is not None else None,
            query_digest=ctx.text_digest if ctx is not None else None,
            served_entry=result.entry.id if result.entry is not None else None, candidates=None,
            query=ctx.norm.text if ctx is not None and self.keep_text else None,
            guards=policy.guards.model_dump() if policy is not None else None,
        )
        if result.stage == "exact" and result.entry is not None:
            meta = cache.catalog.get(result.entry.id)
            age = now - (meta.created_at if meta is not None else result.entry.created_at)
            rec.candidates = [Candidate(result.entry.id, 1.0, age, False, False, EXACT)]
        elif ctx is not None and ctx.candidates is not None and result.stage in SEMANTIC_STAGES:
            rec.candidates = self._candidates(cache, result, now)
        ring = self._rings.get(rec.category)
        if ring is None:
            ring = self._rings[rec.category] = deque(maxlen=self.capacity)
        ring.append(rec)
        return rec

    def _candidates(self, cache: SemanticCache, result: LookupResult, now: float) -> list[Candidate]:
        ctx = result.context
        assert ctx is not None
        threshold = ctx.policy.threshold
        served = result.entry.id if result.entry is not None else None
        found, seen_served, unchecked = [], False, []
        verdicts = ctx.verdicts or {}
        for cand_id, sim in ctx.candidates or ():
            meta = cache.catalog.get(cand_id)
            if meta is None:
                continue
            cand = Candidate(cand_id, float(sim), now - meta.created_at, meta.expired(now),
                             ctx.text_digest in meta.blocked)
            if (verified := verdicts.get(cand_id)) is not None:
                cand.probability, cand.probability_margin = verified.probability, verified.margin
            if cand_id == served:
                cand.verdict, seen_served = PASS, True
                unchecked.append((cand, meta.query))  # for its verdicts with a guard switched
            elif not seen_served and sim >= threshold and not cand.expired and not cand.blocked:
                cand.verdict = VERIFIER  # refused by the lookup; the check below tells a guard from the verifier
                unchecked.append((cand, meta.query))
            elif sim >= self.guard_floor:
                unchecked.append((cand, meta.query))
            found.append(cand)
        if unchecked:
            if len(self._queue) >= self.max_pending:
                self.unchecked += len(unchecked)
            else:
                self._queue.append((cache, ctx.policy, ctx.norm.text, unchecked))
                if self._worker is None or self._worker.done():
                    self._worker = asyncio.create_task(self._work(), name="semcache-lookup-log")
        return found

    async def _work(self) -> None:
        while self._queue:
            await self._check(*self._queue.popleft())
            await asyncio.sleep(0)  # short texts are checked inline: let requests run between lookups

    async def _check(self, cache: SemanticCache, policy: Any, text: str,
                     unchecked: list[tuple[Candidate, str]]) -> None:
        # Checked threshold-free (changed spans never fail on similarity), so the verdict holds at
        # any threshold; where spans were judged by similarity, at the category's threshold only.
        free, strict = policy.model_copy(update={"threshold": -1.0}), policy.model_copy(update={"threshold": 2.0})
        embed, overrule = cache.embedder.embed, policy.verifier.active_overrule
        for cand, cached in unchecked:
            try:
                verdict = await diffrule.check(free, text, cached, cand.similarity, embed, overrule)
                if verdict.passed and _long(policy, text, cached):
                    spans = await diffrule.check(strict, text, cached, cand.similarity, embed, overrule)
                    if not spans.passed:  # only a changed span's similarity can fail at threshold 2
                        cand.span_threshold = policy.threshold
                        verdict = await diffrule.check(policy, text, cached, cand.similarity, embed, overrule)
            except Exception as exc:  # an embedder failure leaves the candidate unknown
                log.debug("lookup log: guard check failed: %s", exc)
                return
            if not verdict.passed or (verdict.overruled and cand.verdict != PASS):
                # An overruled guard refused it unless the verifier served it (then it is the hit: PASS).
                cand.verdict = f"guard:{verdict.guard}"
            elif cand.verdict != VERIFIER:
                cand.verdict = PASS
            if not _long(policy, text, cached):  # long texts would embed their spans once per switch
                cand.flipped = await _flipped(policy, text, cached, cand.similarity, embed, cand.probability,
                                              cand.probability_margin)

    def cancel(self) -> None:
        """Drop the pending checks (the cache is closing); their candidates stay unknown."""
        self._queue.clear()
        if self._worker is not None:
            self._worker.cancel()

    async def settle(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` s) for the background guard checks; True when none is left."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._worker is not None and not self._worker.done():
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait({self._worker}, timeout=left)  # never cancels it
        return True

    def audited(self, category: str, entry_id: str, query_digest: str, *, agree: bool) -> bool:
        """Join an audit outcome to the newest unaudited hit of ``entry_id`` for ``query_digest``."""
        for rec in reversed(self._rings.get(category, ())):
            if rec.served_entry == entry_id and rec.query_digest == query_digest and rec.audit is None:
                rec.audit = "agree" if agree else "false_hit"
                return True
        return False

    def __iter__(self) -> Iterator[LookupRecord]:
        for ring in self._rings.values():
            yield from ring

    def snapshot(self) -> dict[str, Any]:
        return {"capacity_per_category": self.capacity, "keep_text": self.keep_text,
                "records": {name: len(ring) for name, ring in sorted(self._rings.items())},
                "pending_checks": len(self._queue), "unchecked_candidates": self.unchecked}


def _long(policy: Any, query: str, cached: str) -> bool:
    """Could the diff rule embed changed spans of these texts (both share-a-long-body sized)?"""
    return bool(policy.guards.diff) and min(len(query.split()), len(cached.split())) >= diffrule.SHARED_BODY


GUARDS = ("numbers", "negation", "actions", "entities", "identifiers", "diff")


async def _flipped(policy: Any, query: str, cached: str, similarity: float, embed,
                   probability: float | None, margin: float = 0.0) -> dict[str, bool | None]:
    """Per guard, whether the pair would be served with that guard switched: the guards (an
    overrulable one left to the verifier) and, where the verifier decides, its probability at the
    bar that then applies (unknown where the lookup did not run it, or read one order only and
    that bar is within ``margin`` of it)."""
    out: dict[str, bool | None] = {}
    for name in GUARDS:
        guards = policy.guards.model_copy(update={name: not getattr(policy.guards, name)})
        switched = policy.model_copy(update={"guards": guards})
        verdict = await diffrule.check(switched, query, cached, similarity, embed, switched.verifier.active_overrule)
        passed: bool | None = verdict.passed
        if passed and policy.verifier.enabled:
            bar = policy.verifier.min_probability
            if verdict.overruled:
                bar = max(bar, policy.verifier.overrule[verdict.guard])
            known = probability is not None and decides(probability, margin, bar)
            passed = probability >= bar if known else None
        out[name] = passed
    return out
