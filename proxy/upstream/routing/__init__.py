"""Routing strategies: which replica of a model a forwarded request goes to.

Each implements :class:`proxy.upstream.pool.RoutingStrategy` (``choose``);
``kv`` also has an awaitable ``achoose`` (it asks the LMCache controller),
used by :meth:`proxy.upstream.pool.UpstreamRouter.route`.

* ``round_robin``, ``least_loaded`` (:mod:`.basic`): blind to the prompt;
* ``session`` (:mod:`.session`): consistent hashing on the session;
* ``prefix`` (:mod:`.prefix`): longest prefix recently sent, against load;
* ``kv`` (:mod:`.kv`): longest prefix the LMCache controller knows of.

The strategy is chosen per model (``routing_by_model``, default ``routing``);
the affinity strategies share one :class:`.balance.Balancer`.
"""

from __future__ import annotations

import httpx

from proxy.upstream.routing.balance import Balancer, EngineQueues
from proxy.upstream.routing.basic import LeastLoaded, RoundRobin
from proxy.upstream.routing.kv import KvAffinity, LMCacheLookup
from proxy.upstream.routing.options import RoutingOptions, StrategyName
from proxy.upstream.routing.prefix import PrefixAffinity
from proxy.upstream.routing.session import SessionAffinity

__all__ = ["Balancer", "EngineQueues", "KvAffinity", "LeastLoaded", "PrefixAffinity", "RoundRobin",
           "RoutingOptions", "SessionAffinity", "StrategyName", "build_strategy"]


def build_strategy(name: StrategyName, options: RoutingOptions, balancer: Balancer,
                   client: httpx.AsyncClient | None = None):
    """A fresh strategy ``name`` (``client``: for ``kv``'s calls to the engines and the controller)."""
    if name == "round_robin":
        return RoundRobin()
    if name == "least_loaded":
        return LeastLoaded()
    if name == "session":
        return SessionAffinity(balancer, options.session_chars)
    prefix = PrefixAffinity(balancer, beta=options.beta, block_chars=options.block_chars,
                            max_prefix_chars=options.max_prefix_chars, capacity_blocks=options.prefix_capacity_blocks)
    if name == "prefix":
        return prefix
    if name == "kv":
        lookup = None
        if options.lmcache_controller_url and client is not None:
            lookup = LMCacheLookup(options.lmcache_controller_url, client)
        return KvAffinity(prefix, lookup, options.lmcache_instances, timeout_s=options.kv_timeout_s,
                          retry_s=options.kv_retry_s, min_match_fraction=options.kv_min_match_fraction)
    raise ValueError(f"unknown routing strategy {name!r}")
