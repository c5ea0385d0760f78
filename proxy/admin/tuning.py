"""What-if tuning: predict a category change from the lookup log, apply it, keep versions, roll back.

Routes (behind the admin bearer token, like ``/admin``):

* ``POST /admin/whatif`` ``{"category", "threshold"?, "ttl_seconds"?, "guards"?}``: the
  category's recent lookups (:mod:`semcache.observe.lookup_log`) replayed at the
  current values and at the proposed ones (:func:`semcache.observe.whatif.predict`);
* ``POST /admin/tuning/apply`` (same body): the policy YAML in force with that
  field changed, validated by the same loader as ``PUT /admin/policies``,
  swapped in, written over the policy file and published to replicas the way
  :mod:`proxy.admin.api` does;
* ``GET /admin/tuning/history``: the versions applied (newest last, bounded);
* ``POST /admin/tuning/rollback`` ``{"version"}``: reload an earlier version;
* ``GET /admin/tuning/lookups?category=&limit=``: the newest records of the
  lookup log (query text only where ``lookup_log_keep_text`` kept it).

A change made outside this panel (``PUT /admin/policies``, a replica) shows up
in the history as its own version the next time the history is touched.
Applying rewrites the YAML through ``yaml.safe_dump``: comments in the policy
file are not kept. A TTL change applies to entries stored from then on
(stored entries keep their expiry), while the what-if replays every recorded
candidate at the new TTL: the prediction is what the category settles to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from dataclasses import asdict

from fastapi import APIRouter, Depends, Query, Request
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from proxy.admin.api import _persist
from semcache import SemanticCache, load_policies_text
from semcache.errors import RequestError
from semcache.observe.whatif import KEEP_TTL, predict

log = logging.getLogger("semcache.proxy")


class TuningChange(BaseModel):
    """A proposed change to one category; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid")

    category: StrictStr = Field(max_length=128)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    ttl_seconds: float | None = Field(None, gt=0, description="null (given explicitly): never expires")
    guards: dict[Literal["numbers", "negation", "actions", "entities", "identifiers", "diff"], StrictBool] | None = None
    """Guard switches to change (the others keep their values)."""

    def ttl(self) -> Any:
        return self.ttl_seconds if "ttl_seconds" in self.model_fields_set else KEEP_TTL

    def fields(self, current_guards: dict[str, bool]) -> dict[str, Any]:
        """The policy fields to write; guards as the whole block (a category's block replaces the defaults')."""
        out: dict[str, Any] = {}
        if self.guards:
            out["guards"] = {**current_guards, **self.guards}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if "ttl_seconds" in self.model_fields_set:
            ttl = self.ttl_seconds
            out["ttl_seconds"] = int(ttl) if ttl is not None and float(ttl).is_integer() else ttl
        return out


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(ge=1)


class PolicyHistory:
    """The last ``size`` policy versions in force (YAML text), numbered from 1."""

    def __init__(self, size: int = 20):
        self.versions: deque[dict[str, Any]] = deque(maxlen=size)
        self._next = 1

    def note(self, text: str, change: str) -> dict[str, Any]:
        """Record ``text`` as the version now in force (unless it already is the newest)."""
        if self.versions and self.versions[-1]["text"] == text:
            return self.versions[-1]
        version = {"version": self._next, "at": time.time(), "change": change, "text": text}
        self._next += 1
        self.versions.append(version)
        return version

    def get(self, number: int) -> dict[str, Any]:
        for version in self.versions:
            if version["version"] == number:
                return version
        raise RequestError(f"no policy version {number} in the history (it keeps the last "
                           f"{self.versions.maxlen})", param="version", status_code=404)

    def listing(self) -> list[dict[str, Any]]:
        return [dict(version) for version in self.versions]


def changed_yaml(source_text: str, category: str, fields: dict[str, Any]) -> str:
    """``source_text`` with ``fields`` set on ``category`` (the rest as it was)."""
    raw = yaml.safe_load(source_text)
    if not isinstance(raw, dict) or not isinstance(raw.get("categories"), dict):
        raise RequestError("the policy in force has no categories map to change")
    block = raw["categories"].get(category) or {}
    block.update(fields)
    raw["categories"][category] = block
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def build_tuning_router(auth: Callable[[Request], None], cache: Callable[[], SemanticCache],
                        policy_file: Path | None = None, *, history_size: int = 20) -> APIRouter:
    """The what-if, apply, history and rollback routes (``auth`` is the admin bearer check)."""
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(auth)])
    history = PolicyHistory(history_size)
    lock = asyncio.Lock()  # one apply/rollback at a time: each builds on the version in force

    def policy_of(name: str):
        policy = cache().policies.get(name)
        if policy is None:
            raise RequestError(f"no category {name!r} in the policy in force", param="category",
                               status_code=404)
        return policy

    def current_version(change: str = "changed outside the tuning panel") -> dict[str, Any]:
        if not history.versions:
            change = "in force when the tuning panel was first used"
        return history.note(cache().policies.source_text, change)

    async def reload(text: str, change: str) -> dict[str, Any]:
        # Parsed off the event loop (PolicyError -> 400 naming the field): requests keep flowing.
        policies = await asyncio.to_thread(load_policies_text, text, source="admin")
        dropped = await cache().reload_policies(policies)
        persisted, why = _persist(policy_file, text)
        shared = await cache().replicas.share_policies()
        version = history.note(text, change)
        log.info("policies reloaded via tuning panel (version %d): %s", version["version"], change)
        return {"reloaded": True, "version": version["version"], "change": change, "dropped_entries": dropped,
                "persisted": persisted, **({"not_persisted_because": why} if why else {}),
                "shared_with_replicas": shared}

    @router.post("/whatif")
    async def whatif(body: TuningChange) -> dict[str, Any]:
        """Replay the category's recent lookups at the current and at the proposed values."""
        policy = policy_of(body.category)
        c = cache()
        await c.lookup_log.settle(timeout=2.0)  # checks still running leave their lookups undetermined
        records = c.lookup_log.records(body.category)
        threshold = body.threshold if body.threshold is not None else policy.threshold
        current = policy.guards.model_dump()
        guards = {**current, **(body.guards or {})}
        baseline, proposed = await asyncio.to_thread(
            lambda: (predict(records, policy.threshold, KEEP_TTL, current),
                     predict(records, threshold, body.ttl(), guards)))
        return {"category": body.category,
                "current": {"threshold": policy.threshold, "ttl_seconds": policy.ttl_seconds, "guards": current},
                "proposed": {"threshold": threshold,
                             "ttl_seconds": policy.ttl_seconds if body.ttl() is KEEP_TTL else body.ttl(),
                             "guards": guards},
                "baseline": baseline.as_dict(), "prediction": proposed.as_dict(),
                "log": c.lookup_log.snapshot()}

    @router.post("/tuning/apply")
    async def apply(body: TuningChange) -> dict[str, Any]:
        """Apply the change as a validated policy reload (also written and shared like PUT /admin/policies)."""
        fields = body.fields(policy_of(body.category).guards.model_dump())
        if not fields:
            raise RequestError("nothing to change: give threshold, ttl_seconds and/or guards", param="threshold")
        async with lock:
            current_version()
            text = await asyncio.to_thread(changed_yaml, cache().policies.source_text, body.category, fields)
            shown = {**fields, **({"guards": body.guards} if body.guards else {})}
            described = ", ".join(f"{k}={v}" for k, v in shown.items())
            return await reload(text, f"{body.category}: {described}")

    @router.get("/tuning/history")
    async def get_history() -> dict[str, Any]:
        """The policy versions, oldest first, with the one in force marked."""
        async with lock:
            now = current_version()
        return {"in_force": now["version"], "categories": cache().policies.names, "versions": history.listing()}

    @router.get("/tuning/lookups")
    async def lookups(category: str = Query(..., max_length=128),
                      limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        """The category's newest lookups as recorded (digests; text only if kept), newest first."""
        policy_of(category)
        records = cache().lookup_log.records(category)[-limit:]
        return {"data": [asdict(r) for r in reversed(records)]}

    @router.post("/tuning/rollback")
    async def rollback(body: Rollback) -> dict[str, Any]:
        """Reload an earlier version (the rollback is itself a new version)."""
        async with lock:
            current_version()
            old = history.get(body.version)
            return await reload(old["text"], f"rollback to version {body.version}")

    return router
