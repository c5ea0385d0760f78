"""``POST /v1/semcache/feedback``: "the cached answer I got was right / wrong".

The entry id is the ``X-Semcache-Entry`` header of the cached response; send
it back in the body (``entry_id``) or in the same header. The caller's API key
decides the tenant, so one tenant cannot report (and so remove) another's
entries. A wrong report takes the entry out of serving; every report feeds
the per-category false-hit estimates in ``/admin/stats`` (``cache.feedback``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Header, HTTPException
from pydantic import BaseModel, ConfigDict

from proxy.controls import tenant_of
from semcache import SemanticCache


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    correct: bool
    entry_id: str | None = None


def build_feedback_router(cache: Callable[[], SemanticCache], tenant_salt: str) -> APIRouter:
    router = APIRouter(tags=["feedback"])

    @router.post("/v1/semcache/feedback")
    async def feedback(body: FeedbackRequest, authorization: str | None = Header(default=None),
                       x_semcache_entry: str | None = Header(default=None)) -> dict[str, Any]:
        entry_id = body.entry_id or x_semcache_entry
        if not entry_id:
            raise HTTPException(422, "entry_id (or the X-Semcache-Entry header) is required")
        result = await cache().report_feedback(entry_id, correct=body.correct,
                                               tenant=tenant_of(authorization, tenant_salt))
        if not result.found:
            raise HTTPException(404, f"no cache entry {entry_id} for this caller")
        return {"entry_id": entry_id, "category": result.category, "removed": result.removed,
                "trust": result.trust}

    return router
