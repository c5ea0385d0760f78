// semcache dashboard, what-if panel: predict a category's threshold/TTL change by replaying the
// lookup log (POST /admin/whatif), apply it (POST /admin/tuning/apply), list versions, roll back.
// Uses the admin token the sign-in kept in sessionStorage, only as an Authorization header.
"use strict";

(() => {
  const KEY = "semcache-admin-token";
  const $ = (id) => document.getElementById(id);
  let ready = false;
  let lastChange = null; // the change whose prediction is on screen (Apply applies exactly that)
  let currentGuards = {};
  const GUARDS = ["numbers", "negation", "actions", "entities", "identifiers", "diff"];

  const pct = (x) => (x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%");
  const ttlText = (t) => (t === null || t === undefined ? "never expires" : t + " s");
  const guardText = (g) => GUARDS.filter((n) => g[n]).join(", ") || "none";
  const values = (v) => v.threshold + " / " + ttlText(v.ttl_seconds) + " / " + guardText(v.guards || {});

  async function call(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY), "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || "HTTP " + response.status);
    return data;
  }

  function message(text, isError) {
    const m = $("wi-message");
    m.textContent = text;
    m.className = isError ? "error" : "";
  }

  function falseHit(p) {
    if (!p.audited) return "no audits";
    const text = pct(p.false_hit_rate) + " [" + pct(p.lower) + ", " + pct(p.upper) + "] of " + p.audited;
    return p.enough_audits ? text : "not enough audits (" + text + ")";
  }

  function change() {
    const body = { category: $("wi-category").value, threshold: Number($("wi-threshold").value) };
    const ttl = $("wi-ttl").value.trim();
    if (ttl) body.ttl_seconds = Number(ttl);
    const guards = {};
    for (const name of GUARDS) {
      const on = $("wi-g-" + name).checked;
      if (on !== currentGuards[name]) guards[name] = on;
    }
    if (Object.keys(guards).length) body.guards = guards;
    return body;
  }

  function show(result) {
    const b = result.baseline, p = result.prediction;
    $("wi-values-now").textContent = values(result.current);
    $("wi-values-new").textContent = values(result.proposed);
    $("wi-lookups").textContent = String(p.lookups);
    $("wi-hits-now").textContent = String(b.hits);
    $("wi-hits-new").textContent = String(p.hits);
    $("wi-rate-now").textContent = pct(b.hit_rate);
    $("wi-rate-new").textContent = pct(p.hit_rate);
    $("wi-false-now").textContent = falseHit(b);
    $("wi-false-new").textContent = falseHit(p);
    $("wi-changes").textContent = p.new_hits + " / " + p.lost_hits + " / " + p.undetermined;
    $("wi-note").textContent = p.note + (p.undetermined
      ? "; undetermined: a deciding candidate's verdict is not known at these values" : "");
  }

  async function predict(event) {
    if (event) event.preventDefault();
    const body = change();
    try {
      show(await call("POST", "/admin/whatif", body));
      lastChange = body;
      $("wi-apply").disabled = false;
      message("");
    } catch (e) {
      message("What-if refused: " + e.message, true);
    }
  }

  async function loadCurrent() {
    const result = await call("POST", "/admin/whatif", { category: $("wi-category").value });
    $("wi-threshold").value = result.current.threshold;
    $("wi-ttl").value = "";
    currentGuards = result.current.guards;
    for (const name of GUARDS) $("wi-g-" + name).checked = currentGuards[name];
    show(result);
    lastChange = null;
    $("wi-apply").disabled = true;
  }

  function renderHistory(h) {
    const body = document.querySelector("#wi-history tbody");
    body.replaceChildren();
    for (const v of h.versions.slice().reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.version = v.version;
      for (const text of [String(v.version), new Date(v.at * 1000).toLocaleTimeString(), v.change]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement("td");
      if (v.version === h.in_force) {
        td.textContent = "in force";
      } else {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "wi-rollback";
        button.textContent = "Roll back to " + v.version;
        button.addEventListener("click", () => apply("/admin/tuning/rollback", { version: v.version }));
        td.append(button);
      }
      tr.append(td);
      body.append(tr);
    }
  }

  async function apply(path, body) {
    try {
      const done = await call("POST", path, body);
      message("Applied: version " + done.version + " (" + done.change + ")" +
        (done.shared_with_replicas ? ", shared with replicas" : ""));
      renderHistory(await call("GET", "/admin/tuning/history"));
      await loadCurrent();
    } catch (e) {
      message("Not applied: " + e.message, true);
    }
  }

  async function init() {
    const h = await call("GET", "/admin/tuning/history");
    const select = $("wi-category");
    select.replaceChildren();
    for (const name of h.categories) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      select.append(option);
    }
    renderHistory(h);
    await loadCurrent();
  }

  function watch() {
    // Start once the board is shown after sign-in; start again after a sign-out and sign-in.
    const shown = !$("board").hidden && sessionStorage.getItem(KEY);
    if (shown && !ready) {
      ready = true;
      init().catch((e) => { ready = false; message("What-if unavailable: " + e.message, true); });
    } else if (!shown) {
      ready = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("wi-form").addEventListener("submit", predict);
    $("wi-category").addEventListener("change", () => loadCurrent().catch((e) => message(e.message, true)));
    $("wi-apply").addEventListener("click", () => { if (lastChange) apply("/admin/tuning/apply", lastChange); });
    setInterval(watch, 300);
  });
})();
