"""Prompt construction: examples become earlier user/assistant turns.

The caller's messages are never rewritten. Leading system (and developer)
messages stay first, byte for byte, so an engine's prefix KV cache still
matches them; the examples follow as user/assistant pairs, in the order the
selection gave (deterministic), and then the caller's own turns unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from semcache.iccache.bank import Example

_PREFIX_ROLES = frozenset({"system", "developer"})


def with_examples(messages: Sequence[dict[str, Any]], examples: Sequence[Example]) -> list[dict[str, Any]]:
    """A new message list: the caller's leading system turns, the examples, then the rest."""
    messages = [copy.deepcopy(m) for m in messages]
    split = 0
    while split < len(messages) and messages[split].get("role") in _PREFIX_ROLES:
        split += 1
    shots: list[dict[str, Any]] = []
    for ex in examples:
        shots.append({"role": "user", "content": ex.question})
        shots.append({"role": "assistant", "content": ex.answer})
    return messages[:split] + shots + messages[split:]


def example_count(original: Sequence[dict[str, Any]], rewritten: Sequence[dict[str, Any]]) -> int:
    """How many examples :func:`with_examples` inserted (for ``X-Semcache-Examples``)."""
    return (len(rewritten) - len(original)) // 2
