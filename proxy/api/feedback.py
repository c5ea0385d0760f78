"""``POST /v1/semcache/feedback``: "the answer I got was right / wrong".

For a cached answer the entry id is the ``X-Semcache-Entry`` header of the
response; send it back in the body (``entry_id``) or in the same header. For
an answer IC-Cache routed (``X-Semcache-Route``), send the response's ``id``
as ``response_id``: it moves the router's estimate and the utility of the
examples used. The caller's API key decides the tenant, so one tenant cannot
report (and so remove) another's entries, and the key must be one the
upstream accepts (the key check of :mod:`proxy.api.keycheck`, strict: a key it
cannot judge now is refused with 503), or anyone could make up tenants. A wrong
report takes the caller's own entry out of serving; a shared entry only once
enough distinct tenants reported it (policy ``shared_quarantine_reports``) or
the admin did (``X-Semcache-Admin-Token``). Every report feeds the
per-category false-hit estimates in ``/admin/stats`` (``cache.feedback``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from proxy.api.controls import ADMIN_TENANT, is_admin, tenant_of
from semcache import SemanticCache

if TYPE_CHECKING:
    from proxy.api.iccache import ICCacheService
    from proxy.api.keycheck import KeyCheck


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    correct: bool
    entry_id: str | None = None
    response_id: str | None = None


def build_feedback_router(cache: Callable[[], SemanticCache], tenant_salt: str,
                          iccache: Callable[[], ICCacheService | None] = lambda: None,
                          keycheck: Callable[[], KeyCheck | None] = lambda: None,
                          admin_token: str | None = None) -> APIRouter:
    """``keycheck`` returns the live key check (None: keys are not checked, e.g. ``upstream_api_key``)."""
    router = APIRouter(tags=["feedback"])

    @router.post("/v1/semcache/feedback", response_model=None,
                 responses={401: {"description": "the upstream refused this key"},
                            503: {"description": "the key cannot be checked upstream now"}})
    async def feedback(body: FeedbackRequest, authorization: str | None = Header(default=None),
                       x_semcache_entry: str | None = Header(default=None),
                       x_semcache_admin_token: str | None = Header(default=None)) -> dict[str, Any] | JSONResponse:
        admin = is_admin(x_semcache_admin_token, admin_token)
        tenant = ADMIN_TENANT if admin else tenant_of(authorization, tenant_salt)
        check = keycheck()
        if not admin and check is not None:
            refusal = await check.refusal(tenant, authorization, strict=True)
            if refusal is not None:
                return JSONResponse(refusal.body, status_code=refusal.status_code)
        entry_id = body.entry_id or x_semcache_entry
        if not entry_id and body.response_id:
            ic = iccache()
            decision = ic.feedback(body.response_id, correct=body.correct, tenant=tenant) if ic else None
            if decision is None:
                raise HTTPException(404, f"no IC-Cache answer {body.response_id} for this caller")
            return {"response_id": body.response_id, "category": decision.category, "route": decision.route,
                    "examples": len(decision.example_ids)}
        if not entry_id:
            raise HTTPException(422, "entry_id (or the X-Semcache-Entry header) or response_id is required")
        result = await cache().report_feedback(entry_id, correct=body.correct, tenant=tenant, admin=admin)
        if not result.found:
            raise HTTPException(404, f"no cache entry {entry_id} for this caller")
        answer = {"entry_id": entry_id, "category": result.category, "removed": result.removed,
                  "trust": result.trust}
        if result.needed:  # a shared entry: how far it is from leaving serving
            answer.update(reports=result.reports, reports_needed=result.needed)
        return answer

    return router
