"""The adaptive experiment's bookkeeping: burst windows and the figures it reports."""

from __future__ import annotations

from evaluation.experiments.adaptive_experiment import burst_windows, figures
from evaluation.workloads.traces import Arrival


def test_burst_windows_mark_the_dense_stretch_only():
    calm = [Arrival(t * 0.5, 10, 10) for t in range(40)]             # 2/s for 20 s
    burst = [Arrival(20 + t * 0.1, 10, 10) for t in range(50)]       # 10/s for 5 s
    after = [Arrival(25.5 + t * 0.5, 10, 10) for t in range(20)]
    marks = burst_windows(calm + burst + after, rate=2.0, factor=5.0)
    assert not any(marks[:40]) and sum(marks[40:90]) >= 40 and not any(marks[-10:])


def test_figures_count_engine_work_and_false_hits_per_part():
    def rec(i, status, correct=None, tokens=0, ttft=None):
        return {"i": i, "status": status, "correct": correct, "upstream_prompt_tokens": tokens,
                "upstream_completion_tokens": 0, "ttft_s": ttft, "http": 200}

    records = [rec(0, "miss", tokens=100, ttft=1.0), rec(1, "hit", True), rec(2, "hit", False),
               rec(3, "miss", tokens=50, ttft=3.0), rec(4, "hit", None)]
    f = figures(records, [False, True, True, True, False])
    assert f["all"]["to_engine"] == 2 and f["all"]["engine_tokens"] == 150
    assert f["all"]["false_hits"] == 1 and f["all"]["false_hit_rate"] == 0.5  # the unjudged hit is left out
    assert f["bursts"]["requests"] == 3 and f["bursts"]["to_engine"] == 1 and f["bursts"]["ttft_p50_s"] == 3.0
