"""Document stores behind the ``Store`` protocol: embedded SQLite, shared Redis, in-memory."""

from semcache.stores.base import StoreEvent
from semcache.stores.memory import MemoryStore
from semcache.stores.redis import RedisStore
from semcache.stores.sqlite import SQLiteStore

__all__ = ["MemoryStore", "RedisStore", "SQLiteStore", "StoreEvent"]
