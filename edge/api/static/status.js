// Status page: polls /api/status and renders devices, line load, active alarms and latest values.
// The token comes from the URL fragment (#token=...) or the form, kept in sessionStorage only.
"use strict";

const tokenKey = "edge-api-token";
let refreshMs = 1000;

function token() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(tokenKey, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(tokenKey);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) document.getElementById("login").hidden = false;
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${resp.status} ${detail}`);
  }
  return resp.json();
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function when(ns) {
  return ns ? new Date(ns / 1e6).toLocaleTimeString() : "";
}

// Values as the tag holds them: a scaled value with its resolution's decimals (0.1 -> 20.2), a
// float32 with its 7 significant digits, any other number as the shortest text that reads back
// to the same double (never binary noise such as 20.200000000000003, never cut to 2 decimals).
function fmt(v, dtype, resolution) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v !== "number") return String(v);
  if (dtype === "bool") return v ? "true" : "false";
  if (resolution && resolution < 1) {
    const decimals = Math.min(12, Math.max(0, Math.ceil(-Math.log10(resolution) - 1e-9)));
    return v.toFixed(decimals);
  }
  if (dtype === "float32") return String(Number(v.toPrecision(7)));
  return String(v);
}

function renderDevices(devices) {
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  for (const d of devices) {
    const r = body.insertRow();
    r.dataset.device = d.name;
    cell(r, d.name);
    cell(r, d.bus);
    cell(r, d.state, "state state-" + d.state);
    cell(r, `${d.polls_ok} / ${d.polls_failed}`, "num");
    cell(r, d.latency_p99_ms.toFixed(1), "num");
    cell(r, d.line);
    cell(r, d.line_utilisation_pct === null ? "" : d.line_utilisation_pct.toFixed(1), "num utilisation");
    cell(r, d.last_error);
  }
}

function renderAlarms(alarms, caller) {
  const body = document.querySelector("#alarms tbody");
  body.replaceChildren();
  document.getElementById("no-alarms").hidden = alarms.length > 0;
  for (const a of alarms) {
    const r = body.insertRow();
    r.dataset.alarm = a.name;
    r.className = "alarm-" + a.state;
    cell(r, a.name);
    cell(r, a.shelved ? a.state + " (shelved)" : a.state, "alarm-state");
    cell(r, a.level);
    cell(r, fmt(a.value, a.kind === "limit" ? "float64" : undefined), "num");
    cell(r, a.priority);
    cell(r, a.message);
    cell(r, when(a.active_since_ns || a.since_ns));
    const td = r.insertCell();
    if (!a.acked && caller.role === "operator") {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.className = "ack";
      b.onclick = () => api(`/api/alarms/${encodeURIComponent(a.name)}/ack`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      }).then(refresh, showError);
      td.appendChild(b);
    }
  }
}

function renderTags(tags) {
  const body = document.querySelector("#tags tbody");
  body.replaceChildren();
  for (const t of tags) {
    const r = body.insertRow();
    r.dataset.tag = t.key;
    cell(r, t.key);
    cell(r, t.state ? `${t.state} (${fmt(t.value)})` : fmt(t.value, t.dtype, t.resolution), "num value");
    cell(r, t.unit);
    cell(r, t.quality, t.quality === "Good" ? "quality" : "quality bad");
    cell(r, when(t.ts_ns));
  }
}

function showError(e) {
  const p = document.getElementById("error");
  p.textContent = e.message;
  p.hidden = false;
}

async function refresh() {
  try {
    const s = await api("/api/status");
    refreshMs = s.refresh_ms;
    document.getElementById("site").textContent = s.site;
    renderAlarms(s.alarms, s.caller);
    renderDevices(s.devices);
    renderTags(s.tags);
    const u = document.getElementById("updated");
    u.dataset.updates = String(Number(u.dataset.updates) + 1);
    u.textContent = "updated " + new Date(s.time_ns / 1e6).toLocaleTimeString();
    document.getElementById("error").hidden = true;
  } catch (e) {
    showError(e);
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, refreshMs);
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(tokenKey, document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  refresh();
});

loop();
