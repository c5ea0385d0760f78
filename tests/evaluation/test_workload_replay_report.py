"""Workload builder, live replay on a small slice, and the report rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.reports import report, summary
from evaluation.workloads import traces, workload
from evaluation.replay.replay import replay
from evaluation.workloads.data import DATA

needs_data = pytest.mark.skipif(not (DATA / "qqp" / "qqp-dev.jsonl").exists(), reason="shared data not present")

INTENTS = {"qa": [["how to sleep on a plane", "best way to sleep on a plane"], ["what is rust"]],
           "chat": [["write a poem about cats"], ["tell me a joke"], ["draft an email"]]}


def test_generated_trace_is_bursty_and_round_trips(tmp_path):
    arrivals = traces.generate(3000, rate=10.0, seed=1)
    gaps = [b.timestamp - a.timestamp for a, b in zip(arrivals, arrivals[1:])]
    assert all(g >= 0 for g in gaps)
    # A Poisson process has a coefficient of variation of 1; bursts push it above.
    import statistics
    assert statistics.pstdev(gaps) / statistics.mean(gaps) > 1.1
    traces.write_csv(arrivals, tmp_path / "t.csv")
    back = traces.read_burstgpt(tmp_path / "t.csv")
    assert [a.response_tokens for a in back] == [a.response_tokens for a in arrivals]


def test_burstgpt_reader_skips_failed_rows_and_shifts_time(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "10,ChatGPT,100,50,150,Conversation log\n5,GPT-4,80,0,80,API log\n12,GPT-4,20,30,50,API log\n")
    rows = traces.read_burstgpt(path)
    assert [(a.timestamp, a.request_tokens, a.response_tokens) for a in rows] == [(0.0, 100, 50), (2.0, 20, 30)]


def test_build_ground_truth_rules():
    arrivals = traces.generate(400, seed=2)
    reqs = workload.build(arrivals, INTENTS, mix={"qa": 0.5, "chat": 0.5}, zipf={"qa": 1.0, "chat": 0.0},
                          paraphrase_rate=1.0, seed=3)
    assert len(reqs) == 400 and {r.category for r in reqs} == {"qa", "chat"}
    by_intent = {}
    for r in reqs:
        by_intent.setdefault(r.intent, []).append(r)
        assert r.text in sum(INTENTS[r.category], [])
    for rs in by_intent.values():
        assert len({r.response_tokens for r in rs}) == 1  # max_tokens is part of the key
    texts = {r.text for r in by_intent["qa-0"]} | {r.text for r in by_intent.get("qa-1", [])}
    assert len(texts) >= 2  # with paraphrase_rate 1 the two-rewording intent shows both
    book = workload.answer_book(reqs)
    assert len({b["answer"] for b in book}) == len(book)


@needs_data
def test_small_replay_records_and_report(tmp_path):
    arrivals = traces.generate(160, rate=40.0, seed=4)
    reqs = workload.build(arrivals, workload.load_intents(DATA), pool=20, max_response_tokens=24, seed=4)
    workload.write(reqs, tmp_path / "wl", arrivals, {"test": True})
    result = replay(tmp_path / "wl", systems_wanted=["direct", "semcache"], speedup=20, concurrency=16,
                    limit=None, best_threshold=0.8, policy=Path("policies/default.yaml"), decode_ms=0.2,
                    max_batch=32, deadline_s=60, progress=False, logs_to=tmp_path / "logs")
    assert {p.name for p in (tmp_path / "logs").iterdir()} >= {"engine-sim.log", "semcache.log"}
    direct, cached = result["systems"]["direct"]["records"], result["systems"]["semcache"]["records"]
    assert len(direct) == len(cached) == 160
    assert all(r["http"] == 200 and r["status"] == "direct" for r in direct)
    assert {r["status"] for r in cached} <= {"hit", "miss"}
    hits = [r for r in cached if r["status"] == "hit"]
    assert hits and all(r["upstream_completion_tokens"] == 0 and r["similarity"] is not None for r in hits)
    assert all(r["correct"] is not None for r in hits)
    s = summary.summarise(result)
    assert s["semcache"]["tokens_saved"] > 0
    assert s["semcache"]["lookup_ms"] > 0 and s["semcache"]["break_even"]
    page = report.report_from_result(json.loads(json.dumps(result)), tmp_path / "rep", 2.5, 10.0)
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4
    first = html[:html.index("<h2>")]  # the first screen, before any section
    assert f"tokens saved<b>{s['semcache']['tokens_saved']:,}</b>" in first
    for label in ("requests", "hits", "money saved", "latency saved", "false-hit rate"):
        assert f"{label}<b>" in first
    assert "Why requests missed (semcache)" in html  # from the proxy's admin stats of the run
    for name in ("hit_rate_over_time", "similarity_hist", "latency_cdf", "savings"):
        assert (tmp_path / "rep" / f"{name}.png").stat().st_size > 5000


def _rec(i, cat, status, correct, sim, total, tokens):
    return {"i": i, "t": i, "category": cat, "intent": "x", "http": 200, "status": status, "correct": correct,
            "similarity": sim, "ttft_s": total / 2, "total_s": total, "upstream_prompt_tokens": tokens,
            "upstream_completion_tokens": tokens}


def test_summary_by_hand():
    result = {"meta": {}, "systems": {
        "direct": {"records": [_rec(i, "a", "direct", None, None, 1.0, 10) for i in range(4)]},
        "semcache": {"records": [_rec(0, "a", "miss", None, 0.5, 1.0, 10), _rec(1, "a", "hit", True, 0.95, 0.01, 0),
                                 _rec(2, "a", "hit", False, 0.91, 0.01, 0), _rec(3, "a", "miss", None, 0.7, 1.0, 10)],
                     "admin_stats": {"cache": {"categories": {"default": {"lookups": 4, "mean_lookup_ms": 5.0}}}}},
    }}
    s = summary.summarise(result)["semcache"]
    assert (s["hits"], s["true_hits"], s["false_hits"]) == (2, 1, 1)
    assert s["hit_rate"] == 0.5 and s["false_hit_rate"] == 0.5
    assert s["tokens_saved"] == 40 and s["tokens_saved_share"] == 0.5
    assert s["break_even"] == {"a": pytest.approx(0.005)}  # 5 ms lookup / 1000 ms uncached


@needs_data
def test_replay_without_streaming_and_best_threshold_from_pairs(tmp_path):
    arrivals = traces.generate(60, rate=40.0, seed=5)
    reqs = workload.build(arrivals, workload.load_intents(DATA), pool=10, max_response_tokens=16, seed=5)
    workload.write(reqs, tmp_path / "wl", arrivals, {})
    pairs_json = tmp_path / "pairs.json"
    pairs_json.write_text(json.dumps({"global_sweep": {"best_f1": {"threshold": 0.83}}}))
    result = replay(tmp_path / "wl", systems_wanted=["global-best"], speedup=50, concurrency=8, limit=None,
                    best_threshold=0.8, policy=Path("policies/default.yaml"), decode_ms=0.1, max_batch=16,
                    deadline_s=60, progress=False, stream=False, best_threshold_from=pairs_json)
    assert result["meta"]["best_threshold"] == 0.83
    assert "threshold: 0.83" in result["systems"]["global-best"]["policy"]
    recs = result["systems"]["global-best"]["records"]
    assert len(recs) == 60 and all(r["http"] == 200 and r["ttft_s"] is None for r in recs)
    assert any(r["status"] == "hit" for r in recs)
    assert all(r["upstream_completion_tokens"] > 0 for r in recs if r["status"] == "miss")


def test_a_failed_request_saves_no_tokens():
    failed = {**_rec(3, "a", "error", None, None, 1.0, 0), "http": 0}
    result = {"meta": {}, "systems": {
        "direct": {"records": [_rec(i, "a", "direct", None, None, 1.0, 10) for i in range(4)]},
        "semcache": {"records": [_rec(0, "a", "miss", None, 0.5, 1.0, 10), _rec(1, "a", "hit", True, 0.95, 0.01, 0),
                                 _rec(2, "a", "miss", None, 0.7, 1.0, 10), failed]},
    }}
    s = summary.summarise(result)["semcache"]
    assert s["errors"] == 1
    assert s["tokens_saved"] == 20  # only the hit saved (direct spent 20 on it); the failure saved nothing


def test_session_trace_has_multi_turn_sessions_in_time_order_and_round_trips(tmp_path):
    arrivals = traces.generate_sessions(600, rate=2.0, mean_turns=4.0, seed=3)
    assert len(arrivals) == 600
    assert all(b.timestamp >= a.timestamp for a, b in zip(arrivals, arrivals[1:]))
    turns: dict[str, int] = {}
    for a in arrivals:
        turns[a.session] = turns.get(a.session, 0) + 1
    assert 2.0 < len(arrivals) / len(turns) < 6.0 and max(turns.values()) > 4
    traces.write_csv(arrivals, tmp_path / "s.csv")
    assert "Session ID" in (tmp_path / "s.csv").read_text().splitlines()[0]
    back = traces.read_burstgpt(tmp_path / "s.csv")
    assert [a.session for a in back] == [a.session for a in arrivals]
