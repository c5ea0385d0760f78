"""The response headers semcache adds: its own ``X-Semcache-*`` and those of every SSE answer."""

from __future__ import annotations

from semcache import LookupResult
from proxy.api.adaptive import threshold_headers

# Sent with every SSE answer (an upstream's own values win): no proxy in between may buffer or cache it.
SSE_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


def cache_headers(status: str, lookup: LookupResult | None) -> dict[str, str]:
    headers = {"x-semcache-status": status}
    if lookup is not None:
        headers["x-semcache-category"] = lookup.category
        headers.update(threshold_headers(lookup))
        if lookup.similarity is not None:
            headers["x-semcache-similarity"] = f"{lookup.similarity:.4f}"
        if status == "hit" and lookup.entry is not None:
            headers["x-semcache-entry"] = lookup.entry.id
    return headers
