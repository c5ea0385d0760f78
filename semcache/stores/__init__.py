"""Document stores behind the ``Store`` protocol: embedded SQLite and shared Redis."""

from semcache.stores.base import StoreEvent
from semcache.stores.redis import RedisStore
from semcache.stores.sqlite import SQLiteStore

__all__ = ["RedisStore", "SQLiteStore", "StoreEvent"]
