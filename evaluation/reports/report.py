"""``semcache report``: a self-contained HTML page and PNG plots from a replay or a live proxy.

From a replay result (JSON written by ``semcache eval replay``): hit rate and
false-hit rate per category over time, similarity histograms of true hits,
false hits and misses, latency CDFs (cache vs no cache), tokens and money
saved, and each category's break-even hit rate. From a live proxy URL it
reads ``/admin/stats`` (bearer token) and plots per-category hit rates and
the hit / near-miss similarity histograms the proxy keeps.

Definitions are those of :mod:`evaluation.reports.summary` (false-hit rate = false
hits / hits).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.reports.report_html import Tile, controller_table, fmt_int, fmt_rate, miss_reasons_table, near_misses_table
from evaluation.reports.report_html import page as report_page
from evaluation.reports.summary import format_table, money, summarise
from semcache.errors import ConfigError

DEFINITIONS = ("hit rate = hits / requests; false-hit rate = false hits / hits (a hit is false when the served "
               "answer was produced for another intent); tokens saved relative to no cache (direct); break-even "
               "hit rate = measured lookup time / mean uncached request time.")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(name: str) -> str:
    """One colour per system in every plot (matplotlib's tab10 in :data:`systems.SYSTEMS` order; others grey)."""
    from evaluation.replay.systems import SYSTEMS

    return f"C{SYSTEMS.index(name)}" if name in SYSTEMS else "C7"


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_over_time(result: dict[str, Any], out: Path, window: int = 1000) -> Path:
    """Hit rate (solid) and false-hit rate (dashed) per category, in windows of requests."""
    plt = _plt()
    cats = sorted({r["category"] for s in result["systems"].values() for r in s["records"]})
    fig, axes = plt.subplots(1, len(cats), figsize=(3.2 * len(cats), 3.2), sharey=True, squeeze=False)
    for ax, cat in zip(axes[0], cats):
        for name, sysres in result["systems"].items():
            if name == "direct":
                continue
            recs = [r for r in sysres["records"] if r["category"] == cat]
            step = max(1, min(window, len(recs) // 8 or 1))
            xs, hit, fhr = [], [], []
            for k in range(0, len(recs), step):
                chunk = recs[k:k + step]
                if len(chunk) < step // 2 and xs:  # a short last window is mostly noise
                    break
                hits = [r for r in chunk if r["status"] == "hit"]
                xs.append(chunk[-1]["i"])
                hit.append(len(hits) / len(chunk))
                fhr.append(sum(r["correct"] is False for r in hits) / len(hits) if hits else 0.0)
            ax.plot(xs, hit, label=name, color=_colour(name))
            ax.plot(xs, fhr, linestyle="--", color=_colour(name))
        ax.set_title(cat)
        ax.set_xlabel("request #")
    axes[0][0].set_ylabel("hit rate (solid), false-hit rate (dashed)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, out, "hit_rate_over_time.png")


def plot_similarity(result: dict[str, Any], out: Path) -> Path:
    """Similarity of true hits, false hits and misses, one panel per cache system."""
    plt = _plt()
    names = [n for n in result["systems"] if n != "direct"]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.4 * max(1, len(names)), 3), squeeze=False)
    bins = np.linspace(0.3, 1.0, 36)
    for ax, name in zip(axes[0], names):
        recs = [r for r in result["systems"][name]["records"] if r.get("similarity") is not None]
        groups = {"true hits": [r["similarity"] for r in recs if r["status"] == "hit" and r["correct"] is True],
                  "false hits": [r["similarity"] for r in recs if r["status"] == "hit" and r["correct"] is False],
                  "misses": [r["similarity"] for r in recs if r["status"] == "miss"]}
        for label, values in groups.items():
            ax.hist(np.clip(values, 0.3, 1.0), bins=bins, alpha=0.55, label=f"{label} ({len(values)})")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    return _save(fig, out, "similarity_hist.png")


def plot_latency(result: dict[str, Any], out: Path) -> Path:
    """Empirical CDFs of time to first token and total latency per system."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, ax in zip(("ttft_s", "total_s"), axes):
        for name, sysres in result["systems"].items():
            values = np.sort([r[key] for r in sysres["records"] if r.get(key) is not None and r.get("http") == 200])
            if len(values):
                ax.plot(values * 1000, np.arange(1, len(values) + 1) / len(values), label=name, color=_colour(name))
        if not ax.lines:
            ax.text(0.5, 0.5, "no streamed requests in this run", ha="center", transform=ax.transAxes)
            continue
        ax.set_xscale("log")
        ax.set_xlabel(("time to first token" if key == "ttft_s" else "total latency") + " (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    return _save(fig, out, "latency_cdf.png")


def plot_savings(summary: dict[str, Any], spend: dict[str, float], out: Path) -> Path:
    plt = _plt()
    names = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    colours = [_colour(n) for n in names]
    axes[0].bar(names, [summary[n]["upstream_tokens"] / 1e6 for n in names], color=colours)
    axes[0].set_ylabel("upstream tokens (millions)")
    axes[1].bar(names, [spend[n] for n in names], color=colours)
    axes[1].set_ylabel("upstream spend ($)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    return _save(fig, out, "savings.png")


def _replay_first_screen(summary: dict[str, Any], spend: dict[str, float], name: str) -> list[Tile]:
    """Headline tiles of one cache system against ``direct`` (measured, on the same requests)."""
    s, direct = summary[name], summary.get("direct")
    lat = None
    if direct and direct.get("total_mean_ms") and s.get("total_mean_ms"):
        lat = (direct["total_mean_ms"] - s["total_mean_ms"]) * s["requests"] / 1000
    return [
        Tile("requests", fmt_int(s["requests"]), f"{s['errors']} errors"),
        Tile("hits", fmt_int(s["hits"]), f"hit rate {fmt_rate(s['hit_rate'])}"),
        Tile("tokens saved", fmt_int(s.get("tokens_saved")),
             f"{fmt_rate(s.get('tokens_saved_share'))} of direct" if "tokens_saved" in s else "no direct run"),
        Tile("money saved", f"${spend['direct'] - spend[name]:,.2f}" if "direct" in spend else "-",
             "at the given prices"),
        Tile("latency saved", "-" if lat is None else f"{lat:,.1f} s", "measured: direct minus cached, summed"),
        Tile("false-hit rate", fmt_rate(s["false_hit_rate"]), f"{s['false_hits']} false of {s['hits']} hits "
             "(ground truth)"),
    ]


def report_from_result(result: dict[str, Any], out: Path, price_in: float, price_out: float) -> Path:
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(result)
    spend = money(summary, price_in, price_out)
    steps = [lambda: plot_over_time(result, out), lambda: plot_similarity(result, out),
             lambda: plot_latency(result, out), lambda: plot_savings(summary, spend, out)]
    images = [step() for step in tqdm(steps, desc="plots", leave=False)]
    lines = [f"{n:<13} ${v:,.2f}" for n, v in spend.items()]
    breakeven = [f"{n:<13} " + "  ".join(f"{c} {v:.4f}" for c, v in s["break_even"].items())
                 for n, s in summary.items() if s.get("break_even")]
    cached = [n for n in summary if n != "direct"]
    tiles = _replay_first_screen(summary, spend, "semcache" if "semcache" in summary else cached[0]) if cached else []
    sections = [("Summary", f"<pre>{html.escape(format_table(summary))}</pre>"),
                ("Spend", f"<pre>upstream spend at ${price_in}/M prompt, ${price_out}/M completion tokens:\n"
                          + html.escape("\n".join(lines)) + "</pre>"),
                ("Break-even hit rate per category (lookup ms / uncached ms)",
                 "<pre>" + html.escape("\n".join(breakeven) or "-") + "</pre>")]
    for name in cached:
        cats = ((result["systems"][name].get("admin_stats") or {}).get("cache") or {}).get("categories")
        if cats:
            sections += [(f"Why requests missed ({name})", miss_reasons_table(cats)),
                         (f"Controller ({name})", controller_table(cats)),
                         (f"Closest misses ({name})", near_misses_table(cats))]
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    path = out / "report.html"
    title = "semcache replay report"
    subtitle = f"replay of {json.dumps(result.get('meta'))[:300]}; first tiles: {tiles and cached[0]} vs direct"
    path.write_text(report_page(title, subtitle, tiles, sections, images, None, DEFINITIONS), encoding="utf-8")
    return path


def report_from_stats(stats: dict[str, Any], out: Path, price_in: float = 2.5, price_out: float = 10.0) -> Path:
    """Report on a live proxy's ``/admin/stats``: see :mod:`evaluation.reports.live_report`."""
    from evaluation.reports.live_report import render

    return render(stats, out, price_in, price_out, _save)


def proxy_root(url: str) -> str:
    """The proxy's root URL: the ``/v1`` base URL clients are given works too."""
    root = url.rstrip("/")
    for suffix in ("/admin/stats", "/admin", "/v1"):
        root = root.removesuffix(suffix)
    return root


def fetch_stats(url: str, token: str | None, timeout_s: float = 10.0) -> dict[str, Any]:
    """A live proxy's ``/admin/stats``; every way it can fail is a :class:`ConfigError` saying why."""
    import httpx

    if not token:
        raise ConfigError("a live report reads /admin/stats, which needs the proxy's admin token: "
                          "give --admin-token or set SEMCACHE_ADMIN_TOKEN")
    stats_url = proxy_root(url) + "/admin/stats"
    try:
        resp = httpx.get(stats_url, headers={"authorization": f"Bearer {token}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{stats_url}: cannot reach the proxy: {exc or type(exc).__name__}") from exc
    if resp.status_code == 401:
        raise ConfigError(f"{stats_url}: the admin token was rejected (401)")
    if resp.status_code == 404:
        raise ConfigError(f"{stats_url}: not found (404): the proxy's admin API is off (start it with "
                          "SEMCACHE_ADMIN_TOKEN set) or the URL is not a semcache proxy")
    if resp.status_code != 200:
        raise ConfigError(f"{stats_url}: HTTP {resp.status_code}")
    try:
        stats = resp.json()
    except ValueError:
        stats = None
    if not (isinstance(stats, dict) and isinstance(stats.get("cache"), dict)
            and isinstance(stats["cache"].get("categories"), dict)):
        raise ConfigError(f"{stats_url}: the answer is not semcache's /admin/stats")
    return stats


def read_result(path: Path) -> dict[str, Any]:
    """A replay result written by ``semcache eval replay``, or a :class:`ConfigError` saying what is wrong."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(result, dict) or not isinstance(result.get("systems"), dict) or "meta" not in result:
        raise ConfigError(f"{path}: not a replay result (expected the JSON `semcache eval replay` writes)")
    return result


def run_cli(args: Any) -> int:
    source = args.source
    if source.startswith(("http://", "https://")):
        token = args.admin_token or os.environ.get("SEMCACHE_ADMIN_TOKEN")
        page = report_from_stats(fetch_stats(source, token), args.out, args.price_in, args.price_out)
    else:
        page = report_from_result(read_result(Path(source)), args.out, args.price_in, args.price_out)
    print(f"report: {page}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="render an HTML report with plots from a replay result or a live proxy")
    p.add_argument("--from", dest="source", required=True,
                   help="replay result JSON, or a live proxy's URL (http://HOST:PORT, /v1 suffix allowed)")
    p.add_argument("--out", type=Path, required=True, help="output directory (report.html + PNGs)")
    p.add_argument("--admin-token", help="bearer token for a live proxy's /admin (or SEMCACHE_ADMIN_TOKEN)")
    p.add_argument("--price-in", type=float, default=2.5, help="$ per million prompt tokens (default 2.5)")
    p.add_argument("--price-out", type=float, default=10.0, help="$ per million completion tokens (default 10)")
    p.set_defaults(handler=run_cli)
