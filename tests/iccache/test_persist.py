"""The example bank round-trips through the store: load admits what is in scope, save writes only changes."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcache import ManualClock, SQLiteStore, load_policies_text
from semcache.entries.entry import CacheEntry, Feedback
from semcache.iccache import ReplayConfig, SelectionConfig, load_bank, replay_examples, save_bank
from semcache.iccache.persist import flush_utilities
from semcache.iccache.bank import scope_of
from semcache.stores import MemoryStore
from semcache.stores.base import dumps_record
from tests.iccache.helpers import DIM, config, unit

POLICIES = """
categories:
  support: {version: "2"}
  faq: {shared_namespace: public}
  chitchat: {}
  default: {}
"""
NOW = 1_700_000_000.0


def _entry(id: str, *, model: str = "big", category: str = "support", answer: str | None = None,
           endpoint: str = "chat", axis: int = 0, **extra) -> CacheEntry:
    answer = answer or f"answer of {id}"
    if endpoint == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
    else:
        choice = {"index": 0, "text": answer, "finish_reason": "stop"}
    fields = dict(
        id=id, tenant="acme", partition="p", category=category, model=model, endpoint=endpoint,
        query=f"question of {id}", vector=unit(*([0.0] * axis + [1.0])), embedder="test-embedder",
        policy_version="2" if category == "support" else "1", created_at=NOW - 100,
        response={"id": "r", "object": "chat.completion", "model": model, "choices": [choice],
                  "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}},
        prompt_tokens=7, completion_tokens=4,
    )
    fields.update(extra)
    return CacheEntry(**fields)


def _cfg():
    return config(categories={"chitchat": SelectionConfig(enabled=False)})


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "cache.db")
    yield s
    await s.close()


async def _fill(store, entries):
    for e in entries:
        await store.put(e)


async def _snapshot(store) -> dict[str, tuple]:
    """Each entry as stored: the raw SQLite row, or the serialised record and vector bytes."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            return {row[0]: row for row in conn.execute("SELECT * FROM entries")}
    return {e.id: (dumps_record(e), e.vector.tobytes()) async for e in store.scan()}


async def test_load_admits_only_the_large_models_live_in_scope_entries(store):
    await _fill(store, [
        _entry("large", axis=0),
        _entry("shared", category="faq", axis=1),
        _entry("small", model="tiny", axis=2),
        _entry("expired", axis=3, expires_at=NOW - 1),
        _entry("stale-policy", axis=4, policy_version="1"),
        _entry("unknown-category", category="gone", axis=5),
        _entry("selection-off", category="chitchat", axis=6),
        _entry("other-embedder", axis=7, embedder="another-model"),
        _entry("checked", axis=8, validated_at=NOW - 50, expires_at=NOW + 1),
    ])
    policies = load_policies_text(POLICIES)
    bank = await load_bank(store, _cfg(), policies, dim=DIM, embedder="test-embedder", clock=ManualClock(NOW))

    assert sorted(ex.id for ex in bank) == ["checked", "large", "shared"]
    assert bank.get("shared").scope == scope_of("acme", "", "public")
    assert bank.get("large").scope == scope_of("acme", "")
    assert bank.get("checked").validated and not bank.get("large").validated
    # Without an embedder identity, vectors of the right size from any embedder are taken.
    anyone = await load_bank(store, _cfg(), policies, dim=DIM, clock=ManualClock(NOW))
    assert "other-embedder" in anyone and "small" not in anyone
    assert len(await load_bank(store, _cfg(), policies, dim=DIM + 1, clock=ManualClock(NOW))) == 0


async def test_save_writes_back_only_what_the_replay_changed(store):
    streamed = [{"choices": [{"index": 0, "delta": {"content": "answer of wrong"}}]}]
    await _fill(store, [
        _entry("confirm", axis=0),
        _entry("wrong", axis=1, chunks=streamed, utility=0.2, utility_uses=3,
               feedback=Feedback(positive=1)),
        _entry("wrong-text", axis=2, endpoint="completions"),
        _entry("useless", axis=3, validated_at=NOW - 10, utility=0.0, utility_uses=30,
               answer="padding " * 400, completion_tokens=800),
        _entry("good", axis=4, validated_at=NOW - 10, utility=0.9, utility_uses=7),
        _entry("shared-good", category="faq", axis=5, validated_at=NOW - 10, utility=0.7, utility_uses=3),
        _entry("small", model="tiny", axis=6),
    ])
    before = await _snapshot(store)
    clock = ManualClock(NOW)
    bank = await load_bank(store, _cfg(), load_policies_text(POLICIES), dim=DIM, clock=clock)

    async def ask_large(ex):
        return ex.answer if ex.id == "confirm" else f"new answer of {ex.id}"

    async def compare(old, new):
        return 1.0 if old == new else 0.0

    # "wrong" is validated (a user liked it) but weak; "useless" is weaker but too long for the budget.
    cfg = ReplayConfig(token_budget=100, low_utility=0.4, evict_min_scored=10, evict_utility_per_kb=0.5)
    report = await replay_examples(bank, ask_large, compare, cfg)
    assert (report.validated, sorted(report.regenerated), report.evicted) == (
        ["confirm"], ["wrong", "wrong-text"], ["useless"])

    clock.advance(5)
    counts = await save_bank(store, bank, report, clock=clock, completion_tokens={"wrong": 9})
    assert counts == {"written": 3, "deleted": 1, "missing": 0}
    after = await _snapshot(store)

    assert "useless" not in after and await store.get("useless") is None
    for untouched in ("good", "shared-good", "small"):
        assert after[untouched] == before[untouched]
    confirm = await store.get("confirm")
    assert confirm.validated_at == NOW + 5
    assert confirm.response == _entry("confirm").response and confirm.utility_uses == 0

    wrong = await store.get("wrong")
    assert wrong.response["choices"][0]["message"]["content"] == "new answer of wrong"
    assert wrong.chunks is None  # a streamed hit is rebuilt from the new response
    assert (wrong.utility, wrong.utility_uses, wrong.feedback) == (0.0, 0, Feedback())
    assert wrong.completion_tokens == 9 and wrong.response["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
    assert wrong.validated_at == NOW + 5 and wrong.query == "question of wrong"
    text = await store.get("wrong-text")
    assert text.response["choices"][0]["text"] == "new answer of wrong-text"
    assert text.completion_tokens == bank.count_tokens("new answer of wrong-text")

    # Reloaded, the rewritten entries come back validated with the new answers.
    again = await load_bank(store, _cfg(), load_policies_text(POLICIES), dim=DIM, clock=clock)
    assert again.get("wrong").answer == "new answer of wrong" and again.get("wrong").validated
    assert again.get("confirm").validated and "useless" not in again


async def test_save_without_a_report_writes_only_changed_utility(store):
    await _fill(store, [_entry("used", axis=0, utility=0.5, utility_uses=2),
                        _entry("idle", axis=1, utility=0.7, utility_uses=3)])
    before = await _snapshot(store)
    bank = await load_bank(store, _cfg(), load_policies_text(POLICIES), dim=DIM, clock=ManualClock(NOW))
    bank.record_outcome(["used"], 1.0)
    await store.delete(["idle"])

    counts = await save_bank(store, bank, clock=ManualClock(NOW))
    assert counts == {"written": 1, "deleted": 0, "missing": 1}
    used = await store.get("used")
    assert used.utility_uses == 3 and used.utility == pytest.approx(2 / 3)
    assert used.validated_at is None and used.response == _entry("used").response
    assert (await _snapshot(store)).keys() == before.keys() - {"idle"}


async def _bank(store):
    return await load_bank(store, _cfg(), load_policies_text(POLICIES), dim=DIM, clock=ManualClock(NOW))


async def test_replicas_merge_learned_utility_instead_of_overwriting_it(store):
    await _fill(store, [_entry("ex", axis=0, utility=0.5, utility_uses=2)])
    a, b = await _bank(store), await _bank(store)  # two proxy replicas, same store
    a.record_outcome(["ex"], 1.0)
    b.record_outcome(["ex"], 0.0)
    b.record_outcome(["ex"], 1.0)
    assert a.unsynced() == ["ex"] and b.unsynced() == ["ex"]
    assert await flush_utilities(store, a) == {"written": 1, "missing": 0}
    assert await flush_utilities(store, b) == {"written": 1, "missing": 0}
    stored = await store.get("ex")
    assert stored.utility_uses == 5 and stored.utility == pytest.approx((1 + 1 + 0 + 1) / 5)
    assert b.get("ex").scored == 5 and b.unsynced() == []  # b adopted a's use while writing its own
    assert await flush_utilities(store, a) == {"written": 0, "missing": 0}  # nothing new: no write

    # The offline replay job (save_bank) merges too: it does not wipe what serving learned meanwhile.
    replay = await _bank(store)
    a.record_outcome(["ex"], 1.0)
    await flush_utilities(store, a)
    replay.record_outcome(["ex"], 0.0)
    await save_bank(store, replay, clock=ManualClock(NOW))
    stored = await store.get("ex")
    assert stored.utility_uses == 7 and stored.utility == pytest.approx(4 / 7)


async def test_utility_learned_during_a_write_stays_unsynced(store):
    await _fill(store, [_entry("ex", axis=0)])
    bank = await _bank(store)
    bank.record_outcome(["ex"], 1.0)
    before = await store.get("ex")
    merged = bank.merge_into_entry(before)
    bank.record_outcome(["ex"], 0.5)  # arrives while the write is under way
    await store.put(merged)
    bank.mark_synced(before, merged)
    assert bank.unsynced() == ["ex"] and bank.get("ex").scored == 2
    await flush_utilities(store, bank)
    stored = await store.get("ex")
    assert stored.utility_uses == 2 and stored.utility == pytest.approx(0.75)


async def test_a_store_update_from_another_replica_keeps_local_unsynced_utility(store):
    await _fill(store, [_entry("ex", axis=0, utility=1.0, utility_uses=1)])
    bank = await _bank(store)
    bank.record_outcome(["ex"], 0.0)  # learned here, not yet written
    # The change feed re-delivers the entry after another replica merged two uses into it.
    bank.add_entry(_entry("ex", axis=0, utility=1.0, utility_uses=3), large_models={"big"})
    assert bank.get("ex").scored == 4 and bank.unsynced() == ["ex"]
    await flush_utilities(store, bank)  # the store still holds 1 use: ours is added to that
    assert (await store.get("ex")).utility_uses == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["score", "flush"]),
                                st.floats(0, 1, allow_nan=False)), max_size=30))
async def test_merged_utility_counts_every_scored_use_exactly_once(steps):
    """Any interleaving of outcomes and flushes over three replicas: the store ends with every use."""
    store = MemoryStore()
    await store.put(_entry("ex", axis=0, utility=0.25, utility_uses=4))
    banks = [await _bank(store) for _ in range(3)]
    uses, total = 4, 1.0
    for replica, action, score in steps:
        if action == "score":
            banks[replica].record_outcome(["ex"], score)
            uses, total = uses + 1, total + score
        else:
            await flush_utilities(store, banks[replica])
    for bank in banks:
        await flush_utilities(store, bank)
    stored = await store.get("ex")
    assert stored.utility_uses == uses and stored.utility == pytest.approx(total / uses, abs=1e-9)
