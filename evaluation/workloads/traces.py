"""Arrival traces in BurstGPT's CSV format: read a real one, or generate a bursty one.

Columns: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``
(newer BurstGPT files add ``Session ID,Elapsed time``: the session is read,
other extra columns are ignored). ``Timestamp`` is seconds from the start of
the trace. Rows with zero response tokens (failed calls in BurstGPT) are
skipped.

The generator is a two-state Markov-modulated Poisson process: a calm state
and a burst state at ``burst_factor`` times the rate, with exponentially
distributed state durations, which is the on/off burstiness BurstGPT
reports for conversation traffic. Token counts are log-normal, roughly
matching BurstGPT's ChatGPT medians (request ~600, response ~250 tokens).
:func:`generate_sessions` starts conversations at those arrival times and
adds their later turns after a think time (BurstGPT's session rows).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"]


@dataclass(slots=True, frozen=True)
class Arrival:
    timestamp: float
    request_tokens: int
    response_tokens: int
    model: str = "ChatGPT"
    session: str | None = None


def read_burstgpt(path: Path, limit: int | None = None) -> list[Arrival]:
    """Arrivals of a BurstGPT-format CSV, sorted by time, shifted to start at 0."""
    rows: list[Arrival] = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"Timestamp", "Request tokens", "Response tokens"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a BurstGPT CSV, missing columns {sorted(missing)}")
        for row in reader:
            response = int(float(row["Response tokens"] or 0))
            if response <= 0:
                continue
            rows.append(Arrival(float(row["Timestamp"]), int(float(row["Request tokens"] or 0)), response,
                                row.get("Model") or "ChatGPT", row.get("Session ID") or None))
    rows.sort(key=lambda a: a.timestamp)
    if limit is not None:
        rows = rows[:limit]
    start = rows[0].timestamp if rows else 0.0
    return [Arrival(a.timestamp - start, a.request_tokens, a.response_tokens, a.model, a.session) for a in rows]


def generate(n: int, *, rate: float = 20.0, burst_factor: float = 5.0, calm_s: float = 20.0,
             burst_s: float = 4.0, seed: int = 0) -> list[Arrival]:
    """``n`` arrivals at a mean calm ``rate`` per second with bursts (see module docstring)."""
    rng = random.Random(seed)
    t, bursting = 0.0, False
    switch_at = rng.expovariate(1 / calm_s)
    out = []
    while len(out) < n:
        t += rng.expovariate(rate * (burst_factor if bursting else 1.0))
        while t >= switch_at:  # state changes are independent of arrivals
            bursting = not bursting
            switch_at += rng.expovariate(1 / (burst_s if bursting else calm_s))
        request = max(1, int(rng.lognormvariate(6.4, 0.9)))   # median ~600
        response = max(1, int(rng.lognormvariate(5.5, 0.8)))  # median ~250
        out.append(Arrival(round(t, 4), request, response))
    return out


def generate_sessions(n: int, *, rate: float = 2.0, mean_turns: float = 4.0, think_s: float = 8.0,
                      seed: int = 0) -> list[Arrival]:
    """``n`` requests in conversations: sessions start as :func:`generate` arrivals (at ``rate``
    per second), each runs a geometric number of turns (mean ``mean_turns``), one turn
    ``think_s`` (exponential) after the previous; sorted by time, cut at ``n``."""
    rng = random.Random(seed + 1)
    out: list[Arrival] = []
    for i, start in enumerate(generate(n, rate=rate, seed=seed)):
        t = start.timestamp
        for turn in range(n):
            if turn and rng.random() < 1 / mean_turns:
                break
            request = start.request_tokens if turn == 0 else max(1, int(rng.lognormvariate(4.5, 0.8)))
            out.append(Arrival(round(t, 4), request, max(1, int(rng.lognormvariate(5.5, 0.8))), start.model,
                               f"s{i}"))
            t += rng.expovariate(1 / think_s)
    out.sort(key=lambda a: a.timestamp)
    return out[:n]


def write_csv(arrivals: list[Arrival], path: Path) -> None:
    sessions = any(a.session for a in arrivals)
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS + ["Session ID"] if sessions else COLUMNS)
        for a in arrivals:
            row = [f"{a.timestamp:.4f}", a.model, a.request_tokens, a.response_tokens,
                   a.request_tokens + a.response_tokens, "Conversation log"]
            w.writerow(row + [a.session or ""] if sessions else row)
