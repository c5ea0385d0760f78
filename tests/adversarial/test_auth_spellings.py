"""Issue #14 item 9: a tenant (and the key check vouching for it) follows the exact Authorization header.

Before the fix ``simkey``, ``bearer simkey`` and ``Bearer  simkey`` hashed to the
tenant of ``Bearer simkey``, which the upstream had vouched for, so callers the
upstream answers 401 were served that tenant's cached answers.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.api.controls import ANONYMOUS, tenant_of
from proxy.app import create_app
from proxy.settings import ProxySettings

SPELLINGS = ["simkey", "bearer simkey", "Bearer  simkey", "BEARER simkey", "Bearer\tsimkey", "Basic simkey"]


def test_every_other_spelling_of_a_key_is_another_tenant():
    canonical = tenant_of("Bearer simkey", "salt")
    tenants = {tenant_of(h, "salt") for h in SPELLINGS}
    assert canonical not in tenants and len(tenants) == len(SPELLINGS)
    assert tenant_of("Bearer simkey", "other-salt") != canonical
    assert tenant_of(None, "s") == tenant_of("", "s") == ANONYMOUS
    assert tenant_of("Bearer ", "s") != ANONYMOUS  # a header was sent: the upstream judges it, not us


@pytest.mark.slow
def test_spellings_the_upstream_rejects_get_its_401_not_the_cached_answer(tmp_path: Path, live_server):
    sim = SimSettings(model="m", decode_ms_per_token=0.2, default_max_tokens=8, api_key="simkey")
    (tmp_path / "p.yaml").write_text("defaults: {threshold: 0.9, cache_truncated: true}\ncategories:\n  default: {}\n")
    with live_server(create_sim_app(sim)) as engine:
        settings = ProxySettings(upstreams=[f"{engine.url}/v1"], sqlite_path=tmp_path / "c.db",
                                 policies=tmp_path / "p.yaml", log_level="warning")
        with live_server(create_app(settings)) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as c:
            body = {"model": "m", "messages": [{"role": "user", "content": "What are your opening hours?"}]}
            good = {"authorization": "Bearer simkey"}
            assert c.post("/v1/chat/completions", json=body, headers=good).headers["x-semcache-status"] == "miss"
            assert c.post("/v1/chat/completions", json=body, headers=good).headers["x-semcache-status"] == "hit"
            for spelling in ["simkey", "bearer simkey", "Bearer  simkey"]:
                denied = c.post("/v1/chat/completions", json=body, headers={"authorization": spelling})
                assert denied.status_code == 401, (spelling, denied.status_code, denied.headers)
                assert "error" in denied.json() and "choices" not in denied.json()
                assert denied.headers["x-semcache-status"] != "hit" and "x-semcache-entry" not in denied.headers
