"""The simulated engine's prefix cache: vLLM's automatic prefix caching, seen from outside.

vLLM splits a prompt into blocks of ``block_size`` tokens and names each full
block by a hash chained over every block before it, so one hash stands for a
whole prefix. A new request reuses the longest run of leading blocks still in
the cache and prefills only the rest; computed blocks join the cache, and the
least recently used ones are evicted when it is full. The last partial block
is never cached, and a prompt that is cached in full still computes its last
token (vLLM needs one token's logits), which this model keeps too.

What it leaves out: blocks held by running requests are not pinned against
eviction (the capacity is a separate budget from the running batch's KV use).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence


def block_hashes(tokens: Sequence[str], block_size: int) -> list[bytes]:
    """Chained hashes of the full ``block_size``-token blocks of ``tokens``."""
    out: list[bytes] = []
    prev = b""
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = hashlib.blake2b(prev, digest_size=16)
        h.update("\x00".join(tokens[start:start + block_size]).encode())
        prev = h.digest()
        out.append(prev)
    return out


class PrefixCache:
    """An LRU set of block hashes, ``capacity_blocks`` at most."""

    def __init__(self, capacity_blocks: int, block_size: int):
        if capacity_blocks < 1 or block_size < 1:
            raise ValueError("capacity_blocks and block_size must be >= 1")
        self.capacity_blocks = capacity_blocks
        self.block_size = block_size
        self._blocks: OrderedDict[bytes, None] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def cached_tokens(self, hashes: Sequence[bytes], prompt_tokens: int, *, touch: bool = True) -> int:
        """Tokens of the prompt served from cache (its longest cached leading run of blocks).

        Touches the matched blocks (they become most recently used) unless
        ``touch`` is false (a look from outside, as LMCache's controller gives).
        At most ``prompt_tokens - 1``: the last token is always computed.
        """
        matched = 0
        for h in hashes:
            if h not in self._blocks:
                break
            if touch:
                self._blocks.move_to_end(h)
            matched += 1
        return min(matched * self.block_size, max(0, prompt_tokens - 1))

    def insert(self, hashes: Sequence[bytes]) -> None:
        """Add (or refresh) the blocks of a computed prompt, evicting the least recently used."""
        for h in hashes:
            if h in self._blocks:
                self._blocks.move_to_end(h)
            else:
                self._blocks[h] = None
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
            self.evictions += 1
