"""``kv`` routing: ask the LMCache controller which engine holds the longest prefix.

LMCache (arXiv 2510.09665) keeps engines' KV caches in CPU/disk/remote tiers
and its controller knows which instance holds which token chunks. Its HTTP
API (``lmcache.v1.api_server``), as vLLM production-stack's ``kvaware``
router uses it::

    POST /lookup {"tokens": [int, ...]}
      -> {"event_id": "...", "layout_info": {"<instance_id>": ["<location>", <matched_prefix_tokens>]}}

Token ids come from the engine itself (vLLM's ``POST /tokenize``, with the
chat template applied for chat), so they are exactly what LMCache hashed.
``lmcache_instances`` maps each LMCache ``instance_id`` (its
``lmcache_instance_id`` setting) to the upstream base URL it runs in.

The same score as ``prefix`` routing (matched fraction - beta x relative
load) and the same imbalance fallback apply. When the controller is not
configured, not reachable, slow (``timeout_s`` for tokenize + lookup), or
knows no long enough prefix, the request is routed by ``prefix`` routing (the
proxy's own record of what it sent where), and after a failure the
controller is left alone for ``retry_s``: a dead controller costs one
timeout per ``retry_s``, not one per request.

Only the asynchronous :meth:`KvAffinity.achoose` (``UpstreamRouter.route``)
asks the controller; the synchronous ``choose`` is prefix routing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from proxy.upstream.engine_load import engine_root
from proxy.upstream.routing.prefix import PrefixAffinity, best_scored

if TYPE_CHECKING:
    from proxy.upstream.pool import Upstream

log = logging.getLogger("semcache.routing")


class ControllerError(Exception):
    """The engine's tokenizer or the LMCache controller gave no usable answer."""


class LMCacheLookup:
    """Tokenize on an engine, then ask the LMCache controller who holds the prefix."""

    def __init__(self, controller_url: str, client: httpx.AsyncClient):
        self.controller_url = controller_url.rstrip("/")
        self.client = client

    async def tokens(self, upstream: Upstream, body: dict[str, Any]) -> list[int]:
        if isinstance(body.get("messages"), list):
            req = {"model": body.get("model"), "messages": body["messages"], "add_generation_prompt": True}
        else:
            req = {"model": body.get("model"), "prompt": body.get("prompt")}
        data = await self._post(engine_root(upstream.base_url) + "/tokenize", req)
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise ControllerError("/tokenize answered without a token list")
        return tokens

    async def lookup(self, tokens: list[int]) -> dict[str, int]:
        """Matched prefix tokens per LMCache instance_id."""
        layout = (await self._post(self.controller_url + "/lookup", {"tokens": tokens})).get("layout_info")
        if not isinstance(layout, dict):
            raise ControllerError("/lookup answered without layout_info")
        out: dict[str, int] = {}
        for instance, info in layout.items():
            if isinstance(info, list | tuple) and len(info) == 2 and isinstance(info[1], int):
                out[str(instance)] = info[1]
        return out

    async def _post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(url, json=payload)
        if r.status_code != 200:
            raise ControllerError(f"{url} answered {r.status_code}")
        data = r.json()
        if not isinstance(data, dict):
            raise ControllerError(f"{url} answered a non-object")
        return data


class KvAffinity:
    def __init__(self, prefix: PrefixAffinity, lookup: LMCacheLookup | None, instances: dict[str, str], *,
                 timeout_s: float = 0.25, retry_s: float = 10.0, min_match_fraction: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        self.prefix = prefix
        self.lookup = lookup
        self.by_url = {url.rstrip("/"): instance for instance, url in instances.items()}
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.min_match_fraction = min_match_fraction
        self.clock = clock
        self._down_until = 0.0
        self.asked = self.answered = self.fell_back = 0  # for /admin/stats and tests

    def choose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream:
        return self.prefix.choose(candidates, body)

    async def achoose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream:
        if self.lookup is None or len(candidates) == 1 or self.clock() < self._down_until:
            return self.prefix.choose(candidates, body)
        self.asked += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                tokens = await self.lookup.tokens(candidates[0], body)
                matched = await self.lookup.lookup(tokens)
        except (TimeoutError, httpx.HTTPError, ValueError, ControllerError) as exc:
            level = logging.WARNING if self._down_until == 0.0 else logging.DEBUG
            log.log(level, "LMCache lookup failed (%s: %s); kv routing uses prefix routing for %.0f s",
                    type(exc).__name__, exc, self.retry_s)
            self._down_until = self.clock() + self.retry_s
            self.fell_back += 1
            return self.prefix.choose(candidates, body)
        if self._down_until:
            log.info("LMCache controller answers again; kv routing asks it")
            self._down_until = 0.0
        self.answered += 1
        n = max(1, len(tokens))
        fractions = [matched.get(self.by_url.get(u.base_url.rstrip("/"), ""), 0) / n for u in candidates]
        if max(fractions) < self.min_match_fraction:
            return self.prefix.choose(candidates, body)
        hashes = self.prefix.blocks(body)
        chosen = best_scored(self.prefix.balancer, candidates, self.prefix.beta, fractions)
        self.prefix.table.record(chosen.base_url, hashes)
        return chosen
