"""Callers' keys are checked upstream before a cached answer is served to them.

Without this, a cache would hand answers to anyone who sends *some* key: a
bogus key names a new (empty) tenant, but a category with a
``shared_namespace`` serves every tenant, and a revoked key could go on
reading its own tenant's entries. A miss proves a key (the upstream answered
it); for a hit, a key not proven in the last ``ttl_s`` seconds is checked with
one ``GET /models`` upstream carrying it. The upstream's 401/403 goes back to
the caller unchanged. If the upstream cannot be reached, or does not answer
within ``timeout_s`` (2 s by default, not the upstream read timeout: a hung
upstream must not hold a hit for minutes), the hit is served (a cache must
keep answering through an upstream outage) and a warning is logged; the key
is not remembered as good, so the next hit asks again.

Off when the proxy sends its own key upstream (``upstream_api_key``): the
upstream then never sees callers' keys, and who may call is the operator's
front door's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from semcache.errors import UpstreamError

log = logging.getLogger("semcache.keycheck")

Probe = Callable[[str | None], Awaitable[int]]
"""Asks the upstream with a caller's Authorization; returns the HTTP status (raises on transport errors)."""


class KeyCheck:
    """Remembers, per tenant, when its key was last accepted upstream (bounded LRU)."""

    def __init__(self, probe: Probe, *, ttl_s: float = 300.0, timeout_s: float = 2.0, max_tenants: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self._probe = probe
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._max = max_tenants
        self._clock = clock
        self._good: OrderedDict[str, float] = OrderedDict()

    def vouch(self, tenant: str) -> None:
        """The upstream just answered this tenant's key with a success."""
        self._good[tenant] = self._clock()
        self._good.move_to_end(tenant)
        while len(self._good) > self._max:
            self._good.popitem(last=False)

    async def refusal(self, tenant: str, authorization: str | None, *, strict: bool = False) -> UpstreamError | None:
        """None if the caller may be served from the cache, else the upstream's refusal.

        ``strict`` (a caller who wants to *change* the cache, e.g. feedback): a key
        the upstream cannot judge right now is refused too (503), not waved through.
        """
        seen = self._good.get(tenant)
        if seen is not None and self._clock() - seen < self.ttl_s:
            return None
        try:
            status = await asyncio.wait_for(self._probe(authorization), self.timeout_s)
        except UpstreamError as exc:
            if strict:
                return _unverified(exc.status_code)
            log.warning("cannot check a caller's key upstream (%s); serving the cached answer", exc.status_code)
            return None
        except TimeoutError:
            log.warning("key check upstream took over %.1fs; serving the cached answer", self.timeout_s)
            return None
        if status in (401, 403):
            self._good.pop(tenant, None)
            return UpstreamError("the upstream refused this API key", status_code=status,
                                 body={"error": {"message": "Incorrect or missing API key (checked upstream).",
                                                 "type": "invalid_request_error", "param": None,
                                                 "code": "invalid_api_key"}})
        if status < 400:
            self.vouch(tenant)
        elif strict:
            return _unverified(status)
        else:  # the upstream is unwell (5xx, 404 for /models): do not hold it against the caller
            log.warning("key check upstream answered %s; serving the cached answer", status)
        return None


def _unverified(status: int) -> UpstreamError:
    return UpstreamError("cannot check this API key upstream now", status_code=503,
                         body={"error": {"message": f"Cannot check this API key upstream now (it answered {status}); "
                                                    "try again later.", "type": "api_error", "param": None,
                                         "code": "key_check_unavailable"}})
