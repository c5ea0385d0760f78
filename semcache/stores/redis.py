"""The shared store: entries in Redis, for several proxy replicas.

Layout under ``prefix`` (default ``semcache``):

* ``{p}:e:{id}``  hash: ``record`` (JSON), ``vector`` (float32 bytes),
  ``category``, ``expires_at``; Redis expiry (``PEXPIREAT``) is set from the
  entry's TTL, so Redis reclaims expired entries even with no proxy running
  (lookups check the TTL as well: an expired entry is never served).
* ``{p}:lru:{category}`` / ``{p}:lfu:{category}`` sorted sets: recency and
  frequency across all processes, the eviction order of each category.
* ``{p}:events`` stream: every put and delete, so other processes add or drop
  entries in their in-memory index without a restart. A process follows it
  with a blocking ``XREAD``; the delay is one Redis round trip plus the fetch
  of the new entry (measured in ``tests/semcache/test_redis_store.py``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from semcache.entries.entry import CacheEntry
from semcache.errors import StoreError
from semcache.stores.base import StoreEvent, dumps_record, loads_entry

_ERRORS = (RedisError, OSError, asyncio.TimeoutError, ConnectionError)


class RedisStore:
    """Entries, recency/frequency and change events in Redis (see module docstring)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "semcache",
        timeout_s: float = 2.0,
        events_maxlen: int = 100_000,
    ):
        self.url = url
        self.prefix = prefix
        self.expiry_grace_s = 0.0
        self.origin = uuid.uuid4().hex
        self.events_maxlen = events_maxlen
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        self._events_redis: aioredis.Redis | None = None
        self._timeout_s = timeout_s
        self._closed = False

    def _key(self, id: str) -> str:
        return f"{self.prefix}:e:{id}"

    def _zset(self, kind: str, category: str) -> str:
        return f"{self.prefix}:{kind}:{category}"

    @property
    def _events(self) -> str:
        return f"{self.prefix}:events"

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _ERRORS as exc:
            raise StoreError(f"redis {self.url}: {exc}") from exc

    def _queue_put(self, pipe, entry: CacheEntry) -> None:
        key = self._key(entry.id)
        pipe.hset(key, mapping={
            "record": dumps_record(entry),
            "vector": entry.vector.astype("float32").tobytes(),
            "category": entry.category,
            "expires_at": "" if entry.expires_at is None else repr(entry.expires_at),
        })
        if entry.expires_at is not None:
            pipe.pexpireat(key, self._expiry_ms(entry.expires_at))
        pipe.zadd(self._zset("lru", entry.category), {entry.id: entry.last_hit_at or entry.created_at})
        pipe.zadd(self._zset("lfu", entry.category), {entry.id: entry.hit_count})
        pipe.xadd(self._events, {"op": "put", "ids": entry.id, "origin": self.origin},
                  maxlen=self.events_maxlen, approximate=True)

    async def put(self, entry: CacheEntry) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                self._queue_put(pipe, entry)
                await pipe.execute()
        except _ERRORS as exc:
            raise StoreError(f"redis put failed: {exc}") from exc

    async def update(self, id: str, change: Callable[[CacheEntry], CacheEntry | None], *,
                     attempts: int = 64) -> CacheEntry | None:
        """Optimistic: WATCH the entry, read it, write ``change``'s result in MULTI; retry if
        another process wrote the entry in between (so no replica's change is lost)."""
        key = self._key(id)
        try:
            for _ in range(attempts):
                async with self._redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(key)
                        current = await self._read(pipe, id)
                        new = change(current) if current is not None else None
                        if new is None:
                            return None
                        pipe.multi()
                        self._queue_put(pipe, new)
                        await pipe.execute()
                        return new
                    except WatchError:
                        pass  # someone else wrote it: read again, after a jittered pause
                await asyncio.sleep(random.uniform(0, 0.002))
        except _ERRORS as exc:
            raise StoreError(f"redis update failed: {exc}") from exc
        raise StoreError(f"redis update of {id!r}: still contended after {attempts} attempts")

    async def publish_policies(self, text: str) -> None:
        """Make ``text`` the policy YAML of every process sharing this store (an admin reload)."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self.prefix}:policies", text.encode("utf-8"))
                pipe.xadd(self._events, {"op": "policies", "ids": "", "origin": self.origin},
                          maxlen=self.events_maxlen, approximate=True)
                await pipe.execute()
        except _ERRORS as exc:
            raise StoreError(f"redis policy publish failed: {exc}") from exc

    async def shared_policies(self) -> str | None:
        """The policy YAML last published by any process, or None if none was."""
        try:
            raw = await self._redis.get(f"{self.prefix}:policies")
        except _ERRORS as exc:
            raise StoreError(f"redis policy read failed: {exc}") from exc
        return None if raw is None else raw.decode("utf-8")

    async def get(self, id: str) -> CacheEntry | None:
        try:
            return await self._read(self._redis, id)
        except _ERRORS as exc:
            raise StoreError(f"redis get failed: {exc}") from exc

    async def _read(self, conn, id: str) -> CacheEntry | None:
        """The entry via ``conn`` (the client, or a pipeline in immediate mode after WATCH)."""
        record, vector, category, expires_at = await conn.hmget(
            self._key(id), ["record", "vector", "category", "expires_at"]
        )
        if record is None or vector is None:
            return None
        hits = await conn.zscore(self._zset("lfu", category.decode()), id)
        entry = loads_entry(record, vector)
        if hits is not None:
            entry.hit_count = int(hits)
        if expires_at:
            entry.expires_at = float(expires_at)
        return entry

    async def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        try:
            categories = []
            async with self._redis.pipeline(transaction=False) as pipe:
                for id in ids:
                    pipe.hget(self._key(id), "category")
                categories = await pipe.execute()
            async with self._redis.pipeline(transaction=True) as pipe:
                for id in ids:
                    pipe.delete(self._key(id))
                for id, category in zip(ids, categories):
                    if category is not None:
                        pipe.zrem(self._zset("lru", category.decode()), id)
                        pipe.zrem(self._zset("lfu", category.decode()), id)
                pipe.xadd(self._events, {"op": "delete", "ids": ",".join(ids), "origin": self.origin},
                          maxlen=self.events_maxlen, approximate=True)
                results = await pipe.execute()
        except _ERRORS as exc:
            raise StoreError(f"redis delete failed: {exc}") from exc
        return sum(int(r) for r in results[: len(ids)])

    async def scan(self, page_size: int = 500) -> AsyncIterator[CacheEntry]:
        """Every stored entry (Redis has already dropped the expired ones)."""
        try:
            async for keys in self._scan_keys(page_size):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hmget(key, ["record", "vector", "expires_at"])
                    rows = await pipe.execute()
                for record, vector, expires_at in rows:
                    if record is None or vector is None:
                        continue
                    entry = loads_entry(record, vector)
                    if expires_at:
                        entry.expires_at = float(expires_at)
                    yield entry
        except _ERRORS as exc:
            raise StoreError(f"redis scan failed: {exc}") from exc

    async def _scan_keys(self, page_size: int) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = await self._redis.scan(cursor, match=f"{self.prefix}:e:*", count=page_size)
            if keys:
                yield keys
            if cursor == 0:
                return

    def set_expiry_grace(self, seconds: float) -> None:
        """Keep keys this long past their entry's TTL (Redis expiry = ``expires_at + seconds``).

        Load-adaptive categories may serve an entry up to ``serve_stale_s`` past its TTL while
        their model is overloaded (:mod:`semcache.adaptive`); without the grace, Redis would
        already have dropped it. Lookups still judge ``expires_at`` itself: nothing past its TTL
        is served except as stale under overload.
        """
        self.expiry_grace_s = max(0.0, float(seconds))

    def _expiry_ms(self, expires_at: float) -> int:
        return int((expires_at + self.expiry_grace_s) * 1000)

    async def record_hit(self, id: str, at: float, expires_at: float | None = None) -> None:
        try:
            category = await self._redis.hget(self._key(id), "category")
            if category is None:
                return
            cat = category.decode()
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._zset("lru", cat), {id: at}, xx=True)
                pipe.zincrby(self._zset("lfu", cat), 1, id)
                if expires_at is not None:
                    pipe.hset(self._key(id), "expires_at", repr(expires_at))
                    pipe.pexpireat(self._key(id), self._expiry_ms(expires_at))
                await pipe.execute()
        except _ERRORS as exc:
            raise StoreError(f"redis record_hit failed: {exc}") from exc

    async def eviction_candidates(self, category: str, order: str, limit: int) -> list[str]:
        """The ``limit`` entries of ``category`` to evict first, across all processes."""
        zset = self._zset("lru" if order == "lru" else "lfu", category)
        try:
            ids = await self._redis.zrange(zset, 0, max(0, limit - 1))
        except _ERRORS as exc:
            raise StoreError(f"redis eviction query failed: {exc}") from exc
        return [i.decode() for i in ids]

    async def last_event_id(self) -> str:
        """The newest event id now: follow :meth:`changes` from here after a rebuild."""
        try:
            newest = await self._redis.xrevrange(self._events, count=1)
        except _ERRORS as exc:
            raise StoreError(f"redis events failed: {exc}") from exc
        return newest[0][0].decode() if newest else "0-0"

    async def changes(self, after: str, block_ms: int = 250) -> AsyncIterator[StoreEvent]:
        """Changes made by *other* processes after event id ``after``, forever.

        Connection failures are retried with back-off (the cache keeps
        serving from its current index meanwhile).
        """
        if self._events_redis is None:
            self._events_redis = aioredis.Redis.from_url(
                self.url, socket_timeout=block_ms / 1000 + self._timeout_s, socket_connect_timeout=self._timeout_s
            )
        delay = 0.1
        while not self._closed:
            try:
                reply = await self._events_redis.xread({self._events: after}, block=block_ms, count=500)
                delay = 0.1
            except _ERRORS:
                # redis-py may turn a cancellation into a connection error: honour it.
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for _stream, messages in reply or []:
                for event_id, fields in messages:
                    after = event_id.decode()
                    origin = fields.get(b"origin", b"").decode()
                    if origin == self.origin:
                        continue
                    op = fields.get(b"op", b"").decode()
                    ids = tuple(i for i in fields.get(b"ids", b"").decode().split(",") if i)
                    if op in ("put", "delete") and ids:
                        yield StoreEvent(op=op, ids=ids, origin=origin)
                    elif op == "policies":
                        yield StoreEvent(op="policies", ids=(), origin=origin)

    async def close(self) -> None:
        self._closed = True
        for client in (self._redis, self._events_redis):
            if client is not None:
                try:
                    await client.aclose()
                except _ERRORS:
                    pass
