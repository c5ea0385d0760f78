"""IC-Cache in the proxy: a miss for the large model may go to the small one, with examples.

For a chat request that asks for the configured *large* model and missed
the cache, :class:`ICCacheService` asks the library router
(:class:`~semcache.iccache.ICCacheRouter`) where it should go:

* ``small``: the caller's messages with past large-model answers inserted as
  earlier turns (after its system prompt), sent to the small model; the
  answer is *not* stored in the cache (its quality is unproven) and carries
  ``X-Semcache-Status: ic``;
* ``large``: forwarded unchanged and stored as usual (it becomes an example).

The example bank follows the cache's index (:class:`~semcache.protocols.EntryListener`):
entries the large model produced, in the same tenant/namespace scope, are the
examples. Engine load comes from scraping each model's ``/metrics`` (vLLM
names). Quality is learned from shadow checks (a fraction of small answers is
also asked of the large model when it has room, scored by embedding
agreement; the large answer is then stored like any miss) and from explicit
feedback on a response id (``POST /v1/semcache/feedback`` with ``response_id``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from proxy.upstream.engine_load import EngineLoadScraper
from semcache.clock import Clock
from semcache.entries.entry import CacheEntry
from semcache.iccache import Decision, ExampleBank, ICCacheConfig, ICCacheRouter, ICStats, LoadTracker, scope_of
from semcache.load import EngineLoad
from semcache.iccache.answer_check import NEVER, AnswerCheck
from semcache.iccache.bank import response_text
from semcache.iccache.persist import flush_utilities
from semcache.iccache.quality import agreement, follows_examples
from semcache.protocols import Embedder, Store
from semcache.results import LookupResult

log = logging.getLogger("semcache.iccache")

# Request fields the small model cannot be trusted with: tool use and several choices.
_NOT_FOR_SMALL = ("tools", "functions", "tool_choice", "function_call")


@dataclass(slots=True)
class _Routed:
    """What feedback on one IC-routed response needs."""

    decision: Decision
    tenant: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer check on one small answer: serve it? and its follows-examples score."""

    serve: bool
    follows: float | None = None


class ICCacheService:
    """Routing, example bank, load scraping and outcome learning for one proxy app."""

    def __init__(self, config: ICCacheConfig, embedder: Embedder, clock: Clock, *,
                 engines: dict[str, str], remember: int = 10_000, scrape_interval_s: float = 1.0,
                 in_flight: Callable[[str], int] | None = None,
                 upstream_load: Callable[[str], EngineLoad | None] | None = None):
        self.config = config
        self.embedder = embedder
        self.clock = clock
        self.large, self.small = config.model("large"), config.model("small")
        self.bank = ExampleBank(embedder.dim)
        self.load = LoadTracker()
        self.router = ICCacheRouter(config, self.bank, self.load)
        self.stats = ICStats()
        self.answer_check = AnswerCheck()
        self.scraper = EngineLoadScraper(engines, self.load, interval_s=scrape_interval_s) if engines else None
        self._routed: OrderedDict[str, _Routed] = OrderedDict()
        self._remember_max = remember
        self._background: set[asyncio.Task[None]] = set()
        self._in_flight = in_flight
        self._upstream_load = upstream_load  # the proxy's scrapes of every upstream, per model
        self._store: Store | None = None
        self._persister: asyncio.Task[None] | None = None

    # ----------------------------------------------------- the bank follows the cache
    def entry_added(self, entry: CacheEntry) -> None:
        self.bank.add_entry(entry, large_models={self.large.name})

    def entry_removed(self, id: str) -> None:
        self.bank.remove(id)

    # ------------------------------------------------------------------ lifecycle
    def attach_store(self, store: Store) -> None:
        """Where learned utility is persisted: the cache's store (examples are its entries)."""
        self._store = store

    def start(self) -> None:
        if self.scraper is not None:
            self.scraper.start()
        if self._store is not None and self.config.persist_interval_s > 0:
            self._persister = asyncio.create_task(self._persist_loop(), name="semcache-ic-persist")

    async def persist_utilities(self) -> dict[str, int]:
        """Merge utility learned here into the store now (also run every ``persist_interval_s``)."""
        if self._store is None:
            return {"written": 0, "missing": 0}
        return await flush_utilities(self._store, self.bank)

    async def _persist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.persist_interval_s)
            try:
                await self.persist_utilities()
            except Exception as exc:  # a failing store must not stop serving; the deltas stay unsynced
                log.warning("persisting example utilities failed (will retry): %s", exc)

    async def aclose(self) -> None:
        if self._persister is not None:
            self._persister.cancel()
            await asyncio.gather(self._persister, return_exceptions=True)
            self._persister = None
            try:  # what was learned since the last flush
                await asyncio.wait_for(self.persist_utilities(), timeout=5.0)
            except Exception as exc:
                log.warning("persisting example utilities at shutdown failed: %s", exc)
        if self.scraper is not None:
            await self.scraper.aclose()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -------------------------------------------------------------------- routing
    def applies(self, endpoint: str, body: dict[str, Any], lookup: LookupResult | None) -> bool:
        """Is this request one IC-Cache may route? (A chat miss for the large model, no tools.)"""
        if endpoint != "chat" or body.get("model") != self.large.name:
            return False
        if lookup is None or lookup.status != "miss" or lookup.context is None or lookup.context.vector is None:
            return False
        return not any(body.get(k) for k in _NOT_FOR_SMALL) and body.get("n", 1) in (1, None)

    def decide(self, body: dict[str, Any], lookup: LookupResult) -> Decision:
        ctx = lookup.context
        assert ctx is not None and ctx.vector is not None
        self._fill_unscraped_load()
        return self.router.decide(body["messages"], scope=scope_of(ctx.tenant, ctx.namespace),
                                  category=lookup.category, vector=ctx.vector, now=self.clock.now())

    def _fill_unscraped_load(self) -> None:
        """Each model's load from, in order: its own ``metrics_url`` scrape; the proxy's
        scrapes of the upstreams serving it (all replicas summed); else, for engines
        without vLLM metrics (llama.cpp, hosted APIs), the proxy's own count of requests
        in flight to them, as if they ran one at a time."""
        for spec in (self.large, self.small):
            if self.scraper is not None and spec.name in self.scraper.engines and self.scraper.healthy(spec.name):
                continue
            scraped = self._upstream_load(spec.name) if self._upstream_load is not None else None
            if scraped is not None:
                self.load.set(spec.name, scraped)
                continue
            if self._in_flight is None:
                continue
            busy = self._in_flight(spec.name)
            self.load.set(spec.name, replace(self.load.get(spec.name), running=min(1, busy), waiting=max(0, busy - 1)))

    def answered(self, decision: Decision, route: str) -> None:
        """Count where a routed request was answered (``large`` when the small model failed)."""
        if route == "small":
            saved = max(0.0, decision.costs.get("large", 0.0) - decision.costs.get("small", 0.0))
            self.stats.routed(decision.category, "small", len(decision.selection.examples), saved)
        else:
            self.stats.routed(decision.category, "large")

    async def check_answer(self, decision: Decision, answer: dict[str, Any], request_id: str) -> Verdict:
        """Serve this small answer? Not when it ignores its examples (the answer check).

        The threshold is ``min_answer_agreement`` or its calibrated value
        (:class:`AnswerCheck`). A rejection teaches the router that the small
        model failed here (quality 0). Embedding failures serve: the check must
        never fail a request. With no threshold in force the answer is scored
        only if it will be shadow-checked (a calibration sample).
        """
        selection = self.config.selection_for(decision.category)
        examples = decision.selection.examples
        text = response_text(answer)
        if not self.answer_check.wants_score(selection) or not examples or not text:
            return Verdict(True)
        threshold = self.answer_check.threshold(decision.category, selection)
        if threshold is None and not self.router.should_shadow(decision, request_id):
            return Verdict(True)  # nothing to decide and no sample to label: skip the embeddings
        try:
            vectors = np.asarray(await self.embedder.embed([text, *(e.answer for e in examples)]), dtype=np.float32)
        except Exception as exc:
            log.warning("IC-Cache answer check skipped: %s: %s", type(exc).__name__, exc)
            return Verdict(True)
        follows = follows_examples(vectors[0], vectors[1:])
        if threshold is None or follows >= threshold:
            return Verdict(True, follows)
        self.router.record(decision, 0.0)
        self.stats.scored(decision.category, 0.0)
        return Verdict(False, follows)

    def small_body(self, body: dict[str, Any], decision: Decision) -> dict[str, Any]:
        return {**body, "model": self.small.name, "messages": decision.messages}

    def cache_hit(self, category: str) -> None:
        self.stats.routed(category, "cache")

    # ------------------------------------------------------------------- learning
    def remember(self, response_id: str | None, decision: Decision, tenant: str) -> None:
        """Keep a routed decision (bounded, oldest dropped) so feedback on it can be learnt."""
        if not response_id:
            return
        self._routed[response_id] = _Routed(decision, tenant)
        self._routed.move_to_end(response_id)
        while len(self._routed) > self._remember_max:
            self._routed.popitem(last=False)

    def feedback(self, response_id: str, *, correct: bool, tenant: str) -> Decision | None:
        """Explicit feedback on an IC-routed answer; None if unknown (or another tenant's)."""
        routed = self._routed.get(response_id)
        if routed is None or routed.tenant != tenant:
            return None
        self.router.record_feedback(routed.decision, correct)
        self.stats.scored(routed.decision.category, 1.0 if correct else 0.0)
        del self._routed[response_id]
        return routed.decision

    def maybe_shadow(self, decision: Decision, request_id: str, small_answer: dict[str, Any],
                     ask_large: Callable[[], Awaitable[dict[str, Any]]],
                     store_large: Callable[[dict[str, Any]], Awaitable[None]], *,
                     verdict: Verdict | None = None) -> bool:
        """Start a shadow check of a small answer if the router wants one; returns whether it did.

        Requests are picked before their answer is judged, and a rejected answer
        (``verdict.serve`` False) is checked too, only to label the answer check's
        calibration sample (the escalation already answered and stored).
        """
        if not self.router.should_shadow(decision, request_id):
            return False
        task = asyncio.ensure_future(self._shadow(decision, small_answer, ask_large, store_large,
                                                  verdict or Verdict(True)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    async def _shadow(self, decision: Decision, small_answer: dict[str, Any],
                      ask_large: Callable[[], Awaitable[dict[str, Any]]],
                      store_large: Callable[[dict[str, Any]], Awaitable[None]], verdict: Verdict) -> None:
        try:
            large_answer = await ask_large()
            texts = [response_text(small_answer), response_text(large_answer)]
            if not all(texts):
                return
            vectors = np.asarray(await self.embedder.embed(texts), dtype=np.float32)
            quality = agreement(vectors[0], vectors[1])
            if verdict.follows is not None:
                self.answer_check.record(decision.category, verdict.follows, quality >= self.bank.accept_level)
            if not verdict.serve:
                return  # already recorded as a failure when it was rejected
            self.router.record(decision, quality)
            self.stats.scored(decision.category, quality)
            await store_large(large_answer)
        except Exception as exc:  # a shadow check is best effort: never surfaces to a caller
            log.warning("IC-Cache shadow check failed: %s: %s", type(exc).__name__, exc)

    def snapshot(self) -> dict[str, Any]:
        """Examples, per-category routing counters and each model's load (admin stats, report)."""
        self._fill_unscraped_load()
        loads = {}
        for name in (self.large.name, self.small.name):
            load = self.load.get(name)
            loads[name] = {"waiting": load.waiting, "running": load.running, "kv_usage": load.kv_usage,
                           "ttft_s": load.ttft_s, "e2e_s": load.e2e_s}
        checks = {}
        for category in self.answer_check.categories():
            state = self.answer_check.state(category, self.config.selection_for(category))
            point = state.point
            checks[category] = {
                "samples": state.samples,
                "threshold": None if state.threshold in (None, NEVER) else state.threshold,
                "serves_small": state.threshold != NEVER,
                "served_bad_rate": point.estimated_rate if point else None,
                "served_bad_upper_bound": point.upper_bound if point else None}
        return {"examples": len(self.bank), "categories": self.stats.snapshot(), "load": loads,
                "answer_check": checks}
