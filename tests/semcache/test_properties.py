"""Property tests: identical text hits in its own partition and never outside it."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcache import CacheRequest, ManualClock, SemanticCache, SQLiteStore, load_policies_text

from .fakes import HashEmbedder

POLICY = "categories: {default: {threshold: 0.5, ttl_seconds: null, quota: {max_entries: 100000}}}"
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60).filter(
    lambda t: t.strip())
contexts = st.fixed_dictionaries({
    "tenant": st.sampled_from(["a", "b"]),
    "namespace": st.sampled_from([None, "n"]),
    "model": st.sampled_from(["m1", "m2"]),
    "temperature": st.sampled_from([None, 0.0, 0.7]),
    "system": st.sampled_from([None, "be brief", "be verbose"]),
})


def make(text, ctx):
    messages = [{"role": "system", "content": ctx["system"]}] if ctx["system"] else []
    messages.append({"role": "user", "content": text})
    body = {"model": ctx["model"], "messages": messages}
    if ctx["temperature"] is not None:
        body["temperature"] = ctx["temperature"]
    return CacheRequest("chat", body, tenant=ctx["tenant"], namespace=ctx["namespace"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, stored_ctx=contexts, probe_ctx=contexts)
async def test_identical_text_hits_inside_partition_only(tmp_path_factory, text, stored_ctx, probe_ctx):
    path = tmp_path_factory.mktemp("prop") / "c.db"
    cache = SemanticCache(policies=load_policies_text(POLICY), store=SQLiteStore(path), embedder=HashEmbedder(),
                          clock=ManualClock(), purge_interval_s=0)
    await cache.start()
    try:
        req = make(text, stored_ctx)
        res = await cache.lookup(req)
        response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                 "finish_reason": "stop"}]}
        assert (await cache.store(req, res, response=response)).stored
        assert (await cache.lookup(make(text, stored_ctx))).status == "hit"
        probe = await cache.lookup(make(text, probe_ctx))
        assert (probe.status == "hit") == (probe_ctx == stored_ctx)
    finally:
        await cache.close()


def test_import_semcache_does_not_import_http_packages():
    code = ("import sys, semcache; bad = [m for m in ('fastapi', 'starlette', 'httpx', 'uvicorn') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
