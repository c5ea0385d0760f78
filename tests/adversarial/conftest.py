"""Fixtures of the adversarial suite: the proxy as ``semcache serve`` runs it, in its own process.

Real CLI, real uvicorn with the server limits of :mod:`proxy.server`, the real
embedder and the default policy, in front of the engine simulator: a hostile
request meets what a deployment meets, and a stall that holds the GIL shows
in the ``/healthz`` prober of this process (:mod:`evaluation.bench.stall_harness`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluation.bench.stall_harness import proxy_process
from evaluation.replay.systems import Process

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "adversarial-admin"


@pytest.fixture(scope="package")
def proxy(tmp_path_factory, engine_sim) -> Iterator[Process]:
    """The proxy with the default policy and the real embedder, over the engine simulator."""
    env = {"SEMCACHE_ADMIN_TOKEN": ADMIN, "SEMCACHE_PERSIST_POLICY_RELOADS": "false"}
    with proxy_process(f"{engine_sim.url}/v1", tmp_path_factory.mktemp("adversarial"), env=env) as server:
        yield server


def chat(text: str, model: str = "sim-model") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
