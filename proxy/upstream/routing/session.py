"""``session`` routing: every turn of a session goes to the same replica.

The session key is, first found: the request's session header
(``routing_options.session_header``, default ``X-Session-Id``, handed over in
:data:`SESSION` by the route, since strategies see only the body), the
OpenAI ``user`` field, else a hash of the conversation's opening turns.

Rendezvous (highest-random-weight) hashing: a session goes to the replica
with the highest ``hash(session, replica)``. When a replica leaves, only the
sessions it held move (to their second choice); when one joins, it takes the
~1/N of sessions it now scores highest for. Nothing is stored per session.
Under imbalance (see :mod:`.balance`) a request goes to the least-loaded
replica instead; its session returns home once the load evens out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from proxy.upstream.routing.balance import Balancer
from proxy.upstream.routing.prompt import session_key

if TYPE_CHECKING:
    from proxy.upstream.pool import Upstream


SESSION: ContextVar[str | None] = ContextVar("semcache_routing_session", default=None)
"""The session named by the current request's session header, if any (set by the OpenAI routes; tasks
started for the request, such as a coalesced upstream call, inherit it)."""


def rendezvous(key: str, nodes: Sequence[str]) -> int:
    """Index of the node that ``key`` belongs to among ``nodes`` (highest random weight)."""
    def weight(node: str) -> bytes:
        return hashlib.blake2b(f"{key}\x00{node}".encode("utf-8", "surrogatepass"), digest_size=8).digest()

    return max(range(len(nodes)), key=lambda i: weight(nodes[i]))


class SessionAffinity:
    def __init__(self, balancer: Balancer, session_chars: int = 4096):
        self.balancer = balancer
        self.session_chars = session_chars

    def choose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream:
        if len(candidates) == 1:
            return candidates[0]
        loads = [self.balancer.load(u) for u in candidates]
        if self.balancer.imbalanced(loads):
            return self.balancer.least_loaded(candidates, loads)
        key = SESSION.get() or session_key(body, self.session_chars)
        return candidates[rendezvous(key, [u.base_url for u in candidates])]
