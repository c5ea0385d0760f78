// semcache dashboard: the load-adaptive controller. Effective threshold per adaptive category
// over time (a line each; its effective TTL dashed, on the right axis), the controller's moves as marked points whose tooltip gives the
// reason, and a table of the current level and pressure. Fed by render() in dashboard.js.
"use strict";

const CTRL_HISTORY = 150; // points kept per series, as in dashboard.js
const ctrl = { chart: null, labels: [], lines: {}, ttls: {}, marks: {}, reasons: {}, seen: new Set() };
const CTRL_COLOURS = ["#2f6fdf", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

function ctrlChart() {
  if (ctrl.chart || typeof Chart === "undefined") return ctrl.chart;
  ctrl.chart = new Chart(document.getElementById("chart-threshold"), {
    type: "line", data: { labels: [], datasets: [] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      scales: { y: { title: { display: true, text: "effective threshold" } },
        ttl: { position: "right", grid: { drawOnChartArea: false },
               title: { display: true, text: "effective TTL (s), dashed" } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => {
        const why = (ctx.dataset.reasons || [])[ctx.dataIndex];
        return why || ctx.dataset.label + ": " + Number(ctx.parsed.y).toFixed(3);
      } } } } },
  });
  return ctrl.chart;
}

// Keeps one series aligned with the labels: pads with null, drops the oldest point.
function pushAligned(list, value) {
  while (list.length < ctrl.labels.length - 1) list.push(null);
  list.push(value);
  while (list.length > CTRL_HISTORY) list.shift();
}

function renderController(snap) {
  const adaptive = (snap.proxy || {}).adaptive;
  const section = document.getElementById("controller");
  const cats = Object.entries((adaptive || {}).categories || {}).filter(([, c]) => c.adaptive);
  section.hidden = !adaptive || cats.length === 0;
  if (section.hidden) return;
  const mode = !adaptive.enabled ? "off (kill switch)" : adaptive.dry_run ? "dry run" : "on";
  document.getElementById("controller-mode").textContent = "controller " + mode + ", " + adaptive.moves + " moves";
  // Moves first seen in this snapshot, by category: marked at this point in time.
  const fresh = {};
  for (const e of adaptive.events || []) {
    const key = e.at + "|" + e.category + "|" + e.action + "|" + e.new_threshold;
    if (ctrl.seen.has(key)) continue;
    ctrl.seen.add(key);
    (fresh[e.category] = fresh[e.category] || []).push(e);
  }
  ctrl.labels.push(new Date(snap.at * 1000).toLocaleTimeString());
  if (ctrl.labels.length > CTRL_HISTORY) ctrl.labels.shift();
  const body = document.querySelector("#controller-table tbody");
  body.replaceChildren();
  for (const [name, c] of cats) {
    // What the controller moves: the cosine threshold, or where the verifier decides, its cut-off (p).
    const byVerifier = c.relaxes === "verifier";
    const cut = byVerifier ? c.min_probability : c.threshold;
    const effective = byVerifier ? c.effective_min_probability : c.effective_threshold;
    const fmt = (v) => (byVerifier ? "p " : "") + v.toFixed(3);
    pushAligned(ctrl.lines[name] = ctrl.lines[name] || [], effective);
    pushAligned(ctrl.ttls[name] = ctrl.ttls[name] || [], c.effective_ttl_seconds);
    const moves = fresh[name] || [];
    const newest = moves[moves.length - 1];
    pushAligned(ctrl.marks[name] = ctrl.marks[name] || [], newest ? newest.new_threshold : null);
    pushAligned(ctrl.reasons[name] = ctrl.reasons[name] || [], newest ? moves.map((e) =>
      (e.dry_run ? "would " : "") + e.action + " " + e.old_threshold.toFixed(3) + " -> " +
      e.new_threshold.toFixed(3) + ": " + e.reason).join("; ") : null);
    const tr = document.createElement("tr");
    tr.dataset.category = name;
    for (const text of [name, fmt(cut), fmt(effective),
      c.effective_ttl_seconds === null ? "-" : c.effective_ttl_seconds + " s", String(c.level),
      c.pressure.toFixed(2) + (c.signal ? " (" + c.signal + ")" : "")]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  const chart = ctrlChart();
  if (!chart) return;
  chart.data.labels = ctrl.labels.slice();
  chart.data.datasets = Object.keys(ctrl.lines).flatMap((name, i) => {
    const colour = CTRL_COLOURS[i % CTRL_COLOURS.length];
    return [
      { label: name, data: ctrl.lines[name].slice(), borderColor: colour, spanGaps: true, pointRadius: 0, stepped: true },
      { label: name + " TTL", data: ctrl.ttls[name].slice(), yAxisID: "ttl", borderColor: colour, borderDash: [4, 4],
        spanGaps: true, pointRadius: 0, stepped: true },
      { label: name + " moves", data: ctrl.marks[name].slice(), reasons: ctrl.reasons[name].slice(), showLine: false,
        borderColor: colour, backgroundColor: colour, pointRadius: 5, pointStyle: "triangle" },
    ];
  });
  chart.update();
}
