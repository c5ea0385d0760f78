"""What the stores share: change events and the JSON form of entries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from semcache.entries.entry import CacheEntry


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """A change made by another process sharing the store (Redis only).

    ``policies``: an admin reload elsewhere published new policy YAML (read it
    with the store's ``shared_policies``).
    """

    op: Literal["put", "delete", "policies"]
    ids: tuple[str, ...]
    origin: str


def dumps_record(entry: CacheEntry) -> str:
    return json.dumps(entry.to_record(), separators=(",", ":"), ensure_ascii=False)


def loads_entry(record: str | bytes, vector: bytes) -> CacheEntry:
    data: dict[str, Any] = json.loads(record)
    return CacheEntry.from_record(data, vector)
