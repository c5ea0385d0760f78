"""The semantic cache: decide hit or miss under a category policy; store answers.

Hybrid architecture: the vectors live in an in-memory
:class:`~semcache.index.PartitionedIndex` next to a small per-entry metadata
record (tenant, category, TTL, query text for the guards), so a whole lookup
decision is made in memory; documents (the responses) live in the ``Store``
and are fetched only for a hit. On :meth:`SemanticCache.start` the index is
rebuilt from the store; with a shared store (Redis) the cache also follows the
store's change events so entries added by other processes become visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import numpy as np

from semcache.decide import admission
from semcache.observe import feedback
from semcache.adaptive import AdaptiveControl
from semcache.adaptive.controller import stale_grace
from semcache.request.categories import Classifier
from semcache.clock import Clock, SystemClock
from semcache.entries.entry import CacheEntry
from semcache.errors import CacheUnavailableError, SemcacheError
from semcache.entries.catalog import EntryCatalog, EntryMeta
from semcache.index import HNSWParams
from semcache.observe.lookup_log import LookupLog
from semcache.request.keys import CacheRequest
from semcache.decide.lookup import SHARED_TENANT, decide
from semcache.config.policy import PolicySet
from semcache.entries.replica_sync import ReplicaSync
from semcache.protocols import Embedder, Store
from semcache.results import KeyContext, LookupResult, StoreResult
from semcache.observe.stats import CacheStats
from semcache.verifier import VerifierGate

log = logging.getLogger("semcache.cache")
_YIELD_EVERY = 256  # removals between yields to the loop: ~5 ms of forgetting at a time


class SemanticCache:
    """Lookup, store and invalidation over an index, a store and an embedder."""

    def __init__(
        self,
        *,
        policies: PolicySet,
        store: Store,
        embedder: Embedder,
        clock: Clock | None = None,
        hnsw: HNSWParams | None = None,
        candidates: int = 4,
        promote_at: int = 2048,
        inline_search_max: int = 100_000,
        purge_interval_s: float = 30.0,
        verifier: VerifierGate | None = None,
    ):
        self.doc_store = store
        self.embedder = embedder
        self.clock = clock or SystemClock()
        self.stats = CacheStats()
        self.feedback = feedback.FeedbackBook()
        self.verifier = verifier or VerifierGate()
        self.candidates = candidates
        self.purge_interval_s = purge_interval_s
        self.inline_search_max = inline_search_max
        self.catalog = EntryCatalog(embedder.dim, hnsw=hnsw, promote_at=promote_at)
        self.index = self.catalog.index
        self._policies = policies
        self._classifier = Classifier(policies)
        self._tasks: list[asyncio.Task] = []
        self.listeners = self.catalog.listeners  # EntryListeners; add before start() to see the rebuild
        self.replicas = ReplicaSync(self)
        self.adaptive = AdaptiveControl(lambda: self._policies, self.clock)  # load-adaptive thresholds/TTLs
        self._keep_stale_entries()
        self.lookup_log = LookupLog()  # recent lookups for what-if replays (semcache.observe.whatif)

    # ----------------------------------------------------------- lifecycle
    @property
    def policies(self) -> PolicySet:
        return self._policies

    @property
    def classifier(self) -> Classifier:
        return self._classifier

    async def start(self) -> None:
        """Build prototypes, rebuild the index from the store, start upkeep tasks."""
        follow_from = None
        if hasattr(self.doc_store, "changes"):
            follow_from = await self.doc_store.last_event_id()
        # A replica (re)starting joins the policies an admin reload gave the others.
        if not await self.replicas.adopt_shared_policies():
            self._classifier = await self._build_classifier(self._policies)
        await self.verifier.preload(self._policies)
        now = self.clock.now()
        stale = []
        async for entry in self.doc_store.scan():
            if entry.expired(now) or not self._current(entry.category, entry.policy_version):
                stale.append(entry.id)
            else:
                self._remember(entry)
        if stale:
            await self.doc_store.delete(stale)
        log.info("semcache index rebuilt: %d entries (%d stale dropped)", len(self.catalog), len(stale))
        if follow_from is not None:
            self._tasks.append(asyncio.create_task(self.replicas.follow(follow_from), name="semcache-follow"))
        if self.purge_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._purge_loop(), name="semcache-purge"))
        self._tasks += self.adaptive.start()

    async def close(self) -> None:
        self.lookup_log.cancel()
        for task in self._tasks:
            task.cancel()
        # Closing the store also ends a change feed stuck in a blocking read.
        await self.doc_store.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        self._tasks.clear()

    async def _build_classifier(self, policies: PolicySet) -> Classifier:
        prototypes = {}
        for policy in policies:
            if policy.match.examples:
                prototypes[policy.name] = await self.embedder.embed(policy.match.examples)
        return Classifier(policies, prototypes)

    def _current(self, category: str, version: str) -> bool:
        policy = self._policies.get(category)
        return policy is not None and policy.version == version

    async def reload_policies(self, policies: PolicySet) -> int:
        """Swap in a validated policy set atomically; drop entries it invalidates.

        Entries of removed categories or of categories whose ``version``
        changed can never be hit again, so they are deleted. Returns how many.
        """
        classifier = await self._build_classifier(policies)
        await self.verifier.preload(policies)
        self._policies, self._classifier = policies, classifier
        self._keep_stale_entries()
        stale = [m.id for m in self.catalog if not self._current(m.category, m.policy_version)]
        return await self._remove(stale, reason="invalidations")

    def _keep_stale_entries(self) -> None:
        # A store that expires entries itself (Redis) keeps them for serve-stale under overload.
        if (set_grace := getattr(self.doc_store, "set_expiry_grace", None)) is not None:
            set_grace(stale_grace(self._policies))

    # -------------------------------------------------------------- lookup
    async def lookup(self, request: CacheRequest, *, search: bool = True) -> LookupResult:
        """Decide hit, miss or bypass for ``request``.

        ``search=False`` (``Cache-Control: no-cache``) skips the search but
        prepares the key so the answer can still be stored. Raises
        :class:`RequestError` for malformed bodies and
        :class:`CacheUnavailableError` when a component fails.
        """
        started = time.perf_counter()
        try:
            result = await decide(self, request, search)
        except SemcacheError:
            raise
        except Exception as exc:  # a bug or library failure must not fail the request
            log.exception("semcache lookup failed")
            raise CacheUnavailableError(f"lookup failed: {exc}") from exc
        self.adaptive.mark_stale(result, self.clock.now())
        self.stats.record(result, time.perf_counter() - started, result.nearest)
        self.lookup_log.record(self, result)
        return result

    def seen_before(self, digest: str) -> bool:
        """Was this exact text (see :func:`semcache.request.keys.request_digest`) cached before, by anyone?

        A cheap guess, before any embedding, that the lookup will be an exact-repeat
        hit; the proxy uses it to decide whether racing the upstream is worth it.
        """
        return self.catalog.has_text(digest)

    async def embed_one(self, text: str) -> np.ndarray:
        return (await self.embedder.embed([text]))[0]

    async def report_feedback(self, entry_id: str, *, correct: bool, tenant: str | None = None,
                              admin: bool = False) -> feedback.FeedbackResult:
        """A user says entry ``entry_id``'s answer was right/wrong (see :mod:`semcache.observe.feedback`)."""
        return await feedback.report(self, entry_id, correct=correct, tenant=tenant, admin=admin)

    # --------------------------------------------------------------- store
    async def store(
        self,
        request: CacheRequest,
        lookup: LookupResult,
        *,
        response: dict[str, Any],
        chunks: list[dict[str, Any]] | None = None,
    ) -> StoreResult:
        """Store ``response`` for the request ``lookup`` was made for, unless refused."""
        ctx = lookup.context
        if lookup.status == "bypass" or ctx is None:
            return StoreResult(False, f"not stored: {lookup.reason}")
        policy = ctx.policy
        why = admission.refusal(response, policy)
        if why is None and ctx.tenant == SHARED_TENANT and not policy.may_write_shared(request.tenant):
            why = "shared_namespace_writers"  # a header may pick the category, never write for everyone
        if why is not None:
            self.stats[policy.name].store_refusals[why] += 1
            return StoreResult(False, f"not stored: {why}")
        try:
            return await self._store(request, ctx, response, chunks)
        except SemcacheError:
            raise
        except Exception as exc:
            log.exception("semcache store failed")
            raise CacheUnavailableError(f"store failed: {exc}") from exc

    async def _store(self, request, ctx: KeyContext, response, chunks) -> StoreResult:
        policy = ctx.policy
        if not self._current(policy.name, policy.version):
            return StoreResult(False, "not stored: policy changed since lookup")
        if ctx.vector is None:
            ctx.vector = await self.embed_one(ctx.norm.text)
        now = self.clock.now()
        prompt_tokens, completion_tokens = admission.usage_tokens(response)
        entry = CacheEntry(
            id=uuid.uuid4().hex, tenant=ctx.tenant, namespace=ctx.namespace, partition=ctx.partition,
            category=policy.name, policy_version=policy.version, model=ctx.norm.model,
            endpoint=request.endpoint, query=ctx.norm.text, vector=np.asarray(ctx.vector, dtype=np.float32),
            response=response, chunks=chunks, embedder=self.embedder.identity, created_at=now,
            expires_at=None if (ttl := self.adaptive.effective(policy).ttl_seconds) is None else now + ttl,
            last_hit_at=now, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        )
        await self.doc_store.put(entry)
        replaced = self.catalog.exact(ctx.partition, ctx.text_digest)
        if replaced is not None and replaced != entry.id:
            await self._remove([replaced], reason=None)
        self._remember(entry)
        self.stats.record_store(policy.name, ctx)
        await self._enforce_quota(policy, keep=entry.id)
        return StoreResult(True, "stored", entry.id)

    def _remember(self, entry: CacheEntry) -> None:
        policy = self._policies.get(entry.category)
        self.catalog.add(entry, capacity_hint=policy.quota.max_entries if policy else None)

    def forget(self, id: str) -> EntryMeta | None:
        """Drop ``id`` from the in-memory catalog and index (not from the store)."""
        return self.catalog.forget(id)

    async def _remove(self, ids: list[str], *, reason: str | None) -> int:
        if not ids:
            return 0
        await self.doc_store.delete(ids)
        removed = 0
        for n, id in enumerate(ids, 1):
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a mass removal must not hold the loop (issue #14)
            meta = self.forget(id)
            if meta is not None:
                removed += 1
                if reason:
                    setattr(self.stats[meta.category], reason, getattr(self.stats[meta.category], reason) + 1)
        return removed

    async def _enforce_quota(self, policy, keep: str) -> None:
        quota, name = policy.quota, policy.name
        while True:
            over_entries = self.catalog.count(name) - quota.max_entries if quota.max_entries else 0
            over_bytes = quota.max_bytes is not None and self.catalog.bytes(name) > quota.max_bytes
            if over_entries <= 0 and not over_bytes:
                return
            want = max(over_entries, 1)
            candidates = await self.doc_store.eviction_candidates(name, policy.eviction, want + 1)
            victims = [c for c in candidates if c != keep][:want]
            if not victims:
                return
            await self._remove(victims, reason="evictions")

    # ------------------------------------------------------- invalidation
    async def invalidate(
        self,
        *,
        entry_id: str | None = None,
        tenant: str | None = None,
        namespace: str | None = None,
        category: str | None = None,
        model: str | None = None,
        policy_version: str | None = None,
    ) -> int:
        """Delete every entry matching all given filters; returns how many.

        With no filter at all nothing is deleted (clearing everything must be
        asked for explicitly, e.g. per category).
        """
        filters = dict(id=entry_id, tenant=tenant, namespace=namespace, category=category,
                       model=model, policy_version=policy_version)
        filters = {k: v for k, v in filters.items() if v is not None}
        if not filters:
            return 0
        ids = [m.id for m in self.catalog if all(getattr(m, k) == v for k, v in filters.items())]
        return await self._remove(ids, reason="invalidations")

    async def purge_expired(self) -> int:
        now = self.clock.now()
        ids = [m.id for m in self.catalog if self.adaptive.purgeable(m.category, m.expires_at, now)]
        return await self._remove(ids, reason="expirations")

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval_s)
            try:
                await self.purge_expired()
            except SemcacheError as exc:
                log.warning("semcache purge failed: %s", exc)

    # ---------------------------------------------------------- inspection
    def stats_snapshot(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        snap["feedback"] = self.feedback.snapshot()
        snap["index"] = self.index.stats()
        snap["entries"] = self.catalog.counts()
        snap["bytes"] = self.catalog.sizes()
        snap["embedder"] = self.embedder.identity
        return snap

    async def list_entries(self, *, tenant: str | None = None, category: str | None = None,
                           limit: int = 100) -> list[dict[str, Any]]:
        """Metadata of up to ``limit`` entries (newest first); no vectors, no responses."""
        return self.catalog.describe(tenant=tenant, category=category, limit=limit)
