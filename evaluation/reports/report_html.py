"""The report page: a first screen of headline figures, per-category tables, then plots.

One self-contained HTML file (styles inline, images as ``data:`` URIs) that a
person can mail around. The first screen answers "what did the cache save
me": requests, hits, tokens and money saved, latency saved, false-hit
estimate; then, per category, why requests missed, the controller's moves if
the stats carry them, the closest misses, and the plots.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcache.observe.misses import MISS_REASONS

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:auto;padding:0 12px;color:#222}"
         "img{max-width:100%}.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}"
         ".tile{border:1px solid #ccd;border-radius:6px;padding:8px 14px;min-width:150px;background:#f7f8fc}"
         ".tile b{display:block;font-size:1.6em}.tile small{color:#556}"
         "table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ccd;padding:3px 7px;"
         "text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}"
         "pre{background:#f4f4f4;padding:8px;white-space:pre-wrap;word-break:break-all}.note{color:#556}")


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    note: str = ""


def fmt_int(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def tiles_html(tiles: Sequence[Tile]) -> str:
    return "<div class='tiles'>" + "".join(
        f"<div class='tile'>{html.escape(t.label)}<b>{html.escape(t.value)}</b><small>{html.escape(t.note)}</small>"
        "</div>" for t in tiles) + "</div>"


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def miss_reasons_table(categories: dict[str, dict[str, Any]]) -> str:
    """Per category, how many lookups missed for each reason (columns that are all zero left out)."""
    used = [r for r in MISS_REASONS if any((c.get("miss_reasons") or {}).get(r) for c in categories.values())]
    if not used:
        return "<p class='note'>No misses recorded (or stats from a proxy that does not count them).</p>"
    rows = [[name, c.get("misses", 0) + c.get("bypasses", 0), *((c.get("miss_reasons") or {}).get(r, 0) for r in used)]
            for name, c in categories.items()]
    return table_html(["category", "not served", *(r.replace("_", " ") for r in used)], rows)


def near_misses_table(categories: dict[str, dict[str, Any]]) -> str:
    """The closest misses per category: query, nearest cached query, similarity, the stage that said no."""
    rows = []
    for name, c in categories.items():
        for m in c.get("top_near_misses") or []:
            rows.append([name, m["query"] if m.get("query") is not None else f"#{m['query_digest'][:12]}",
                         m["nearest"] if m.get("nearest") is not None else f"#{(m.get('nearest_digest') or '-')[:12]}",
                         f"{m['similarity']:.3f}", m.get("threshold") or "-", m["stage"], m["count"]])
    if not rows:
        return "<p class='note'>No near misses yet.</p>"
    return table_html(["category", "query", "nearest cached query", "similarity", "threshold", "said no", "times"],
                      rows)


def controller_table(categories: dict[str, dict[str, Any]]) -> str:
    """The effective threshold / TTL per category, when a load-adaptive controller reports them."""
    rows = [[n, c.get("effective_threshold", "-"), c.get("effective_ttl_s", c.get("ttl", "-")),
             len(c.get("controller_moves") or [])]
            for n, c in categories.items() if "effective_threshold" in c or "controller_moves" in c]
    if not rows:
        return "<p class='note'>No controller in these stats: thresholds and TTLs are the policy's.</p>"
    return table_html(["category", "effective threshold", "effective TTL", "moves"], rows)


def image_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<h3>{html.escape(path.stem.replace("_", " "))}</h3>'
            f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">')


def page(title: str, subtitle: str, tiles: Sequence[Tile], sections: Sequence[tuple[str, str]],
         images: Sequence[Path], raw: dict[str, Any] | None, definitions: str) -> str:
    """The whole page; ``sections`` are (heading, HTML) pairs shown before the plots."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    plots = "<h2>Plots</h2>" + "".join(image_html(p) for p in images) if images else ""
    dump = (f"<details><summary>raw stats (JSON)</summary><pre>{html.escape(json.dumps(raw, indent=1))}</pre>"
            "</details>") if raw is not None else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>{html.escape(subtitle)}</p>{tiles_html(tiles)}{body}{plots}"
            f"<p class='note'>{html.escape(definitions)}</p>{dump}</body></html>")
