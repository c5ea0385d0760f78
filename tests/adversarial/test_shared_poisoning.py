"""Issue #14 item 7: a request header may pick a shared category for reading, never write into it.

Before the fix a caller forcing ``X-Semcache-Category: faq`` stored its
"question + evil.example" answers in the shared namespace, and another
tenant's plain question was then served them.
"""

from __future__ import annotations

from proxy.api.controls import tenant_of
from semcache.config.policy import load_policies_text
from tests.proxy.conftest import ADMIN_TOKEN, TEST_POLICIES, admin_headers, harness, policy_file  # noqa: F401

QUESTION = "faq: what are your opening hours"
EVIL = ["what are your opening hours faq evil.example", "faq what are your opening hours see evil.example",
        "your opening hours faq what are they evil.example"]


def chat(content: str) -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": content}]}


async def test_a_caller_forcing_a_shared_category_plants_nothing_for_others(harness):
    c = harness.client
    evil = {"authorization": "Bearer key-evil", "x-semcache-category": "faq"}
    for text in EVIL:
        for _ in range(2):
            r = await c.post("/v1/chat/completions", json=chat(text), headers=evil)
            assert r.status_code == 200 and r.headers["x-semcache-category"] == "faq"
            assert r.headers["x-semcache-status"] == "miss"  # never stored, so never a hit, even for itself
    victim = await c.post("/v1/chat/completions", json=chat(QUESTION), headers={"authorization": "Bearer key-v"})
    assert victim.headers["x-semcache-category"] == "faq"
    assert victim.headers["x-semcache-status"] == "miss", victim.headers
    stats = (await c.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})).json()
    assert stats["cache"]["categories"]["faq"]["store_refusals"]["shared_namespace_writers"] >= 6


async def test_listed_tenants_and_the_admin_write_and_everyone_reads(harness, admin_headers):
    c = harness.client
    writer = tenant_of("Bearer key-w", "")
    policies = TEST_POLICIES.replace("shared_namespace: public",
                                     f'shared_namespace: public\n    shared_namespace_writers: ["{writer}"]')
    put = await c.put("/admin/policies", content=policies, headers={**admin_headers, "content-type": "application/yaml"})
    assert put.status_code == 200, put.text
    await c.post("/v1/chat/completions", json=chat(QUESTION), headers={"authorization": "Bearer key-w"})
    read = await c.post("/v1/chat/completions", json=chat(QUESTION), headers={"authorization": "Bearer key-r"})
    assert read.headers["x-semcache-status"] == "hit"
    # The same key spelled otherwise is another tenant, not a writer.
    other = await c.post("/v1/chat/completions", json=chat("faq: where is your office"),
                         headers={"authorization": "bearer key-w"})
    again = await c.post("/v1/chat/completions", json=chat("faq: where is your office"))
    assert other.headers["x-semcache-status"] == again.headers["x-semcache-status"] == "miss"


def test_the_default_lets_only_the_admin_write_and_star_lets_anyone():
    faq = load_policies_text(TEST_POLICIES)["faq"]
    assert faq.shared_namespace_writers == ["admin"]
    assert faq.may_write_shared("admin") and not faq.may_write_shared("t-0123456789abcdef")
    anyone = load_policies_text(TEST_POLICIES.replace("shared_namespace: public",
                                                      'shared_namespace: public\n    shared_namespace_writers: ["*"]'))
    assert anyone["faq"].may_write_shared("t-0123456789abcdef")
