"""The cross-encoder behind the proxy: a rewording asked again is judged from the pair memo, shown in /metrics."""

from __future__ import annotations

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from semcache.verifier.cross_encoder import DEFAULT_DIR

from .conftest import BagOfWordsEmbedder, make_settings, metric_sample

pytestmark = pytest.mark.skipif(not (DEFAULT_DIR / "model.onnx").exists(), reason="no trained cross-encoder")

POLICY = """\
defaults:
  threshold: 0.5
  cache_truncated: true
  verifier: {enabled: true, model: cross-encoder, min_probability: 0.5}
categories:
  default: {}
"""


def ask(content: str) -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": content}], "max_tokens": 8}


async def test_a_rewording_asked_again_is_served_without_running_the_model_again(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    sim = create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=0.0, default_max_tokens=8))
    app = create_app(make_settings(tmp_path, policy, audits=False), embedder=BagOfWordsEmbedder(),
                     upstream_transport=httpx.ASGITransport(app=sim))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy",
                                     headers={"authorization": "Bearer key-a"}) as client:
            first = await client.post("/v1/chat/completions", json=ask("How do I update my payment method?"))
            assert first.headers["x-semcache-status"] == "miss"
            served = []
            for _ in range(3):
                r = await client.post("/v1/chat/completions", json=ask("how do i update my payment method please"))
                served.append((r.headers["x-semcache-status"], r.json()["choices"][0]["message"]["content"]))
            # A trap with the same words but another action: the model runs on it, and it is turned down.
            trap = await client.post("/v1/chat/completions", json=ask("how do i remove my payment method please"))
            metrics = (await client.get("/metrics")).text
    assert [s for s, _ in served] == ["hit"] * 3
    assert {c for _, c in served} == {first.json()["choices"][0]["message"]["content"]}
    assert trap.headers["x-semcache-status"] == "miss"
    assert metric_sample(metrics, "semcache_verifier_memo_lookups_total", result="hit") == 2
    assert metric_sample(metrics, "semcache_verifier_memo_lookups_total", result="miss") == 2
    assert metric_sample(metrics, "semcache_verifier_memo_pairs") == 2
