"""``semcache replay-examples`` end to end: a real SQLite store, the engine simulator as the large model
(answering from an answer book, so its answers are known) and the real MiniLM embedder.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import httpx
import pytest

from evaluation.engine_sim import SimSettings, create_app
from gpu_embed import EmbedderSettings, build_embedder
from proxy.cli import main
from proxy.upstream.engine_load import parse_vllm_metrics
from semcache import SQLiteStore
from semcache.entries.entry import CacheEntry
from semcache.iccache import approx_tokens
from tests.conftest import free_port

EMBEDDER = EmbedderSettings(backend="onnx-int8", warmup=False)
NOW = time.time()
# id: (question, stored answer, what the large model answers now or None if it is not asked, extra fields)
ENTRIES = {
    "confirm-paris": ("What is the capital of France?", "The capital of France is Paris.",
                      "Paris is the capital of France.", {}),
    "confirm-spider": ("How many legs does a spider have?", "A spider has eight legs.",
                       "A spider has eight legs.", {}),
    "changed-returns": ("Can I return an item I bought?", "Returns are accepted within 30 days of purchase.",
                        "We no longer accept returns; all sales are final.", {}),
    "poor-long": ("Tell me about shipping.", "Shipping depends on many things. " * 60, None,
                  {"validated_at": NOW - 3600, "utility": 0.02, "utility_uses": 40, "completion_tokens": 480}),
    "good": ("How do I reset my password?", "Use the 'Forgot password' link on the sign-in page.", None,
             {"validated_at": NOW - 3600, "utility": 0.9, "utility_uses": 12}),
    "small-model": ("What colour is the sky?", "Blue.", None, {"model": "small-model"}),
    "expired": ("What is 2 + 2?", "4.", None, {"expires_at": NOW - 60}),
}


@pytest.fixture(scope="module")
def vectors():
    """The stored questions' MiniLM vectors and the embedder identity the command will also use."""
    embedder = build_embedder(EMBEDDER)

    async def embed():
        try:
            return await embedder.embed([q for q, *_ in ENTRIES.values()])
        finally:
            await embedder.aclose()

    rows = asyncio.run(embed())
    return embedder.identity, dict(zip(ENTRIES, rows, strict=True))


def _entry(id: str, identity: str, vector) -> CacheEntry:
    question, answer, _, extra = ENTRIES[id]
    fields = dict(
        id=id, tenant="acme", partition="p", category="default", policy_version="1", model="big-model",
        endpoint="chat", query=question, vector=vector, embedder=identity, created_at=NOW - 7200,
        response={"id": "chatcmpl-1", "object": "chat.completion", "model": "big-model", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22}},
        prompt_tokens=12, completion_tokens=10,
    )
    fields.update(extra)
    return CacheEntry(**fields)


def _tokens(id: str) -> int:
    """The example's cost in the replay budget, as the bank counts it."""
    question, _, _, extra = ENTRIES[id]
    return approx_tokens(question) + extra.get("completion_tokens", 10)


@pytest.fixture
def setup(tmp_path, vectors):
    identity, by_id = vectors
    db = tmp_path / "cache.db"

    async def fill():
        store = SQLiteStore(db)
        for id in ENTRIES:
            await store.put(_entry(id, identity, by_id[id]))
        await store.close()

    asyncio.run(fill())
    (tmp_path / "answers.jsonl").write_text("".join(
        json.dumps({"question": q, "answer": now}) + "\n" for q, _, now, _ in ENTRIES.values() if now))
    (tmp_path / "policies.yaml").write_text("categories:\n  default: {}\n")
    (tmp_path / "iccache.yaml").write_text(
        "models:\n  - {name: big-model, role: large}\n  - {name: small-model, role: small}\n")
    (tmp_path / "semcache.yaml").write_text(f"embedder: {json.dumps(EMBEDDER.model_dump(mode='json'))}\n")
    return tmp_path


def _rows(db) -> dict[str, tuple]:
    with sqlite3.connect(db) as conn:
        return {row[0]: row for row in conn.execute("SELECT * FROM entries")}


def _args(tmp_path, url: str, *extra: str) -> list[str]:
    return ["replay-examples", "--config", str(tmp_path / "semcache.yaml"), "--iccache", str(tmp_path / "iccache.yaml"),
            "--policies", str(tmp_path / "policies.yaml"), "--sqlite-path", str(tmp_path / "cache.db"),
            "--upstream", f"big-model={url}/v1", "--log-level", "warning", *extra]


def _requests_served(url: str) -> float:
    metrics = httpx.get(url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("vllm:request_success_total{"))


def _stored(db, id: str) -> CacheEntry:
    async def get():
        store = SQLiteStore(db)
        try:
            return await store.get(id)
        finally:
            await store.close()

    return asyncio.run(get())


def test_replay_validates_regenerates_and_evicts_exactly_the_due_examples(setup, live_server, capsys):
    before = _rows(setup / "cache.db")
    sim = SimSettings(model="big-model", decode_ms_per_token=0.0, answers_file=setup / "answers.jsonl")
    with live_server(create_app(sim)) as engine:
        budget = sum(_tokens(i) for i in ("confirm-paris", "confirm-spider", "changed-returns"))
        assert main(_args(setup, engine.url, "--token-budget", str(budget))) == 0
        assert _requests_served(engine.url) == 3  # "poor-long" did not fit the rest of the budget
    out = capsys.readouterr().out
    assert "validated 2, regenerated 1, evicted 1" in out and f"tokens spent {budget} of {budget}" in out
    assert "Paris" not in out  # ids only, never prompt or answer text

    after = _rows(setup / "cache.db")
    assert "poor-long" not in after  # 40 poor uses at ~2 KB: evicted
    for untouched in ("good", "small-model", "expired"):
        assert after[untouched] == before[untouched]
    for validated in ("confirm-paris", "confirm-spider"):
        entry = _stored(setup / "cache.db", validated)
        assert entry.validated_at is not None and entry.validated_at >= NOW
        assert entry.response["choices"][0]["message"]["content"] == ENTRIES[validated][1]  # answer kept
    changed = _stored(setup / "cache.db", "changed-returns")
    assert changed.response["choices"][0]["message"]["content"] == ENTRIES["changed-returns"][2]
    assert changed.completion_tokens == 11 == changed.response["usage"]["completion_tokens"]  # the sim's count
    assert changed.validated_at is not None and changed.utility_uses == 0


def test_the_token_budget_stops_the_replay(setup, live_server, capsys):
    before = _rows(setup / "cache.db")
    sim = SimSettings(model="big-model", decode_ms_per_token=0.0, answers_file=setup / "answers.jsonl")
    with live_server(create_app(sim)) as engine:
        # Unvalidated examples go first, by id: "changed-returns", "confirm-paris", then "confirm-spider".
        budget = _tokens("changed-returns") + _tokens("confirm-paris")
        assert main(_args(setup, engine.url, "--token-budget", str(budget))) == 0
        assert _requests_served(engine.url) == 2
    assert "validated 1, regenerated 1, evicted 1" in capsys.readouterr().out
    after = _rows(setup / "cache.db")
    assert after["confirm-spider"] == before["confirm-spider"]  # no budget left: untouched, still unvalidated
    assert _stored(setup / "cache.db", "confirm-paris").validated_at is not None


def test_dry_run_writes_nothing(setup, live_server, capsys):
    before = _rows(setup / "cache.db")
    sim = SimSettings(model="big-model", decode_ms_per_token=0.0, answers_file=setup / "answers.jsonl")
    with live_server(create_app(sim)) as engine:
        assert main(_args(setup, engine.url, "--token-budget", "100000", "--dry-run")) == 0
    out = capsys.readouterr().out
    # With budget to spare the weak "poor-long" is re-asked too: the sim's new answer replaces it, so it stays.
    assert "regenerated: changed-returns poor-long" in out and "evicted 0" in out
    assert "dry run: nothing written" in out
    assert _rows(setup / "cache.db") == before


def test_a_busy_large_model_is_left_alone_until_max_seconds(setup, live_server, capsys):
    before = _rows(setup / "cache.db")
    # One request at a time; three clients keep asking until the command is done, so the queue
    # never drains however long the command takes to start on a loaded machine.
    sim = SimSettings(model="big-model", max_batch=1, decode_ms_per_token=5.0, default_max_tokens=40)
    stop = threading.Event()
    with live_server(create_app(sim)) as engine:
        def load():
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    client.post(engine.url + "/v1/chat/completions",
                                json={"model": "big-model", "messages": [{"role": "user", "content": "busy"}]})

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 10
        while parse_vllm_metrics(httpx.get(engine.url + "/metrics").text).waiting == 0:
            assert time.monotonic() < deadline, "the simulator never queued a request"
            time.sleep(0.02)
        try:
            code = main(_args(setup, engine.url, "--token-budget", "100000", "--max-seconds", "0.5"))
        finally:
            stop.set()
        for w in workers:
            w.join()
    out = capsys.readouterr().out
    assert code == 0 and "validated 0, regenerated 0, evicted 1; tokens spent 0" in out
    assert "stopped early: --max-seconds reached" in out and "waited" in out
    after = _rows(setup / "cache.db")
    assert set(before) - set(after) == {"poor-long"}  # eviction needs no model; nothing else changed
    assert all(after[i] == before[i] for i in after)


def test_an_unreachable_large_model_stops_the_run_with_an_error_but_keeps_the_eviction(setup, capsys):
    before = _rows(setup / "cache.db")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: no /metrics (idle), and no answers
    assert main(_args(setup, dead, "--token-budget", "100000")) == 1
    out = capsys.readouterr().out
    assert "validated 0, regenerated 0, evicted 1" in out and "stopped early: upstream" in out
    assert "unreachable" in out
    after = _rows(setup / "cache.db")
    assert set(before) - set(after) == {"poor-long"} and all(after[i] == before[i] for i in after)


def test_replay_without_an_iccache_config_is_a_clear_error(setup, capsys):
    args = _args(setup, "http://127.0.0.1:9", "--token-budget", "10")
    i = args.index("--iccache")
    del args[i:i + 2]
    assert main(args) == 2
    assert "needs the IC-Cache config: --iccache FILE" in capsys.readouterr().err
    assert main(_args(setup, "http://127.0.0.1:9", "--token-budget", "-1")) == 2
    assert "--token-budget" in capsys.readouterr().err


def test_serve_passes_iccache_into_the_settings(tmp_path, monkeypatch):
    import proxy.app
    import proxy.server

    seen = {}
    monkeypatch.setattr(proxy.app, "create_app", lambda settings: seen.setdefault("settings", settings))
    monkeypatch.setattr(proxy.server, "serve", lambda app, settings: None)  # no real server
    assert main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--iccache", str(tmp_path / "ic.yaml"),
                 "--log-level", "warning"]) == 0
    assert seen["settings"].iccache == tmp_path / "ic.yaml"
