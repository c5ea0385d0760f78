"""Keeping replicas that share a store in step: :class:`ReplicaSync`.

Several proxy replicas may share one Redis store, each with its own in-memory
index. Each follows the store's change feed: entries other replicas put or
deleted, and policy sets they published after an admin reload. Policies must
agree across replicas: partition keys include a category's policy version, so
replicas on different policies would stop seeing each other's entries and
apply different thresholds to the same traffic. Stores without a change feed
(SQLite, memory) have one process: everything here is then a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from semcache.errors import PolicyError, SemcacheError
from semcache.config.policy import load_policies_text

if TYPE_CHECKING:
    from semcache.cache import SemanticCache

log = logging.getLogger("semcache.cache")


class ReplicaSync:
    """The cache's side of a shared store: follow others' changes, share policy reloads."""

    def __init__(self, cache: SemanticCache):
        self.cache = cache

    async def share_policies(self) -> bool | None:
        """Publish the policies in force to every process sharing the store.

        True once published, None when the store is not shared (nothing to
        tell), False when publishing failed (logged; this process keeps them).
        """
        publish = getattr(self.cache.doc_store, "publish_policies", None)
        if publish is None:
            return None
        try:
            await publish(self.cache.policies.source_text)
        except SemcacheError as exc:
            log.warning("policies in force here but not shared with other replicas: %s", exc)
            return False
        return True

    async def adopt_shared_policies(self) -> bool:
        """Switch to the policies another process published, if any differ; True if switched.

        Invalid shared YAML (e.g. from a newer version) is logged and ignored.
        """
        read = getattr(self.cache.doc_store, "shared_policies", None)
        if read is None:
            return False
        text = await read()
        if text is None or text == self.cache.policies.source_text:
            return False
        try:
            policies = await asyncio.to_thread(load_policies_text, text, source="shared")  # CPU: off the loop
        except PolicyError as exc:
            log.warning("ignoring policies shared by another replica: %s", exc)
            return False
        dropped = await self.cache.reload_policies(policies)
        log.info("adopted policies shared by another replica: %d categories, %d stale entries dropped",
                 len(policies), dropped)
        return True

    async def follow(self, after: str) -> None:
        """Apply other processes' changes made after event id ``after``, until cancelled.

        Works on the cache's index directly (``_remember``/``forget``): this
        class is the cache's own extension, split out to keep one concept per module.
        """
        async for event in self.cache.doc_store.changes(after):
            try:
                if event.op == "policies":
                    await self.adopt_shared_policies()
                    continue
                if event.op == "delete":
                    for id in event.ids:
                        self.cache.forget(id)
                    continue
                for id in event.ids:
                    entry = await self.cache.doc_store.get(id)
                    if entry is not None and self.cache._current(entry.category, entry.policy_version):
                        self.cache._remember(entry)
            except SemcacheError as exc:
                log.warning("semcache sync failed: %s", exc)
