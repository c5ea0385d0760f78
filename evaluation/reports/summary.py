"""Numbers from a replay result: per system and per category, plus break-even hit rates.

``false_hit_rate = false hits / hits`` (as in :mod:`evaluation.replay.pairs`); a hit
whose correctness is unknown counts in ``hits`` but in neither true nor false.
Tokens saved are relative to ``direct`` on the same requests when it ran,
else the hits' would-be cost is unknown and only upstream tokens are given.

Break-even: a cache pays for a category when
``hit_rate x saved_cost >= lookup_cost``, so the break-even hit rate is
``lookup_cost / saved_cost``, with ``lookup_cost`` the proxy's measured mean
lookup time (admin stats) and ``saved_cost`` the mean end-to-end latency of
the category's requests without a cache (``direct``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np


def _block(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    hits = [r for r in records if r["status"] == "hit"]
    true = sum(1 for r in hits if r["correct"] is True)
    false = sum(1 for r in hits if r["correct"] is False)
    totals = [r["total_s"] for r in records if r.get("http") == 200]
    ttfts = [r["ttft_s"] for r in records if r.get("ttft_s") is not None]
    return {
        "requests": n,
        "errors": sum(1 for r in records if r.get("http") != 200),
        "hits": len(hits),
        "true_hits": true,
        "false_hits": false,
        "hit_rate": len(hits) / n if n else 0.0,
        "false_hit_rate": false / len(hits) if hits else 0.0,
        "upstream_tokens": sum(r["upstream_prompt_tokens"] + r["upstream_completion_tokens"] for r in records),
        "upstream_completion_tokens": sum(r["upstream_completion_tokens"] for r in records),
        "ttft_p50_ms": 1000 * float(np.median(ttfts)) if ttfts else None,
        "total_p50_ms": 1000 * float(np.median(totals)) if totals else None,
        "total_p95_ms": 1000 * float(np.percentile(totals, 95)) if totals else None,
        "total_mean_ms": 1000 * float(np.mean(totals)) if totals else None,
    }


def _lookup_ms(stats: dict[str, Any] | None) -> float | None:
    """Mean lookup time over all categories, weighted by lookups (from ``/admin/stats``)."""
    cats = ((stats or {}).get("cache") or {}).get("categories") or {}
    lookups = sum(c["lookups"] for c in cats.values())
    return sum(c["mean_lookup_ms"] * c["lookups"] for c in cats.values()) / lookups if lookups else None


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """system -> {overall block, categories: {category -> block}, lookup_ms}."""
    out: dict[str, Any] = {}
    for name, sysres in result["systems"].items():
        records = sysres["records"]
        by_cat: dict[str, list] = defaultdict(list)
        for r in records:
            by_cat[r["category"]].append(r)
        out[name] = {**_block(records), "categories": {c: _block(rs) for c, rs in sorted(by_cat.items())},
                     "lookup_ms": _lookup_ms(sysres.get("admin_stats"))}
    direct = out.get("direct")
    direct_records = result["systems"].get("direct", {}).get("records", [])
    direct_cost = {r["i"]: r["upstream_prompt_tokens"] + r["upstream_completion_tokens"] for r in direct_records}
    for name, s in out.items():
        if direct:
            # A failed request saved nothing: it counts at what direct spent on it, not at 0.
            failed = sum(direct_cost.get(r["i"], 0) for r in result["systems"][name]["records"]
                         if r.get("http") != 200)
            s["tokens_saved"] = direct["upstream_tokens"] - s["upstream_tokens"] - failed
            s["tokens_saved_share"] = s["tokens_saved"] / direct["upstream_tokens"] if direct["upstream_tokens"] else 0
        if direct and s.get("lookup_ms"):
            s["break_even"] = {c: s["lookup_ms"] / d["total_mean_ms"]
                               for c, d in direct["categories"].items() if d["total_mean_ms"]}
    return out


def money(summary: dict[str, Any], price_in: float, price_out: float) -> dict[str, float]:
    """Upstream spend per system at prices per million prompt / completion tokens."""
    spend = {}
    for name, s in summary.items():
        prompt = s["upstream_tokens"] - s["upstream_completion_tokens"]
        spend[name] = (prompt * price_in + s["upstream_completion_tokens"] * price_out) / 1e6
    return spend


def format_table(summary: dict[str, Any]) -> str:
    """Per-system headline table, then hit rate / false-hit rate per category."""
    lines = [f"{'system':<13}{'reqs':>7}{'hit rate':>9}{'FHR':>7}{'false':>7}{'upstream tok':>14}{'saved':>7}"
             f"{'TTFT p50':>10}{'p50 ms':>8}{'p95 ms':>8}{'lookup':>8}"]
    for name, s in summary.items():
        saved = f"{s['tokens_saved_share']:.1%}" if "tokens_saved_share" in s else "-"
        lookup = f"{s['lookup_ms']:.1f}" if s.get("lookup_ms") else "-"
        f = lambda v: f"{v:.0f}" if v is not None else "-"  # noqa: E731
        lines.append(f"{name:<13}{s['requests']:>7}{s['hit_rate']:>9.3f}{s['false_hit_rate']:>7.3f}"
                     f"{s['false_hits']:>7}{s['upstream_tokens']:>14}{saved:>7}{f(s['ttft_p50_ms']):>10}"
                     f"{f(s['total_p50_ms']):>8}{f(s['total_p95_ms']):>8}{lookup:>8}")
    cats = sorted({c for s in summary.values() for c in s["categories"]})
    lines += ["", "hit rate / false-hit rate per category:", f"{'system':<13}" + "".join(f"{c:>16}" for c in cats)]
    for name, s in summary.items():
        cells = []
        for c in cats:
            b = s["categories"].get(c)
            cells.append(f"{b['hit_rate']:.3f}/{b['false_hit_rate']:.3f}".rjust(16) if b else "-".rjust(16))
        lines.append(f"{name:<13}" + "".join(cells))
    return "\n".join(lines)
