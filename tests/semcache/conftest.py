"""Fixtures for the core library tests: a real redis-server, policies, a cache."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from semcache import ManualClock, SemanticCache, SQLiteStore, load_policies_text

from .fakes import HashEmbedder
from evaluation.workloads.data import DATA

REPO = Path(__file__).resolve().parents[2]

POLICY = """
defaults:
  threshold: 0.8
  ttl_seconds: 100
  guards: {numbers: true, negation: true}
categories:
  code:
    threshold: 0.9
    eviction: lfu
    quota: {max_entries: 3}
    match: {keywords: [python]}
  private:
    cacheable: false
    match: {keywords: [secret]}
  default:
    quota: {max_entries: 50}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, for the whole session."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `bash .ci/setup --dev`")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def policies():
    return load_policies_text(POLICY, source="test-policy.yaml")


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def embedder():
    return HashEmbedder()


@pytest.fixture
async def cache(tmp_path, policies, clock, embedder):
    c = SemanticCache(policies=policies, store=SQLiteStore(tmp_path / "c.db"), embedder=embedder,
                      clock=clock, purge_interval_s=0)
    await c.start()
    yield c
    await c.close()


@pytest.fixture
async def make_cache(tmp_path, clock, embedder):
    """Factory for a started cache under a policy given as YAML text; closed at teardown."""
    made = []

    async def make(policy_text: str) -> SemanticCache:
        c = SemanticCache(policies=load_policies_text(policy_text), store=SQLiteStore(tmp_path / f"c{len(made)}.db"),
                          embedder=embedder, clock=clock, purge_interval_s=0)
        await c.start()
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()
