"""The lookup-log benchmark runs end to end at a small size and prints both sides."""

from __future__ import annotations

from evaluation.bench.bench_lookup_log import run


async def test_bench_prints_log_off_and_on_and_a_replay(capsys):
    await run(entries=300, lookups=200, block=50, seed=1)
    out = capsys.readouterr().out
    assert "log off:" in out and "log on :" in out
    assert "what-if replay of 200 records" in out and "undetermined 0" in out
