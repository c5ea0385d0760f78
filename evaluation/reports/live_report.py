"""The report of a live proxy (``semcache report --from URL``), from its ``/admin/stats``.

First screen: requests, hits, tokens and money saved, latency saved, the
audited false-hit estimate. Tokens saved are the served entries' own upstream
usage; latency saved is an *estimate* (entries do not record their own
upstream latency: hits x the category's mean measured miss time, lookup to
store). Then per category: the figures, why requests missed, store refusals,
the controller (if any), the closest misses, engines, and plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.reports.report_html import (Tile, controller_table, fmt_int, fmt_rate, miss_reasons_table, near_misses_table,
                                    page, table_html)
from semcache.observe.audit import clopper_pearson_interval

DEFINITIONS = ("hit rate = hits / lookups; tokens saved = the served entries' recorded upstream usage; money saved "
               "at the given $ per million prompt / completion tokens; latency saved is an estimate: hits x mean "
               "upstream time of the category's stored misses; false-hit rate = false hits among audited hits "
               "(the proxy re-asks the engine for a share of semantic hits), with a Clopper-Pearson interval. "
               "All counts since the proxy started.")


def dollars(prompt: int, completion: int, price_in: float, price_out: float) -> float:
    return (prompt * price_in + completion * price_out) / 1e6


def false_hit_estimate(audits: dict[str, dict[str, Any]]) -> tuple[float | None, float, float, int]:
    """All categories' audits pooled: rate, 95 % interval, audits."""
    n = sum(a.get("audited") or 0 for a in audits.values())
    k = sum(a.get("audit_false_hits") or 0 for a in audits.values())
    if not n:
        return None, 0.0, 1.0, 0
    lo, hi = clopper_pearson_interval(k, n)
    return k / n, lo, hi, n


def first_screen(stats: dict[str, Any], price_in: float, price_out: float) -> list[Tile]:
    total = stats["cache"]["total"]
    audits = (stats.get("proxy") or {}).get("audits") or {}
    rate, lo, hi, n = false_hit_estimate(audits)
    saved_p, saved_c = total.get("saved_prompt_tokens", 0), total.get("saved_completion_tokens", 0)
    return [
        Tile("requests", fmt_int(total["lookups"]), f"{total['bypasses']} bypassed"),
        Tile("hits", fmt_int(total["hits"]), f"hit rate {fmt_rate(total['hit_rate'])}"),
        Tile("tokens saved", fmt_int(saved_p + saved_c), f"{saved_p:,} prompt + {saved_c:,} completion"),
        Tile("money saved", f"${dollars(saved_p, saved_c, price_in, price_out):,.2f}",
             f"at ${price_in}/M in, ${price_out}/M out"),
        Tile("latency saved", f"{total.get('latency_saved_s', 0.0):,.1f} s", "estimate (mean miss time x hits)"),
        Tile("false-hit rate", fmt_rate(rate),
             f"[{lo:.1%}, {hi:.1%}] from {n} audits" if rate is not None else "no audits yet"),
    ]


def category_table(stats: dict[str, Any], price_in: float, price_out: float) -> str:
    audits = (stats.get("proxy") or {}).get("audits") or {}
    rows = []
    for name, c in stats["cache"]["categories"].items():
        a = audits.get(name) or {}
        fhr = "-" if a.get("false_hit_rate") is None else (
            f"{a['false_hit_rate']:.3f} [{a['lower']:.3f}, {a['upper']:.3f}] "
            f"({a['audit_false_hits']} false of {a['audited']} audits, {a.get('feedback_reports', 0)} reports)")
        p, q = c.get("saved_prompt_tokens", 0), c.get("saved_completion_tokens", 0)
        refusals = ", ".join(f"{k} {v}" for k, v in (c.get("store_refusals") or {}).items()) or "-"
        lat = c.get("latency_saved_s")
        rows.append([name, c["lookups"], c["hits"], fmt_rate(c["hit_rate"]), fhr, fmt_int(p + q),
                     f"${dollars(p, q, price_in, price_out):,.2f}", "-" if lat is None else f"{lat:,.1f}",
                     c["stores"], refusals, f"{c['mean_lookup_ms']:.2f}"])
    return table_html(["category", "lookups", "hits", "hit rate", "false-hit rate [95%]", "tokens saved",
                       "money saved", "latency saved s (est.)", "stores", "store refusals", "lookup ms"], rows)


def engines_table(stats: dict[str, Any]) -> str:
    ups = (stats.get("proxy") or {}).get("upstreams") or []
    rows = []
    for u in ups:
        e = u.get("engine") or {}
        vllm = e.get("vllm_metrics")
        rows.append([u.get("base_url"), u.get("model") or "any", u.get("in_flight", "-"),
                     fmt_int(e.get("waiting")) if vllm else "not vLLM", fmt_int(e.get("running")) if vllm else "-",
                     fmt_rate(e.get("kv_usage")) if vllm else "-",
                     "-" if e.get("ttft_s") is None else f"{1000 * e['ttft_s']:.{2 if e['ttft_s'] < 0.01 else 0}f} ms", fmt_int(u.get("sent"))])
    return table_html(["engine", "model", "in flight", "queue", "running", "KV-cache use", "TTFT (window)",
                       "requests sent"], rows) if rows else "-"


def adaptive_tables(stats: dict[str, Any]) -> tuple[str, str]:
    """The controller's gauges per adaptive category and its moves, from ``proxy.adaptive``."""
    adaptive = (stats.get("proxy") or {}).get("adaptive")
    if not adaptive:
        return controller_table(stats["cache"]["categories"]), "<p class='note'>No controller in these stats.</p>"
    rows = [[n, f"{c['threshold']:.3f}", f"{c['effective_threshold']:.3f}", c.get("effective_ttl_seconds") or "-",
             c["level"], f"{c['pressure']:.2f}", c.get("signal") or "-"]
            for n, c in adaptive["categories"].items() if c.get("adaptive")]
    state = "on" if adaptive.get("enabled") else "off (kill switch)"
    state += ", dry run" if adaptive.get("dry_run") else ""
    gauges = (f"<p class='note'>Controller {state}; {adaptive.get('moves', 0)} moves since start.</p>" + table_html(
        ["category", "policy threshold", "effective threshold", "effective TTL s", "level", "pressure", "signal"],
        rows)) if rows else "<p class='note'>No category adapts under load: thresholds and TTLs are the policy's.</p>"
    moves = [[time.strftime("%H:%M:%S", time.gmtime(e["at"])), e["category"],
              ("would " if e.get("dry_run") else "") + e["action"],
              f"{e['old_threshold']:.3f} -> {e['new_threshold']:.3f}", e["reason"]]
             for e in adaptive.get("events") or []]
    moves_html = table_html(["time (UTC)", "category", "action", "threshold", "reason"], moves) if moves else (
        "<p class='note'>The controller has not moved.</p>")
    return gauges, moves_html


def plot(stats: dict[str, Any], out: Path, save: Callable[[Any, Path, str], Path]) -> list[Path]:
    """Hit rate per category; similarity of hits and of near misses, each on its own log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = stats["cache"]["categories"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    axes[0].bar(list(cats), [c["hit_rate"] for c in cats.values()])
    axes[0].set_ylabel("hit rate")
    axes[0].tick_params(axis="x", rotation=30)
    # Near misses are few next to the hits (exact repeats pile up at 1.0): on one linear
    # axis their line looked flat at zero, so each has its own panel, log scale.
    centres = (np.arange(50) + 0.5) / 50
    for ax, key, title in ((axes[1], "hit_similarity_hist", "hits"),
                           (axes[2], "near_miss_similarity_hist", "near misses (within 0.15 of threshold)")):
        for name, c in cats.items():
            counts = np.asarray(c[key], dtype=float)
            if counts.any():
                ax.step(centres, counts, where="mid", label=f"{name} ({int(counts.sum())})")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlim(0.4, 1.0)
        ax.set_xlabel("cosine similarity")
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "none yet", ha="center", transform=ax.transAxes)
    return [save(fig, out, "live_stats.png")]


def render(stats: dict[str, Any], out: Path, price_in: float, price_out: float,
           save: Callable[[Any, Path, str], Path]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cats = stats["cache"]["categories"]
    controller, moves = adaptive_tables(stats)
    shown = "query text shown" if stats["cache"]["total"].get("show_query_text") else "digests only (privacy)"
    sections = [("Per category", category_table(stats, price_in, price_out)),
                ("Why requests missed", miss_reasons_table(cats)),
                ("Controller", controller),
                ("Controller moves", moves),
                (f"Closest misses: {shown}", near_misses_table(cats)),
                ("Engines", engines_table(stats))]
    now, since = time.time(), stats["cache"]["total"].get("since")
    window = "" if since is None else (f"counts since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(since))} "
                                       f"({(now - since) / 3600:.1f} h), ")
    subtitle = f"live proxy stats: {window}read at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now))}"
    path = out / "report.html"
    path.write_text(page("semcache live proxy report", subtitle, first_screen(stats, price_in, price_out), sections,
                         plot(stats, out, save), stats, DEFINITIONS), encoding="utf-8")
    return path
