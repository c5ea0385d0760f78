"""``prefix`` routing: send a prompt where its longest prefix was recently sent.

The router remembers, per replica, the block hashes of the prompts it sent
there (an LRU of ``capacity_blocks``, standing in for the replica's prefix
cache, which it cannot see). For a new prompt each candidate scores

    matched fraction - beta x (its load / the busiest candidate's load)

where the matched fraction is the longest leading run of the prompt's blocks
that replica holds, over the prompt's blocks. The best score wins: with no
match anywhere that is the least-loaded replica; with one, a replica that
holds most of the prompt wins unless it is much busier. Under imbalance (see
:mod:`.balance`) the least-loaded replica wins outright. The chosen replica
then holds the prompt's blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy.upstream.routing.balance import Balancer
from proxy.upstream.routing.prompt import block_hashes, rendered_prompt

if TYPE_CHECKING:
    from proxy.upstream.pool import Upstream


class PrefixTable:
    """Per replica (by base URL), the block hashes recently sent there, LRU-bounded."""

    def __init__(self, capacity_blocks: int):
        self.capacity_blocks = capacity_blocks
        self._held: dict[str, OrderedDict[bytes, None]] = {}

    def matched(self, replica: str, hashes: Sequence[bytes]) -> int:
        """How many leading blocks of ``hashes`` ``replica`` holds."""
        held = self._held.get(replica)
        if not held:
            return 0
        n = 0
        for h in hashes:
            if h not in held:
                break
            n += 1
        return n

    def record(self, replica: str, hashes: Sequence[bytes]) -> None:
        held = self._held.setdefault(replica, OrderedDict())
        for h in hashes:
            held[h] = None
            held.move_to_end(h)
        while len(held) > self.capacity_blocks:
            held.popitem(last=False)


class PrefixAffinity:
    def __init__(self, balancer: Balancer, *, beta: float = 0.5, block_chars: int = 64,
                 max_prefix_chars: int = 65536, capacity_blocks: int = 16384):
        self.balancer = balancer
        self.beta = beta
        self.block_chars = block_chars
        self.max_prefix_chars = max_prefix_chars
        self.table = PrefixTable(capacity_blocks)

    def blocks(self, body: dict[str, Any]) -> list[bytes]:
        return block_hashes(rendered_prompt(body, self.max_prefix_chars), self.block_chars)

    def choose(self, candidates: Sequence[Upstream], body: dict[str, Any]) -> Upstream:
        hashes = self.blocks(body)
        chosen = self.pick(candidates, hashes)
        self.table.record(chosen.base_url, hashes)
        return chosen

    def pick(self, candidates: Sequence[Upstream], hashes: Sequence[bytes]) -> Upstream:
        """The best-scoring candidate for a prompt with these blocks (recording nothing)."""
        n = len(hashes)
        return best_scored(self.balancer, candidates, self.beta,
                           [self.table.matched(u.base_url, hashes) / n if n else 0.0 for u in candidates])


def best_scored(balancer: Balancer, candidates: Sequence[Upstream], beta: float,
                fractions: Sequence[float]) -> Upstream:
    """The candidate with the best ``matched fraction - beta x relative load``; least-loaded
    under imbalance or when nothing matched anywhere."""
    loads = [balancer.load(u) for u in candidates]
    if len(candidates) == 1 or max(fractions) <= 0.0 or balancer.imbalanced(loads):
        return balancer.least_loaded(candidates, loads)
    busiest = max(max(loads), 1.0)
    scores = [f - beta * load / busiest for f, load in zip(fractions, loads, strict=True)]
    best = max(scores)
    tied = [u for u, s in zip(candidates, scores, strict=True) if s == best]
    return tied[0] if len(tied) == 1 else balancer.least_loaded(tied)
