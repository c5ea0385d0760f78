"""GPTCache as a replay baseline: its threshold mapping, its loopback server over real HTTP, a replay row.

These need the ``gptcache`` extra, which ``bash .ci/setup --dev`` installs:
they fail (never skip) without it, so CI cannot silently drop the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from evaluation.reports import summary
from evaluation.workloads import traces, workload
from evaluation.replay.gptcache_system import GPTCacheCore, create_app, gptcache_threshold_to_cosine, missing_backends
from evaluation.replay.replay import replay

ITALY = "What is the capital of Italy?"
ITALY_REWORDED = "What's the capital city of Italy?"
BREAD = "How long should sourdough bread proof in the fridge?"


def test_extra_is_installed():
    assert missing_backends() == [], "run bash .ci/setup --dev (it installs the gptcache extra)"


def test_missing_backend_is_named_so_replay_can_skip_the_system(monkeypatch):
    import importlib.util

    from evaluation.replay import systems

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    why = systems.gptcache_missing()
    assert why is not None and "faiss" in why and ".[gptcache]" in why


def test_building_gptcache_never_runs_pip_or_reaches_a_hub(tmp_path):
    # gptcache pip-installs a backend it cannot import; with the extra present it must not try,
    # and our server must not construct its hub-downloading default embedding.
    code = f"""
import gptcache.utils
def refuse(package, *a, **k):
    raise SystemExit("gptcache tried to pip install " + package)
gptcache.utils.prompt_install = refuse
from evaluation.replay.gptcache_system import GPTCacheCore
core = GPTCacheCore({str(tmp_path)!r}, 0.8, dim=8, max_size=10)
print("ok", type(core.cache.data_manager).__name__, type(core.cache.data_manager.v).__name__)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["ok", "SSDataManager", "Faiss"]


def _unit(cos: float) -> np.ndarray:
    """A 4-d unit vector at cosine ``cos`` from e1."""
    return np.array([cos, np.sqrt(1 - cos * cos), 0, 0], dtype=np.float32)


async def test_threshold_is_cosine_two_t_minus_one(tmp_path):
    core = GPTCacheCore(tmp_path, 0.8, dim=4, max_size=100)
    try:
        assert gptcache_threshold_to_cosine(0.8) == pytest.approx(0.6)
        assert await core.get("stored", _unit(1.0), {}) == (None, None)
        await core.put("stored", _unit(1.0), "the answer")
        answer, score = await core.get("near", _unit(0.62), {})
        assert answer == "the answer" and 2 * score - 1 == pytest.approx(0.62, abs=1e-4)
        assert await core.get("far", _unit(0.58), {}) == (None, None)
    finally:
        core.close()


@pytest.fixture(scope="module")
def gptcache_server(engine_sim, live_server, tmp_path_factory):
    app = create_app(engine_sim.url + "/v1", tmp_path_factory.mktemp("gptcache"), 0.8)
    with live_server(app) as server:
        yield server


def _chat(url: str, text: str, **extra) -> httpx.Response:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 40, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def _stream(url: str, text: str) -> tuple[httpx.Headers, list[dict], str]:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 40,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
        headers = resp.headers
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join((c.get("delta") or {}).get("content") or "" for ch in chunks for c in ch.get("choices") or [])
    return headers, chunks, text


def test_repeat_and_paraphrase_hit_unrelated_misses(gptcache_server, engine_sim):
    url = gptcache_server.url
    first = _chat(url, ITALY)
    assert first.status_code == 200 and first.headers["x-semcache-status"] == "miss"
    assert first.json()["usage"]["completion_tokens"] > 0
    answer = first.json()["choices"][0]["message"]["content"]

    repeat = _chat(url, ITALY)
    assert repeat.headers["x-semcache-status"] == "hit"
    assert float(repeat.headers["x-semcache-similarity"]) == pytest.approx(1.0, abs=1e-3)
    assert repeat.json()["choices"][0]["message"]["content"] == answer
    assert repeat.json()["usage"]["completion_tokens"] == 0

    reworded = _chat(url, ITALY_REWORDED)
    assert reworded.headers["x-semcache-status"] == "hit"
    assert 0.6 <= float(reworded.headers["x-semcache-similarity"]) < 0.999
    assert reworded.json()["choices"][0]["message"]["content"] == answer
    fresh = _chat(engine_sim.url, ITALY_REWORDED).json()["choices"][0]["message"]["content"]
    assert fresh != answer  # the engine would have answered the rewording differently: this came from the cache

    assert _chat(url, BREAD).headers["x-semcache-status"] == "miss"


def test_streamed_miss_is_relayed_and_stored_then_streamed_hit(gptcache_server, engine_sim):
    url, text = gptcache_server.url, "Explain the difference between TCP and UDP in two sentences."
    headers, chunks, streamed = _stream(url, text)
    assert headers["x-semcache-status"] == "miss"
    assert len(chunks) > 3 and chunks[-1]["usage"]["completion_tokens"] > 0  # relayed piece by piece
    assert streamed == _chat(engine_sim.url, text).json()["choices"][0]["message"]["content"]

    headers, chunks, replayed = _stream(url, text)
    assert headers["x-semcache-status"] == "hit" and replayed == streamed
    assert chunks[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert _chat(url, text).json()["choices"][0]["message"]["content"] == streamed  # one entry for both forms


def test_completions_endpoint_and_unkeyable_request_bypass(gptcache_server):
    url, prompt = gptcache_server.url, "Once upon a time in a small harbour town"
    body = {"model": "sim-model", "prompt": prompt, "max_tokens": 20}
    first = httpx.post(url + "/v1/completions", json=body, timeout=60)
    second = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert [first.headers["x-semcache-status"], second.headers["x-semcache-status"]] == ["miss", "hit"]
    assert second.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    listed = httpx.post(url + "/v1/completions", json={**body, "prompt": [prompt]}, timeout=60)
    assert listed.headers["x-semcache-status"] == "bypass"


def test_stats_report_lookups_and_gptcache_counters(gptcache_server):
    _chat(gptcache_server.url, "Name three prime numbers.")
    stats = httpx.get(gptcache_server.url + "/admin/stats", timeout=10).json()
    lookups = stats["cache"]["categories"]["default"]
    assert lookups["lookups"] >= 1 and lookups["mean_lookup_ms"] > 0
    assert stats["gptcache"]["cosine_threshold"] == pytest.approx(0.6)
    assert stats["gptcache"]["report"]["search"]["count"] >= 1


INTENTS = {"qa": [["What is the capital of Italy?", "What's the capital city of Italy?"],
                  ["How do I reverse a list in Python?", "How can I reverse a Python list?"],
                  ["Why is the sky blue?"]],
           "chat": [["Write a haiku about autumn leaves."], ["Tell me a joke about penguins."]]}


def test_small_replay_has_a_gptcache_row(tmp_path):
    arrivals = traces.generate(40, rate=40.0, seed=7)
    reqs = workload.build(arrivals, INTENTS, mix={"qa": 0.6, "chat": 0.4}, zipf={"qa": 1.0, "chat": 1.0},
                          paraphrase_rate=0.5, max_response_tokens=24, seed=7)
    workload.write(reqs, tmp_path / "wl", arrivals, {"test": True})
    result = replay(tmp_path / "wl", systems_wanted=["direct", "gptcache"], speedup=20, concurrency=8, limit=None,
                    best_threshold=0.8, policy=Path("policies/default.yaml"), decode_ms=0.2, max_batch=16,
                    deadline_s=60, progress=False)
    recs = result["systems"]["gptcache"]["records"]
    assert len(recs) == 40 and all(r["http"] == 200 for r in recs)
    assert {r["status"] for r in recs} == {"hit", "miss"}
    hits = [r for r in recs if r["status"] == "hit"]
    assert all(r["similarity"] >= 0.6 and r["correct"] is not None and r["ttft_s"] is not None for r in hits)
    assert "similarity_threshold 0.8 (cosine >= 0.60)" in result["systems"]["gptcache"]["policy"]
    row = summary.summarise(result)["gptcache"]
    assert row["hits"] == len(hits) and row["tokens_saved"] > 0 and row["lookup_ms"] > 0
    assert "gptcache" in summary.format_table(summary.summarise(result))
