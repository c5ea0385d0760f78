"""semcache: a semantic response cache for LLM serving (the core library).

This package knows nothing about HTTP. Entry points::

    from semcache import SemanticCache, CacheRequest, load_policies, SQLiteStore

See :mod:`semcache.request.keys` for the cache-key rule and :mod:`semcache.config.policy` for
the policy file format. Similarities are cosine similarities in [-1, 1],
higher is closer, everywhere.
"""

from semcache.cache import SemanticCache
from semcache.clock import Clock, ManualClock, SystemClock
from semcache.entries.entry import CacheEntry
from semcache.errors import (
    CacheUnavailableError,
    ConfigError,
    EmbedderError,
    EmbedderOverloadedError,
    PolicyError,
    RequestError,
    SemcacheError,
    StoreError,
    UpstreamError,
    VectorIndexError,
)
from semcache.request.keys import CacheRequest
from semcache.config.policy import CategoryPolicy, PolicySet, load_policies, load_policies_text
from semcache.protocols import Embedder, Store, VectorIndex
from semcache.results import LookupResult, StoreResult
from semcache.stores import RedisStore, SQLiteStore

__all__ = [
    "CacheEntry", "CacheRequest", "CacheUnavailableError", "CategoryPolicy", "Clock", "ConfigError",
    "Embedder", "EmbedderError", "EmbedderOverloadedError", "LookupResult", "ManualClock", "PolicyError",
    "PolicySet", "RedisStore", "RequestError", "SQLiteStore", "SemanticCache", "SemcacheError", "Store",
    "StoreError", "StoreResult", "SystemClock", "UpstreamError", "VectorIndex", "VectorIndexError",
    "load_policies", "load_policies_text",
]
