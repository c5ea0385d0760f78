"""Headers that make load adaptation visible on every answer.

* ``X-Semcache-Threshold``: the similarity threshold the lookup used, followed
  by ``; adaptive`` when load adaptation moved it from the policy's value;
* ``X-Semcache-Stale``: on a hit served stale under overload (``serve_stale_s``),
  how many seconds ago the entry expired.
"""

from __future__ import annotations

from semcache.results import LookupResult


def threshold_headers(lookup: LookupResult) -> dict[str, str]:
    headers = {}
    if lookup.threshold is not None:
        headers["x-semcache-threshold"] = f"{lookup.threshold:.4f}" + ("; adaptive" if lookup.adaptive else "")
    if lookup.stale_s is not None and lookup.status == "hit":
        headers["x-semcache-stale"] = f"{lookup.stale_s:.1f}"
    return headers
