"""What-if tuning routes: a prediction, then apply (the live decisions change), history and rollback."""

from __future__ import annotations

import httpx
import pytest
import yaml

from proxy.admin.tuning import PolicyHistory, TuningChange, changed_yaml
from proxy.app import create_app
from semcache import load_policies_text
from semcache.errors import RequestError
from tests.proxy.conftest import TEST_POLICIES, BagOfWordsEmbedder, make_settings

STORED = ["what is the capital of italy", "how do I sort a list in python", "how tall is mount everest"]
ASKED = ["italy capital", "python list sort order", "everest height", "what is the capital of italy"]


async def ask(client, text, store=True):
    r = await client.post("/v1/chat/completions", headers={} if store else {"cache-control": "no-store"},
                          json={"model": "sim-model", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.headers["x-semcache-status"]


async def whatif(harness, admin_headers, **body):
    r = await harness.client.post("/admin/whatif", json={"category": "default", **body}, headers=admin_headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_whatif_apply_and_rollback_change_the_live_decisions(harness, admin_headers, policy_file):
    c = harness.client
    for text in STORED:
        assert await ask(c, text) == "miss"
    # Asked without storing their answers, so the entries stay those the log saw.
    assert [await ask(c, t, store=False) for t in ASKED] == ["miss", "miss", "miss", "hit"]  # threshold 0.8

    result = await whatif(harness, admin_headers, threshold=0.5)
    assert result["current"]["threshold"] == 0.8 and result["proposed"]["threshold"] == 0.5
    base, pred = result["baseline"], result["prediction"]
    assert base["hits"] == base["recorded_hits"]  # replay at the current values = what happened
    assert pred["undetermined"] == 0 and pred["hits"] > base["hits"]
    assert pred["new_hits"] == pred["hits"] - base["hits"] and "unaudited new hits" in pred["note"]

    applied = await c.post("/admin/tuning/apply", json={"category": "default", "threshold": 0.5},
                           headers=admin_headers)
    assert applied.status_code == 200, applied.text
    assert applied.json()["persisted"] is True
    assert yaml.safe_load(policy_file.read_text())["categories"]["default"]["threshold"] == 0.5
    after = [await ask(c, t, store=False) for t in ASKED]
    assert after.count("hit") == pred["hits"] == 3  # the live proxy decides as predicted
    assert after == ["hit", "hit", "miss", "hit"]

    history = (await c.get("/admin/tuning/history", headers=admin_headers)).json()
    assert [v["change"] for v in history["versions"]][-1] == "default: threshold=0.5"
    assert history["in_force"] == history["versions"][-1]["version"] == 2
    back = await c.post("/admin/tuning/rollback", json={"version": 1}, headers=admin_headers)
    assert back.status_code == 200 and back.json()["version"] == 3
    assert [await ask(c, t, store=False) for t in ASKED] == ["miss", "miss", "miss", "hit"]  # as before the change
    assert policy_file.read_text() == TEST_POLICIES  # the exact original text, comments and all


async def test_tuning_routes_need_the_token_and_refuse_bad_input(harness, admin_headers):
    c = harness.client
    assert (await c.post("/admin/whatif", json={"category": "default"})).status_code == 401
    assert (await c.get("/admin/tuning/history", headers={"authorization": "Bearer no"})).status_code == 401
    r = await c.post("/admin/whatif", json={"category": "nope"}, headers=admin_headers)
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = await c.post("/admin/tuning/apply", json={"category": "default", "threshold": 1.5}, headers=admin_headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "threshold"
    r = await c.post("/admin/tuning/apply", json={"category": "default"}, headers=admin_headers)
    assert r.status_code == 400 and "nothing to change" in r.json()["error"]["message"]
    r = await c.post("/admin/tuning/rollback", json={"version": 9}, headers=admin_headers)
    assert r.status_code == 404
    r = await c.post("/admin/whatif", json={"category": "default", "tresh": 0.5}, headers=admin_headers)
    assert r.status_code == 400


async def test_tuning_routes_are_off_without_an_admin_token(tmp_path, policy_file):
    app = create_app(make_settings(tmp_path, policy_file, admin_token=None), embedder=BagOfWordsEmbedder())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as c:
            assert (await c.post("/admin/whatif", json={"category": "default"})).status_code == 404


def test_changed_yaml_sets_only_the_field_and_validates():
    guards = load_policies_text(TEST_POLICIES)["faq"].guards.model_dump()
    text = changed_yaml(TEST_POLICIES, "faq", TuningChange(category="faq", ttl_seconds=60).fields(guards))
    policies = load_policies_text(text)
    assert policies["faq"].ttl_seconds == 60 and policies["faq"].shared_namespace == "public"
    assert policies["default"].threshold == 0.8
    never = TuningChange.model_validate({"category": "default", "ttl_seconds": None})
    assert load_policies_text(changed_yaml(TEST_POLICIES, "default", never.fields(guards)))["default"].ttl_seconds is None
    off = TuningChange(category="faq", guards={"negation": False}).fields(guards)
    changed = load_policies_text(changed_yaml(TEST_POLICIES, "faq", off))["faq"].guards
    assert changed.negation is False and changed.model_dump() == {**guards, "negation": False}
    with pytest.raises(ValueError):
        TuningChange.model_validate({"category": "faq", "guards": {"sarcasm": True}})


def test_history_is_bounded_and_skips_repeats():
    history = PolicyHistory(size=2)
    history.note("a", "first")
    history.note("a", "same again")
    history.note("b", "second")
    history.note("c", "third")
    assert [v["version"] for v in history.listing()] == [2, 3]
    with pytest.raises(RequestError):
        history.get(1)


async def test_a_guard_switch_is_predicted_then_applied(harness, admin_headers):
    c = harness.client
    assert await ask(c, "enable two factor login on my account") == "miss"
    assert await ask(c, "disable two factor login on my account", store=False) == "miss"  # negation guard
    result = await whatif(harness, admin_headers, guards={"negation": False})
    assert result["current"]["guards"]["negation"] is True and result["proposed"]["guards"]["negation"] is False
    assert result["prediction"]["hits"] == result["baseline"]["hits"] + 1 == 1
    applied = await c.post("/admin/tuning/apply", json={"category": "default", "guards": {"negation": False}},
                           headers=admin_headers)
    assert applied.status_code == 200 and applied.json()["change"] == "default: guards={'negation': False}"
    assert await ask(c, "disable two factor login on my account", store=False) == "hit"  # as predicted


@pytest.mark.parametrize("keep_text", [False, True])
async def test_lookup_log_shows_query_text_only_when_kept(make_proxy, admin_headers, keep_text):
    async with make_proxy(lookup_log_keep_text=keep_text) as c:
        r = await c.post("/v1/chat/completions", headers={"authorization": "Bearer k"},
                         json={"model": "sim-model", "messages": [{"role": "user", "content": "secret plans"}]})
        assert r.status_code in (200, 502, 503)  # no upstream here: the lookup is recorded all the same
        assert (await c.get("/admin/tuning/lookups?category=default")).status_code == 401
        rows = (await c.get("/admin/tuning/lookups?category=default", headers=admin_headers)).json()["data"]
        assert len(rows) == 1 and rows[0]["query_digest"]
        assert rows[0]["query"] == ("secret plans" if keep_text else None)
