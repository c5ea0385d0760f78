"""Audits in the proxy: a few semantic hits are re-asked upstream, off the caller's path.

When a semantic hit (not an exact repeat) is served, :meth:`Auditor.consider`
may start an audit beside it: the same request, non-streamed, goes to the
engine the router would pick, and :class:`~semcache.observe.audit.AnswerJudge`
compares the fresh answer with the cached one. The caller never waits for it
(the hit is already on its way), and it never costs a busy engine: an audit
starts only while the engine is idle by the same rule speculative forwarding
uses (:func:`proxy.upstream.load.engine_idle`: a vLLM engine with an empty
queue and few of this proxy's requests in flight; engines that do not expose
vLLM metrics, such as llama.cpp or a hosted API that bills every call, only
with ``audit_any_engine``), and at most ``audit_max_in_flight`` run at once.
Audits that were due but could not run are counted by reason, not queued.

A false hit found by an audit is quarantined for that query text (the entry
keeps answering its own question and others) and the fresh answer is stored
for the new query, so the next identical request is an exact hit with the
right answer. Outcomes feed :class:`~semcache.observe.audit.FalseHitEstimator`:
per-category false-hit rate with its Clopper-Pearson interval, in
``/admin/stats`` (``proxy.audits``) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.upstream.pool import PATHS, Upstream, UpstreamPool
from semcache.observe.audit import AnswerJudge, FalseHitEstimator, answer_text, quarantine_pair
from semcache.errors import RequestError, SemcacheError

if TYPE_CHECKING:
    from proxy.admin.metrics import ProxyMetrics
    from proxy.api.controls import CacheControls
    from semcache import CacheRequest, LookupResult, SemanticCache

log = logging.getLogger("semcache.observe.audit")


class Auditor:
    """Decides which hits are audited, runs the audits in the background, keeps the estimate."""

    def __init__(self, cache: SemanticCache, pool: UpstreamPool, metrics: ProxyMetrics, *,
                 idle: Callable[[Upstream], bool], max_in_flight: int = 1, rng: random.Random | None = None):
        self.cache = cache
        self.pool = pool
        self.metrics = metrics
        self.idle = idle
        self.max_in_flight = max_in_flight
        # Seeded: which hits are audited is reproducible run to run (the choice is still made
        # before the outcome is known, so the audited hits stay an unbiased sample).
        self.rng = rng or random.Random(0x5E5CAC4E)
        self.estimator = FalseHitEstimator()
        self.judge = AnswerJudge(cache.embedder)
        self._running: set[asyncio.Task[None]] = set()

    def consider(self, endpoint: str, request: CacheRequest, lookup: LookupResult,
                 controls: CacheControls) -> bool:
        """Maybe start an audit of this hit; True when one started. Never blocks or raises."""
        ctx, entry = lookup.context, lookup.entry
        if ctx is None or entry is None or lookup.stage == "exact" or lookup.status != "hit":
            return False
        settings = ctx.policy.audit
        if settings.fraction <= 0.0 or self.rng.random() >= settings.fraction:
            return False
        category = lookup.category
        if len(self._running) >= self.max_in_flight:
            return self._skip(category, "audits in flight")
        try:
            upstream = self.pool.router.choose(request.body)
        except RequestError:
            return self._skip(category, "no upstream")
        if not self.idle(upstream):
            return self._skip(category, "engine busy")
        task = asyncio.create_task(self._audit(endpoint, request, lookup, controls, upstream),
                                   name="semcache-audit")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return True

    def _skip(self, category: str, why: str) -> bool:
        self.estimator.skip(category, why)
        self.metrics.audits.labels(category, "skipped").inc()
        return False

    async def _audit(self, endpoint: str, request: CacheRequest, lookup: LookupResult,
                     controls: CacheControls, upstream: Upstream) -> None:
        assert lookup.entry is not None and lookup.context is not None
        category, settings = lookup.category, lookup.context.policy.audit
        body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
        try:
            fresh = await self.pool.post_json(PATHS[endpoint], body, controls.authorization, upstream)
        except Exception as exc:  # an audit must never surface: count it and go
            log.debug("audit call failed: %s", exc)
            self._skip(category, "upstream error")
            return
        try:
            judgement = await self.judge.judge(answer_text(lookup.entry.response), answer_text(fresh),
                                               min_similarity=settings.answer_min_similarity)
        except Exception as exc:  # embedder failure: no verdict rather than a wrong one
            log.warning("audit judge failed: %s", exc)
            self._skip(category, "judge failed")
            return
        if not judgement.agree and settings.quarantine:
            # No query or answer text at INFO: ids and the category only.
            log.info("audit: false hit in category %s (entry %s); quarantined for that query", category,
                     lookup.entry.id)
            log.debug("audit false hit reason: %s", judgement.reason)
            try:
                await quarantine_pair(self.cache, lookup.entry.id, lookup.context.text_digest)
                if not controls.no_store:  # the caller's Cache-Control: no-store covers the audit's answer too
                    await self.cache.store(request, lookup, response=fresh)
            except SemcacheError as exc:
                log.warning("audit could not quarantine entry %s: %s", lookup.entry.id, exc)
        # Counted once its consequences are in place, so a reader of the counts sees them.
        self.estimator.record(category, judgement, lookup.similarity)
        self.cache.lookup_log.audited(category, lookup.entry.id, lookup.context.text_digest, agree=judgement.agree)
        self.metrics.audits.labels(category, "agree" if judgement.agree else "false_hit").inc()
        self._export(category)

    def _export(self, category: str) -> None:
        est = self.estimate(category)
        for bound in ("false_hit_rate", "lower", "upper"):
            if est[bound] is not None:
                self.metrics.false_hit_rate.labels(category, bound).set(est[bound])

    def estimate(self, category: str) -> dict:
        """One category's live estimate (audits and feedback), e.g. for the load-adaptive controller."""
        return self.estimator.estimate(category, self.cache.feedback.snapshot().get(category))

    def snapshot(self) -> dict[str, dict]:
        """Per category: audits, false hits, feedback, the estimate and its interval."""
        return self.estimator.snapshot(self.cache.feedback.snapshot())

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
