"""``/dashboard``: the live tuning dashboard, and ``/admin/live``, the stream that feeds it.

The page is a static shell (HTML, CSS, our JS and a vendored Chart.js:
no CDN, no build step) that holds no data until the operator logs in with
the admin token. The token lives in the tab's ``sessionStorage`` and goes
only into an ``Authorization`` header: never into a URL (so never into an
access log or a referrer) and never into a cookie that a cross-site request
would carry.

``/admin/live`` is a server-sent-events stream of ``/admin/stats`` snapshots
every ``interval_s``. The page reads it with ``fetch`` (``EventSource`` cannot
send an ``Authorization`` header). Its cost to serving is one snapshot per
interval per open dashboard, built on the event loop in well under a
millisecond for tens of categories; at most ``max_streams`` dashboards may
stream at once (more get 429), so a forgotten tab farm cannot add up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic_core import to_json

STATIC = Path(__file__).with_name("static")
# The files the page needs, by URL name: nothing else under static/ is served.
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "whatif.js": ("whatif.js", "text/javascript"),
    "controller.js": ("controller.js", "text/javascript"),
    "chart.umd.min.js": ("vendor/chart.umd.min.js", "text/javascript"),
}
PAGE_HEADERS = {
    # The page loads only its own files and talks only to its own origin.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def encode_event(data: dict[str, Any]) -> bytes:
    """One server-sent event. NaN and infinities (an IC-Cache category with no quality score
    yet has mean quality NaN) become null, as in ``/admin/stats``: the browser's
    ``JSON.parse`` refuses ``NaN``, and one such snapshot broke the stream for good."""
    return b"data: " + to_json(data, inf_nan_mode="null") + b"\n\n"


class LiveStreams:
    """Counts open ``/admin/live`` streams against a cap."""

    def __init__(self, max_streams: int):
        self.max_streams = max_streams
        self.open = 0

    def acquire(self) -> None:
        if self.open >= self.max_streams:
            raise HTTPException(429, f"at most {self.max_streams} live dashboards at once")
        self.open += 1

    def release(self) -> None:
        self.open -= 1


def build_dashboard_router(token: str | None, snapshot: Callable[[], dict[str, Any]],
                           auth: Callable[[Request], None] | None, *, interval_s: float = 2.0,
                           max_streams: int = 8) -> APIRouter:
    """The page, its assets and its stream; all 404 when the admin API is disabled (no token)."""
    router = APIRouter(include_in_schema=False)
    if not token or auth is None:
        @router.get("/dashboard")
        @router.get("/dashboard/{path:path}")
        async def dashboard_disabled(path: str = "") -> None:
            raise HTTPException(404, "dashboard is disabled: set SEMCACHE_ADMIN_TOKEN to enable it")

        return router

    streams = LiveStreams(max_streams)

    @router.get("/dashboard")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/dashboard/static/{name}")
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, "no such dashboard file")
        path, media_type = ASSETS[name]
        return FileResponse(STATIC / path, media_type=media_type,
                            headers={"cache-control": "public, max-age=3600", "x-content-type-options": "nosniff"})

    @router.get("/admin/live", dependencies=[Depends(auth)])
    async def live(request: Request) -> StreamingResponse:
        streams.acquire()

        async def events() -> AsyncIterator[bytes]:
            try:
                while True:  # Starlette cancels this generator when the client leaves
                    data = {"at": time.time(), "interval_s": interval_s, **snapshot()}
                    yield encode_event(data)
                    await asyncio.sleep(interval_s)
            finally:
                streams.release()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    return router
