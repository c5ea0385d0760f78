"""The admin API: stats, policies (view, validated atomic reload), invalidation, entries.

Behind a bearer token (``SEMCACHE_ADMIN_TOKEN``). With no token configured
the API is disabled (every ``/admin`` path answers 404 saying so), never open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from proxy.api.protocol import InvalidateRequest
from semcache import SemanticCache, load_policies_text
from semcache.errors import RequestError

log = logging.getLogger("semcache.proxy")

MAX_POLICY_BYTES = 256 * 1024
"""A policy document larger than this is refused (413): real ones are a few KiB, and
parsing costs ~1 s per MB of CPU that the serving threads share (GIL)."""

_POLICY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}},
                    "text/plain": {"schema": {"type": "string"}}},
    }
}


class AdaptiveSwitches(BaseModel):
    """``POST /admin/adaptive``: kill switches of load-adaptive policies (this process only)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    """false: every category (or ``category``) serves its policy as written, at once."""
    dry_run: bool | None = None
    """true: log the moves it would make, serve the policies (all categories)."""
    category: str | None = Field(None, max_length=128)


def bearer_check(token: str) -> Callable[[Request], None]:
    expected = token.encode()

    # async: a plain def would run in a worker thread, and the first such call imports
    # anyio's thread machinery on the event loop (~0.2 s stall on the first admin request).
    async def check(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "admin API: missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def build_admin_router(token: str | None, cache: Callable[[], SemanticCache],
                       proxy_stats: Callable[[], dict[str, Any]], policy_file: Path | None = None) -> APIRouter:
    """Routes under ``/admin``; ``cache`` returns the running cache (built in the lifespan).

    ``policy_file``: where a policy reload is also written (atomically), so it survives a
    restart; None keeps reloads in memory only.
    """
    if not token:
        disabled = APIRouter(include_in_schema=False)

        @disabled.api_route("/admin/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
        async def admin_disabled(path: str) -> None:
            raise HTTPException(404, "admin API is disabled: set SEMCACHE_ADMIN_TOKEN to enable it")

        return disabled

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(bearer_check(token))])

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        """Per-category cache counters and the proxy's own counters."""
        return {"cache": cache().stats_snapshot(), "proxy": proxy_stats()}

    @router.get("/adaptive")
    async def get_adaptive() -> dict[str, Any]:
        """Load-adaptive policies: per category effective values and pressure, switches, newest moves."""
        return cache().adaptive.snapshot()

    @router.post("/adaptive")
    async def set_adaptive(body: AdaptiveSwitches) -> dict[str, Any]:
        """Turn load adaptation off/on (globally or per category) or into dry run; reverts at once."""
        c = cache()
        if body.category is not None and body.category not in c.policies:
            raise RequestError(f"no category {body.category!r} in the policies", param="category")
        c.adaptive.set_switches(enabled=body.enabled, dry_run=body.dry_run, category=body.category)
        log.info("adaptive switches set via admin API: %s", body.model_dump(exclude_none=True))
        return c.adaptive.snapshot()

    @router.get("/policies", response_class=PlainTextResponse)
    async def get_policies() -> PlainTextResponse:
        """The policy YAML in force."""
        policies = cache().policies
        return PlainTextResponse(policies.source_text, media_type="application/yaml",
                                 headers={"x-semcache-policy-source": policies.source})

    @router.put("/policies", openapi_extra=_POLICY_BODY)
    async def put_policies(request: Request) -> dict[str, Any]:
        """Validate new policy YAML and swap it in atomically; 400 naming the field if invalid."""
        raw = await request.body()
        if len(raw) > MAX_POLICY_BYTES:
            raise RequestError(f"policy document exceeds {MAX_POLICY_BYTES} bytes", status_code=413)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("policy body must be UTF-8 YAML") from exc
        # Parsing and validating is pure-Python CPU work: a worker thread keeps the loop serving.
        policies = await asyncio.to_thread(load_policies_text, text, source="admin")  # PolicyError -> 400
        dropped = await cache().reload_policies(policies)
        log.info("policies reloaded via admin API: %d categories, %d stale entries dropped",
                 len(policies), dropped)
        persisted, why = _persist(policy_file, text)
        # Replicas sharing the store (Redis) switch too; a restarting one adopts it.
        shared = await cache().replicas.share_policies()
        return {"reloaded": True, "categories": policies.names, "dropped_entries": dropped,
                "persisted": persisted, **({"not_persisted_because": why} if why else {}),
                "shared_with_replicas": shared}

    @router.post("/invalidate")
    async def invalidate(body: InvalidateRequest) -> dict[str, Any]:
        """Delete entries matching every given filter (``{"all": true}`` to clear everything)."""
        filters = body.model_dump(exclude={"all"}, exclude_none=True)
        c = cache()
        if not filters:
            if not body.all:
                raise RequestError("give at least one filter, or {\"all\": true}", param="all")
            removed = sum([await c.invalidate(category=name) for name in c.policies.names])
        else:
            removed = await c.invalidate(**filters)
        return {"removed": removed}

    @router.get("/entries")
    async def entries(
        tenant: str | None = Query(None, max_length=128),
        category: str | None = Query(None, max_length=128),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Metadata of the newest entries (no vectors, no responses)."""
        return {"data": await cache().list_entries(tenant=tenant, category=category, limit=limit)}

    return router


def _persist(path: Path | None, text: str) -> tuple[bool, str | None]:
    """Write reloaded policy YAML over the policy file (temp file + rename: never half-written)."""
    if path is None:
        return False, "no policy file configured"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # clean up a half-written temp file, if any
            tmp.unlink(missing_ok=True)
        log.warning("reloaded policies are in force but not written to %s: %s", path, exc.strerror or exc)
        return False, f"cannot write {path.name}: {exc.strerror or exc}"
    return True, None
