"""The embedded default store: one local SQLite file.

Durability: WAL journal with ``synchronous=FULL`` for puts and deletes, so an
entry acknowledged by :meth:`SQLiteStore.put` survives a crash or restart.
Hit statistics (recency, frequency) are advisory: they are buffered in memory
and written with the next write or :meth:`flush`, so a hit costs no fsync.

One process owns the file (use Redis to share a cache between processes).
All SQLite calls run on one worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from semcache.entries.entry import CacheEntry
from semcache.errors import StoreError
from semcache.stores.base import dumps_record, loads_entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_hit_at REAL NOT NULL,
    hit_count INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_lru ON entries (category, last_hit_at);
CREATE INDEX IF NOT EXISTS entries_lfu ON entries (category, hit_count, last_hit_at);
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at);
"""


class SQLiteStore:
    """Persistent entries in a local SQLite file (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semcache-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._pending_hits: dict[str, tuple[int, float, float | None]] = {}
        self._hits_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    def _flush_hits(self, conn: sqlite3.Connection) -> None:
        if not self._pending_hits:
            return
        with self._hits_lock:
            pending, self._pending_hits = self._pending_hits, {}
        rows = [(n, at, at, exp, exp, id) for id, (n, at, exp) in pending.items()]
        conn.executemany(
            "UPDATE entries SET hit_count = hit_count + ?, last_hit_at = MAX(last_hit_at, ?),"
            " record = json_set(record, '$.last_hit_at', ?, '$.expires_at', COALESCE(?, json_extract(record, '$.expires_at'))),"
            " expires_at = COALESCE(?, expires_at) WHERE id = ?",
            rows,
        )

    @staticmethod
    def _write(conn: sqlite3.Connection, entry: CacheEntry) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO entries (id, category, created_at, expires_at, last_hit_at, hit_count, record, vector)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.id, entry.category, entry.created_at, entry.expires_at,
                entry.last_hit_at or entry.created_at, entry.hit_count,
                dumps_record(entry), entry.vector.astype("float32").tobytes(),
            ),
        )

    def _put(self, entry: CacheEntry) -> None:
        conn = self._connect()
        with conn:
            self._flush_hits(conn)
            self._write(conn, entry)

    async def put(self, entry: CacheEntry) -> None:
        await self._run(self._put, entry)

    def _update(self, id: str, change: Callable[[CacheEntry], CacheEntry | None]) -> CacheEntry | None:
        conn = self._connect()
        # IMMEDIATE takes the write lock before reading: another process (say the
        # replay-examples command on the same file) cannot write in between.
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._flush_hits(conn)
            current = self._get(id)
            new = change(current) if current is not None else None
            if new is not None:
                self._write(conn, new)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return new

    async def update(self, id: str, change: Callable[[CacheEntry], CacheEntry | None]) -> CacheEntry | None:
        return await self._run(self._update, id, change)

    def _get(self, id: str) -> CacheEntry | None:
        conn = self._connect()
        row = conn.execute("SELECT record, vector, hit_count FROM entries WHERE id = ?", (id,)).fetchone()
        if row is None:
            return None
        entry = loads_entry(row[0], row[1])
        pending = self._pending_hits.get(id)
        entry.hit_count = row[2]
        if pending is not None:  # buffered hits not yet written
            entry.hit_count += pending[0]
            entry.last_hit_at = pending[1]
            if pending[2] is not None:
                entry.expires_at = pending[2]
        return entry

    async def get(self, id: str) -> CacheEntry | None:
        return await self._run(self._get, id)

    def _delete(self, ids: Sequence[str]) -> int:
        conn = self._connect()
        with conn:
            self._flush_hits(conn)
            cur = conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in ids])
            return cur.rowcount

    async def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return await self._run(self._delete, list(ids))

    def _scan_page(self, after: str, limit: int) -> list[CacheEntry]:
        conn = self._connect()
        rows = conn.execute(
            "SELECT record, vector FROM entries WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [loads_entry(r[0], r[1]) for r in rows]

    async def scan(self, page_size: int = 1000) -> AsyncIterator[CacheEntry]:
        """Every stored entry (expired ones included; the cache decides)."""
        after = ""
        while True:
            page = await self._run(self._scan_page, after, page_size)
            for entry in page:
                yield entry
            if len(page) < page_size:
                return
            after = page[-1].id

    async def record_hit(self, id: str, at: float, expires_at: float | None = None) -> None:
        # Buffered: applied with the next write, eviction query or flush.
        with self._hits_lock:
            n, _, _ = self._pending_hits.get(id, (0, at, None))
            self._pending_hits[id] = (n + 1, at, expires_at)

    def _eviction_candidates(self, category: str, order: str, limit: int) -> list[str]:
        conn = self._connect()
        with conn:
            self._flush_hits(conn)
        by = "last_hit_at" if order == "lru" else "hit_count, last_hit_at"
        rows = conn.execute(
            f"SELECT id FROM entries WHERE category = ? ORDER BY {by} LIMIT ?", (category, limit)
        ).fetchall()
        return [r[0] for r in rows]

    async def eviction_candidates(self, category: str, order: str, limit: int) -> list[str]:
        """The ``limit`` entries of ``category`` to evict first (LRU or LFU order)."""
        return await self._run(self._eviction_candidates, category, order, limit)

    def _flush(self) -> None:
        conn = self._connect()
        with conn:
            self._flush_hits(conn)

    async def flush(self) -> None:
        await self._run(self._flush)

    def _close(self) -> None:
        if self._conn is not None:
            with self._conn:
                self._flush_hits(self._conn)
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
