// semcache live dashboard: signs in with the admin token (kept in sessionStorage, sent only
// as an Authorization header) and renders the /admin/live stream of /admin/stats snapshots.
"use strict";

const KEY = "semcache-admin-token";
const HISTORY = 150; // points kept per series (5 minutes at the default 2 s interval)
const $ = (id) => document.getElementById(id);
let reader = null;
let charts = null;
const series = { labels: [], byCategory: {} };
let last = {}; // previous snapshot's counters per category, for rates over the interval

function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%"; }
function num(x) { return x === null || x === undefined ? "-" : Number(x).toLocaleString("en-US"); }
function ms(seconds) { return (1000 * seconds).toFixed(seconds < 0.01 ? 2 : 0) + " ms"; }
function sumValues(o) { return Object.values(o || {}).reduce((a, b) => a + b, 0); }
function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (kind || "");
}

function showLogin(message) {
  $("board").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  setStatus("signed out");
}

async function connect(token) {
  setStatus("connecting");
  let response;
  try {
    response = await fetch("/admin/live", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  } catch (e) {
    setStatus("cannot reach the proxy", "error");
    setTimeout(() => connect(token), 3000);
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin("Wrong token: the proxy refused it.");
    return;
  }
  if (!response.ok) {
    setStatus("live stream refused (" + response.status + ")", "error");
    setTimeout(() => connect(token), 5000);
    return;
  }
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
  setStatus("live", "live");
  reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (event.startsWith("data: ")) render(JSON.parse(event.slice(6)));
      }
    }
  } catch (e) { /* stream broken: reconnect below */ }
  if (sessionStorage.getItem(KEY)) {
    setStatus("reconnecting", "error");
    setTimeout(() => connect(sessionStorage.getItem(KEY)), 2000);
  }
}

function render(snap) {
  const cache = snap.cache || {};
  const total = cache.total || {};
  $("t-lookups").textContent = num(total.lookups);
  $("t-hit-rate").textContent = pct(total.lookups ? total.hit_rate : null);
  $("t-hits").textContent = num(total.hits);
  $("t-bypasses").textContent = num(total.bypasses);
  $("t-stores").textContent = num(total.stores);
  $("t-tokens-saved").textContent = num((total.saved_prompt_tokens || 0) + (total.saved_completion_tokens || 0));
  const prices = (snap.proxy || {}).prices;
  if (prices) {
    const dollars = ((total.saved_prompt_tokens || 0) * prices.prompt_per_million +
                     (total.saved_completion_tokens || 0) * prices.completion_per_million) / 1e6;
    $("t-money-saved").textContent = "$" + dollars.toFixed(dollars < 10 ? 4 : 2);
    $("t-money-label").textContent = "money saved (at $" + prices.prompt_per_million + "/M in, $" +
      prices.completion_per_million + "/M out)";
  }
  $("t-latency-saved").textContent = total.latency_saved_s === undefined ? "-" : total.latency_saved_s.toFixed(1) + " s";
  $("t-false-hits").textContent = falseHits((snap.proxy || {}).audits || {});
  $("t-updated").textContent = new Date(snap.at * 1000).toLocaleTimeString();
  renderCategories(cache, (snap.proxy || {}).audits || {}, (snap.proxy || {}).iccache);
  renderEngines((snap.proxy || {}).upstreams || []);
  renderNearMisses(cache.categories || {}, total.show_query_text);
  renderCharts(snap, cache.categories || {});
  renderController(snap);
}

function renderCategories(cache, audits, iccache) {
  const body = document.querySelector("#categories tbody");
  body.replaceChildren();
  // IC-Cache columns only when the proxy runs IC-Cache.
  for (const th of document.querySelectorAll("#categories th.ic")) th.hidden = !iccache;
  const ic = (iccache || {}).categories || {};
  const cats = cache.categories || {};
  for (const [name, c] of Object.entries(cats)) {
    const a = audits[name];
    const fhr = a && a.false_hit_rate !== null
      ? pct(a.false_hit_rate) + " [" + pct(a.lower) + ", " + pct(a.upper) + "]" : "no sample yet";
    const tr = document.createElement("tr");
    tr.dataset.category = name;
    const refusals = Object.entries(c.store_refusals || {}).map(([k, v]) => k + " " + v).join(", ") || "0";
    tr.append(cell(name), cell(num(c.lookups)), cell(pct(c.lookups ? c.hit_rate : null)), cell(fhr),
      cell(a ? num(a.audited) + " (" + num(a.audit_false_hits) + " false)" : "0"), cell(num(c.bypasses)),
      cell(refusals), cell(num(sumValues(c.guard_rejections)) + " / " + num(c.verifier_rejections)),
      cell(c.lookups ? c.mean_lookup_ms.toFixed(2) : "-"), cell(num((cache.entries || {})[name] || 0)),
      cell(num((c.saved_prompt_tokens || 0) + (c.saved_completion_tokens || 0))), cell(whyMissed(c.miss_reasons)));
    if (iccache) {
      const q = ic[name] || {};
      tr.append(cell(q.requests ? pct(q.offload_rate) + " of " + num(q.small + q.large) : "-"),
        cell(q.mean_quality === null || q.mean_quality === undefined ? "-" : q.mean_quality.toFixed(2)));
    }
    body.append(tr);
  }
}

// "below threshold 12, guard 3": the reasons a category's lookups were not served, most first.
function whyMissed(reasons) {
  const parts = Object.entries(reasons || {}).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  return parts.map(([k, v]) => k.replace(/_/g, " ") + " " + num(v)).join(", ") || "-";
}

// All categories' audits pooled: false hits among audited hits.
function falseHits(audits) {
  let n = 0, k = 0;
  for (const a of Object.values(audits)) { n += a.audited || 0; k += a.audit_false_hits || 0; }
  return n ? pct(k / n) + " of " + num(n) : "no audits yet";
}

// Query text comes only when the proxy's show_query_text is on; otherwise digests.
function renderNearMisses(cats, showText) {
  $("near-miss-privacy").textContent = showText ? "(query text shown)" : "(digests only: show_query_text is off)";
  const body = document.querySelector("#near-misses tbody");
  body.replaceChildren();
  const text = (t, digest) => t !== null && t !== undefined ? t : "#" + String(digest || "-").slice(0, 12);
  for (const [name, c] of Object.entries(cats)) {
    for (const m of c.top_near_misses || []) {
      const tr = document.createElement("tr");
      tr.append(cell(name), cell(text(m.query, m.query_digest)), cell(text(m.nearest, m.nearest_digest)),
        cell(m.similarity.toFixed(3)), cell(m.threshold === null ? "-" : m.threshold.toFixed(2)), cell(m.stage),
        cell(num(m.count)));
      body.append(tr);
    }
  }
}

function renderEngines(upstreams) {
  const body = document.querySelector("#engines tbody");
  body.replaceChildren();
  for (const u of upstreams) {
    const e = u.engine || {};
    const tr = document.createElement("tr");
    tr.append(cell(u.base_url), cell(u.model || "any"), cell(num(u.in_flight)),
      cell(e.vllm_metrics ? num(e.waiting) : "not vLLM"), cell(e.vllm_metrics ? num(e.running) : "-"),
      cell(e.vllm_metrics && e.kv_usage !== null ? pct(e.kv_usage) : "-"),
      cell(e.ttft_s === null || e.ttft_s === undefined ? "-" : ms(e.ttft_s)), cell(num(u.sent)));
    body.append(tr);
  }
}

const COLOURS = ["#2f6fdf", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

function ensureCharts() {
  if (charts || typeof Chart === "undefined") return charts;
  const common = { animation: false, responsive: true, maintainAspectRatio: false };
  charts = {
    hitRate: new Chart($("chart-hit-rate"), { type: "line", data: { labels: [], datasets: [] },
      options: { ...common, scales: { y: { min: 0, max: 1, title: { display: true, text: "hit rate (interval)" } } } } }),
    similarity: new Chart($("chart-similarity"), { type: "bar", data: { labels: [], datasets: [] },
      options: { ...common, scales: { x: { title: { display: true, text: "cosine similarity" } },
        // Log scale: near misses are few next to the hits (exact repeats pile up at 1.0).
        y: { type: "logarithmic", title: { display: true, text: "lookups (log)" } } } } }),
  };
  return charts;
}

function renderCharts(snap, cats) {
  const c = ensureCharts();
  if (!c) return;
  series.labels.push(new Date(snap.at * 1000).toLocaleTimeString());
  if (series.labels.length > HISTORY) series.labels.shift();
  Object.entries(cats).forEach(([name, s]) => {
    const prev = last[name] || { lookups: 0, hits: 0 };
    const dl = s.lookups - prev.lookups, dh = s.hits - prev.hits;
    const points = series.byCategory[name] || (series.byCategory[name] = []);
    while (points.length < series.labels.length - 1) points.push(null);
    points.push(dl > 0 ? dh / dl : null);
    if (points.length > HISTORY) points.shift();
    last[name] = { lookups: s.lookups, hits: s.hits };
  });
  c.hitRate.data.labels = series.labels.slice();
  c.hitRate.data.datasets = Object.entries(series.byCategory).map(([name, points], i) => ({
    label: name, data: points.slice(), borderColor: COLOURS[i % COLOURS.length], spanGaps: true, pointRadius: 0 }));
  c.hitRate.update();
  const bins = 50, labels = [];
  for (let i = 0; i < bins; i++) labels.push((i / bins).toFixed(2));
  const sum = (key, from = cats) => labels.map((_, i) =>
    Object.values(from).reduce((a, s) => a + ((s[key] || [])[i] || 0), 0));
  c.similarity.data.labels = labels;
  c.similarity.data.datasets = [
    { label: "hits", data: sum("hit_similarity_hist"), backgroundColor: "#2f6fdf" },
    { label: "near misses", data: sum("near_miss_similarity_hist"), backgroundColor: "#e67e22" },
    // Audited hits that the audit judged false, at the similarity they were served at.
    { label: "audited false hits", data: sum("false_hit_similarity_hist", (snap.proxy || {}).audits || {}),
      backgroundColor: "#c0392b" },
  ];
  c.similarity.update();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value;
    $("token").value = "";
    sessionStorage.setItem(KEY, token);
    connect(token);
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    if (reader) reader.cancel();
    showLogin();
  });
  const saved = sessionStorage.getItem(KEY);
  if (saved) connect(saved); else showLogin();
});
