"""Entries lost when Redis restarts, per persistence setting (issue #14 item 14), in one run.

For each setting a real redis-server gets ``--entries`` cache entries written
through :class:`semcache.RedisStore` (each ``put`` acknowledged), then is
stopped, either cleanly (SIGTERM: Redis shuts down, writing what its
persistence setting writes) or by a crash right after the last acknowledged
write (SIGKILL), and restarted on the same directory; the entries still
there are counted. Also the put rate, to show what fsync costs.

    .venv/bin/python -m evaluation.bench.bench_redis_persistence [--entries 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.replay.fleet import Redis
from semcache import CacheEntry, RedisStore

SETTINGS = {
    "none (--save '' --appendonly no)": ["--save", "", "--appendonly", "no"],
    "RDB only (redis default --save 3600 1 300 100 60 10000)": ["--save", "3600 1 300 100 60 10000",
                                                                "--appendonly", "no"],
    "AOF everysec": ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
    "AOF always": ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
}


def _entry(i: int, vector: np.ndarray) -> CacheEntry:
    return CacheEntry(id=f"e{i:06d}", tenant="t", partition="p", category="default", policy_version="1",
                      model="m", endpoint="chat", query=f"question {i}", vector=vector,
                      response={"choices": [{"message": {"content": f"answer {i} " * 20}}]},
                      embedder="bench", created_at=time.time(), expires_at=time.time() + 86400)


async def _write(url: str, n: int) -> float:
    store = RedisStore(url)
    vector = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    started = time.perf_counter()
    for i in range(n):
        await store.put(_entry(i, vector))
    took = time.perf_counter() - started
    await store.close()
    return n / took


async def _count(url: str) -> int:
    store = RedisStore(url)
    n = sum([1 async for _ in store.scan()])
    await store.close()
    return n


def run(entries: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="semcache-persist-"))
    out = {}
    for name, flags in SETTINGS.items():
        for how, sig in (("clean stop", signal.SIGTERM), ("crash (SIGKILL)", signal.SIGKILL)):
            where = work / f"{len(out)}"
            redis = Redis(where, *flags).start()
            try:
                rate = asyncio.run(_write(redis.url, entries))
            finally:
                redis.stop(sig)
            again = Redis(where, *flags, port=redis.port).start()
            try:
                found = asyncio.run(_count(again.url))
            finally:
                again.stop()
            out[f"{name}, {how}"] = {"written": entries, "lost": entries - found, "puts_per_s": round(rate)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=2000)
    args = parser.parse_args(argv)
    result = run(args.entries)
    print(json.dumps(result, indent=2))
    for name, r in result.items():
        print(f"{name:70} lost {r['lost']:5d} of {r['written']}   {r['puts_per_s']:6d} puts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
