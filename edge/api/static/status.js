// Status page of the edge appliance: lines and devices, a device's tags, a tag's trend, the alarm
// banner on every view. Updates are pushed by the appliance (server-sent events on
// /api/status/stream, read with fetch so that the token travels in the Authorization header);
// sparklines and trends come from /api/tags/{key}/history with max_points (the compiled M4).
// No external resources: the page works without a network beyond the appliance.
// The token comes from the URL fragment (#token=...) or the form and is kept in sessionStorage only.
"use strict";

const tokenKey = "edge-api-token";
const SPARK_S = 600;          // sparklines show the last 10 minutes
const SPARK_POINTS = 120;     // ... drawn from at most this many points (M4)
const OVERVIEW_TAGS = 4;      // tags per device card on the overview
const svgNS = "http://www.w3.org/2000/svg";

const page = {
  status: null,               // the last status event
  byKey: new Map(),           // tag key -> tag (from the last status)
  spark: new Map(),           // tag key -> [[t_ms, value], ...] of the last SPARK_S
  sparkLoading: new Set(),
  sparkQueue: [],
  route: { view: "overview" },
  structure: "",              // what the current view's DOM was built for
  trend: null,                // {key, range, points, raw, maxPoints, start, end}
  updates: 0,
};

// ------------------------------------------------------------------ token, API, stream

function takeTokenFromUrl() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(tokenKey, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/");
  }
}

function authHeaders() {
  const t = sessionStorage.getItem(tokenKey);
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, authHeaders());
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) document.getElementById("login").hidden = false;
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${resp.status} ${detail}`);
  }
  return resp.json();
}

let streamAbort = null;

// Read the event stream until it ends; then reconnect after a pause that grows to 10 s.
async function stream() {
  let pause = 500;
  for (;;) {
    streamAbort = new AbortController();
    try {
      const resp = await fetch("/api/status/stream", { headers: authHeaders(), signal: streamAbort.signal });
      if (resp.status === 401) {
        document.getElementById("login").hidden = false;
        let detail = "token required";
        try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
        throw Object.assign(new Error(`/api/status/stream: 401 ${detail}`), { stop: true });
      }
      if (!resp.ok) throw new Error(`/api/status/stream: ${resp.status} ${resp.statusText}`);
      setLive(true);
      pause = 500;
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handleEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") showError(e);
      if (e.stop) { setLive(false); return; }
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(10000, pause * 2);
  }
}

function handleEvent(text) {
  let event = "message";
  const data = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (event === "status" && data.length) onStatus(JSON.parse(data.join("\n")));
}

function setLive(on) {
  const el = document.getElementById("live");
  el.className = "live " + (on ? "on" : "off");
  el.textContent = on ? "live" : "reconnecting";
}

function showError(e) {
  const p = document.getElementById("error");
  p.textContent = e.message;
  p.hidden = false;
}

// ------------------------------------------------------------------ formatting

function when(ns) {
  return ns ? new Date(ns / 1e6).toLocaleTimeString() : "";
}

function decimalsOf(resolution) {
  return Math.min(12, Math.max(0, Math.ceil(-Math.log10(resolution) - 1e-9)));
}

// Values as the tag holds them: a scaled value with its resolution's decimals (0.1 -> 20.2), a
// float32 with its 7 significant digits, a double without binary noise (never 20.200000000000003).
function fmt(v, dtype, resolution) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v !== "number") return String(v);
  if (dtype === "bool") return v ? "true" : "false";
  if (resolution && resolution < 1) return v.toFixed(decimalsOf(resolution));
  if (dtype === "float32") return String(Number(v.toPrecision(7)));
  if (dtype === "float64") return String(Number(v.toPrecision(15)));
  return String(v);
}

function tagText(t, compact = false) {
  if (t.state) return `${t.state} (${fmt(t.value)})`;
  // a card has room for 5 significant digits of a continuous float (the device view shows them all)
  if (compact && !t.resolution && typeof t.value === "number" && t.dtype.startsWith("float")) {
    return String(Number(t.value.toPrecision(5)));
  }
  return fmt(t.value, t.dtype, t.resolution);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function setText(node, text) {
  if (node && node.textContent !== text) node.textContent = text;
}

// ------------------------------------------------------------------ routing

function parseRoute() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  if (parts[0] === "device" && parts[1]) return { view: "device", device: parts[1] };
  if (parts[0] === "trend" && parts[1]) return { view: "trend", key: parts[1], range: Number(params.get("range")) || 3600 };
  return { view: "overview" };
}

function onRoute() {
  page.route = parseRoute();
  page.structure = "";
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + page.route.view;
  if (page.route.view === "trend") loadTrend();
  render();
  window.scrollTo(0, 0);
}

function crumbs() {
  const nav = document.getElementById("crumbs");
  const r = page.route;
  const items = [];
  if (r.view === "device") items.push(el("span", { text: "› " + r.device }));
  if (r.view === "trend") {
    const dev = r.key.split(".")[0];
    items.push(el("span", { text: "› " }), el("a", { href: "#/device/" + encodeURIComponent(dev), text: dev }),
      el("span", { text: " › " + r.key.slice(dev.length + 1) }));
  }
  nav.replaceChildren(...items);
}

// ------------------------------------------------------------------ live data

function onStatus(s) {
  page.status = s;
  page.byKey = new Map(s.tags.map((t) => [t.key, t]));
  for (const t of s.tags) appendSpark(t);
  setText(document.getElementById("site"), s.site);
  page.updates += 1;
  const u = document.getElementById("updated");
  u.dataset.updates = String(page.updates);
  u.dataset.transport = "sse";
  setText(u, "updated " + new Date(s.time_ns / 1e6).toLocaleTimeString());
  document.getElementById("error").hidden = true;
  renderAlarms(s.alarms, s.caller);
  render();
  if (page.trend && page.route.view === "trend") appendTrend(page.byKey.get(page.trend.key));
}

function appendSpark(t) {
  const buf = page.spark.get(t.key);
  if (!buf || typeof t.value !== "number" || t.quality !== "Good" || !t.ts_ns) return;
  const ms = t.ts_ns / 1e6;
  if (buf.length && buf[buf.length - 1][0] >= ms) return;
  buf.push([ms, t.value]);
  const oldest = ms - SPARK_S * 1000;
  while (buf.length && buf[0][0] < oldest) buf.shift();
}

// Sparkline history is fetched once per tag (M4, at most SPARK_POINTS), a few requests at a time.
function wantSpark(key) {
  if (page.spark.has(key) || page.sparkLoading.has(key)) return;
  page.sparkLoading.add(key);
  page.sparkQueue.push(key);
  pumpSparks();
}

let sparkRunning = 0;
function pumpSparks() {
  while (sparkRunning < 4 && page.sparkQueue.length) {
    const key = page.sparkQueue.shift();
    sparkRunning += 1;
    const end = Date.now() * 1e6;
    const start = end - SPARK_S * 1e9;
    api(`/api/tags/${encodeURIComponent(key)}/history?start_ns=${start}&end_ns=${end}&max_points=${SPARK_POINTS}`)
      .then((h) => {
        page.spark.set(key, h.ts_ns.map((ns, i) => [ns / 1e6, h.values[i]]).filter((p) => typeof p[1] === "number"));
        const t = page.byKey.get(key);
        if (t) appendSpark(t);
        drawSparks(key);
      })
      .catch(() => page.spark.set(key, []))
      .finally(() => { sparkRunning -= 1; page.sparkLoading.delete(key); pumpSparks(); });
  }
}

function sparkSvg(key) {
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 96 24");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.dataset.spark = key;
  svg.append(document.createElementNS(svgNS, "polyline"));
  return svg;
}

function drawSparks(key) {
  for (const svg of document.querySelectorAll(`svg.spark[data-spark="${CSS.escape(key)}"]`)) drawSpark(svg, key);
}

function drawSpark(svg, key) {
  const pts = page.spark.get(key) || [];
  const line = svg.firstChild;
  svg.dataset.points = String(pts.length);
  if (pts.length < 2) { line.setAttribute("points", ""); return; }
  const end = pts[pts.length - 1][0];
  const start = end - SPARK_S * 1000;
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (hi === lo) { hi += 1; lo -= 1; }
  line.setAttribute("points", pts.map(([t, v]) =>
    `${(96 * (t - start) / (end - start)).toFixed(1)},${(22 - 20 * (v - lo) / (hi - lo)).toFixed(1)}`).join(" "));
}

// ------------------------------------------------------------------ alarms (on every view)

function renderAlarms(alarms, caller) {
  const banner = document.getElementById("banner");
  const unacked = alarms.filter((a) => !a.acked);
  banner.className = "banner " + (!alarms.length ? "ok" : unacked.length ? "unack" : "acked");
  const top = [...alarms].sort((a, b) => (b.severity || 0) - (a.severity || 0))[0];
  setText(document.getElementById("banner-text"), !alarms.length ? "No active alarms" :
    `${alarms.length} alarm${alarms.length > 1 ? "s" : ""} (${unacked.length} unacknowledged): ` +
    `${top.message || top.name} — ${top.state}${alarms.length > 1 ? " …" : ""}`);
  banner.dataset.count = String(alarms.length);
  document.getElementById("no-alarms").hidden = alarms.length > 0;
  const body = document.querySelector("#alarms tbody");
  body.replaceChildren();
  for (const a of alarms) {
    const r = body.insertRow();
    r.dataset.alarm = a.name;
    r.className = "alarm-" + a.state;
    const tag = a.tag && page.byKey.get(a.tag);
    const cells = [a.name, a.shelved ? a.state + " (shelved)" : a.state, a.level,
      a.value === null || a.value === undefined ? "" : fmt(a.value, tag ? tag.dtype : "float64", tag && tag.resolution),
      a.priority, a.message, when(a.active_since_ns || a.since_ns)];
    cells.forEach((text, i) => {
      const td = r.insertCell();
      td.textContent = text === null || text === undefined ? "" : String(text);
      if (i === 1) td.className = "alarm-state";
      if (i === 3) td.className = "num";
    });
    const td = r.insertCell();
    if (!a.acked && caller.role === "operator") {
      const b = el("button", { class: "ack", type: "button", text: "Acknowledge" });
      b.onclick = () => api(`/api/alarms/${encodeURIComponent(a.name)}/ack`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      }).then(() => { b.disabled = true; }, showError);
      td.append(b);
    }
  }
}

// ------------------------------------------------------------------ views

function render() {
  crumbs();
  if (!page.status) return;
  if (page.route.view === "overview") renderOverview();
  else if (page.route.view === "device") renderDevice();
  else renderTrendHeader();
}

function lineGroups(s) {
  const groups = new Map();
  for (const d of s.devices) {
    const line = d.line || d.bus;
    if (!groups.has(line)) groups.set(line, { line, bus: d.bus, devices: [] });
    groups.get(line).devices.push(d);
  }
  return [...groups.values()];
}

function deviceTags(s, name) {
  return s.tags.filter((t) => t.device === name);
}

// A device card's values: read-only measurements with a unit first (frequency, current...), then
// the other read-only numbers (states, bits), in the register map's order.
function overviewTags(s, name) {
  const tags = deviceTags(s, name).filter((t) => !t.writable && t.dtype !== "string");
  const measured = tags.filter((t) => t.unit && t.dtype !== "bool" && !t.state);
  return [...measured, ...tags.filter((t) => !measured.includes(t))].slice(0, OVERVIEW_TAGS);
}

function renderOverview() {
  const s = page.status;
  const groups = lineGroups(s);
  const structure = "overview:" + JSON.stringify(groups.map((g) => [g.line, g.devices.map((d) => d.name)]));
  const root = document.getElementById("lines");
  if (structure !== page.structure) {
    page.structure = structure;
    root.replaceChildren(...groups.map((g) => el("section", { class: "line", "data-line": g.line },
      el("h2", {}, el("span", { text: g.bus }), el("span", { class: "where", text: g.line }),
        el("span", { class: "where load-text" }), el("span", { class: "load" }, el("i"))),
      el("div", { class: "devices" }, ...g.devices.map((d) => deviceCard(s, d))))));
  }
  for (const g of groups) {
    const sec = root.querySelector(`section.line[data-line="${CSS.escape(g.line)}"]`);
    const pct = g.devices[0].line_utilisation_pct;
    setText(sec.querySelector(".load-text"), pct === null || pct === undefined ? "" : `${pct.toFixed(1)} % busy`);
    sec.querySelector(".load i").style.width = `${Math.min(100, pct || 0)}%`;
    for (const d of g.devices) updateCard(sec.querySelector(`article[data-device="${CSS.escape(d.name)}"]`), s, d);
  }
}

function deviceCard(s, d) {
  const rows = overviewTags(s, d.name).map((t) => {
    wantSpark(t.key);
    const svg = sparkSvg(t.key);
    drawSpark(svg, t.key);
    const name = el("td", { class: "name" }, el("a", { href: "#/trend/" + encodeURIComponent(t.key), text: t.name }));
    // no unit (states, switches, texts): the value takes the unit's column too, left-aligned, and wraps
    const value = t.unit ? [el("td", { class: "num value" }), el("td", { class: "unit", text: t.unit })]
      : [el("td", { class: "value text", colspan: "2" })];
    return el("tr", { "data-tag": t.key }, name, ...value, el("td", {}, svg));
  });
  return el("article", { class: "device", "data-device": d.name },
    el("div", { class: "head" }, el("h3", {}, el("a", { href: "#/device/" + encodeURIComponent(d.name), text: d.name })),
      el("span", { class: "state" })),
    el("p", { class: "stats" }), el("p", { class: "last-error" }),
    el("table", {}, el("colgroup", {}, el("col", { class: "c-name" }), el("col", { class: "c-value" }),
      el("col", { class: "c-unit" }), el("col", { class: "c-spark" })), el("tbody", {}, ...rows)));
}

function updateCard(card, s, d) {
  const st = card.querySelector(".state");
  setText(st, d.state);
  st.className = "state state-" + d.state;
  setText(card.querySelector(".stats"),
    `polls ${d.polls_ok} ok / ${d.polls_failed} failed · p99 ${d.latency_p99_ms.toFixed(1)} ms` +
    (d.holes ? ` · ${d.holes} hole(s)` : ""));
  const err = card.querySelector(".last-error");
  setText(err, d.state !== "ONLINE" && d.last_error ? d.last_error : "");
  for (const tr of card.querySelectorAll("tr[data-tag]")) updateTagRow(tr, true);
}

function updateTagRow(tr, compact = false) {
  const t = page.byKey.get(tr.dataset.tag);
  if (!t) return;
  const v = tr.querySelector(".value");
  setText(v, tagText(t, compact));
  v.classList.toggle("bad", t.quality !== "Good");
  const q = tr.querySelector(".quality");
  if (q) { setText(q, t.quality); q.className = t.quality === "Good" ? "quality" : "quality bad"; }
  const time = tr.querySelector(".time");
  if (time) setText(time, when(t.ts_ns));
  const svg = tr.querySelector("svg.spark");
  if (svg) drawSpark(svg, t.key);
}

function renderDevice() {
  const s = page.status;
  const name = page.route.device;
  const d = s.devices.find((x) => x.name === name);
  setText(document.getElementById("device-title"), name);
  const body = document.querySelector("#tags tbody");
  if (!d) {
    setText(document.getElementById("device-state"), "unknown device");
    body.replaceChildren();
    return;
  }
  const tags = deviceTags(s, name);
  const structure = "device:" + name + ":" + tags.map((t) => t.key).join(",");
  if (structure !== page.structure) {
    page.structure = structure;
    body.replaceChildren(...tags.map((t) => {
      const numeric = t.dtype !== "string";
      if (numeric) wantSpark(t.key);
      const svg = numeric ? sparkSvg(t.key) : null;
      if (svg) drawSpark(svg, t.key);
      return el("tr", { "data-tag": t.key },
        el("td", {}, numeric ? el("a", { href: "#/trend/" + encodeURIComponent(t.key), text: t.name }) : t.name),
        el("td", { class: "num value" }), el("td", { text: t.unit || "" }), el("td", { class: "quality" }),
        el("td", { class: "time" }), el("td", {}, svg));
    }));
  }
  const st = document.getElementById("device-state");
  setText(st, d.state);
  st.className = "state state-" + d.state;
  const diag = [["bus", d.bus], ["line", d.line || ""],
    ["line busy", d.line_utilisation_pct === null ? "" : d.line_utilisation_pct.toFixed(1) + " %"],
    ["plugin", d.plugin || "—"], ["polls ok / failed", `${d.polls_ok} / ${d.polls_failed}`],
    ["requests / timeouts / CRC errors", `${d.requests} / ${d.timeouts} / ${d.crc_errors}`],
    ["latency p50 / p99", `${d.latency_p50_ms.toFixed(1)} / ${d.latency_p99_ms.toFixed(1)} ms`],
    ["last good poll", d.last_ok_ns ? when(d.last_ok_ns) : "never"], ["address holes", String(d.holes || 0)],
    ["last error", d.last_error || "—"]];
  const dl = document.getElementById("device-diag");
  if (dl.children.length !== diag.length) {
    dl.replaceChildren(...diag.map(([k]) => el("div", {}, el("dt", { text: k }), el("dd", { "data-diag": k }))));
  }
  for (const [k, v] of diag) setText(dl.querySelector(`dd[data-diag="${CSS.escape(k)}"]`), v);
  for (const tr of body.querySelectorAll("tr[data-tag]")) updateTagRow(tr);
}

// ------------------------------------------------------------------ trend

function renderTrendHeader() {
  const r = page.route;
  const t = page.byKey.get(r.key);
  setText(document.getElementById("trend-title"),
    `${r.key}${t && t.unit ? " (" + t.unit + ")" : ""}: ${t ? tagText(t) : "unknown tag"}`);
  for (const b of document.querySelectorAll("#trend-ranges button")) {
    b.classList.toggle("active", Number(b.dataset.range) === r.range);
  }
}

function trendMaxPoints() {
  // two columns of M4 (first, min, max, last) per 4 px: what the chart can show, at most 4,000
  const width = document.getElementById("trend-chart").clientWidth || 800;
  return Math.max(40, Math.min(4000, 4 * Math.floor(width / 4)));
}

async function loadTrend() {
  const { key, range } = page.route;
  const maxPoints = trendMaxPoints();
  const end = Date.now() * 1e6;
  const start = end - range * 1e9;
  const info = document.getElementById("trend-info");
  setText(info, "loading…");
  try {
    const h = await api(`/api/tags/${encodeURIComponent(key)}/history?start_ns=${start}&end_ns=${end}` +
      `&max_points=${maxPoints}`);
    if (page.route.view !== "trend" || page.route.key !== key || page.route.range !== range) return;
    page.trend = { key, range, maxPoints, raw: h.raw_samples, start: start / 1e6, end: end / 1e6, fetched: h.ts_ns.length,
      points: h.ts_ns.map((ns, i) => [ns / 1e6, h.values[i]]).filter((p) => typeof p[1] === "number") };
    drawTrend();
  } catch (e) {
    showError(e);
    setText(info, "no history: " + e.message);
  }
}

function appendTrend(t) {
  const tr = page.trend;
  if (!tr || !t || typeof t.value !== "number" || t.quality !== "Good" || !t.ts_ns) return;
  const ms = t.ts_ns / 1e6;
  if (tr.points.length && tr.points[tr.points.length - 1][0] >= ms) return;
  tr.points.push([ms, t.value]);
  tr.live = (tr.live || 0) + 1;
  tr.end = Math.max(tr.end, ms);
  tr.start = tr.end - tr.range * 1000;
  while (tr.points.length && tr.points[0][0] < tr.start) tr.points.shift();
  drawTrend();
}

// Axis values at 1, 2 or 5 x 10^k steps covering [lo, hi], with the decimals the step needs.
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) values.push(v);
  return { values, decimals: Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) };
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function drawTrend() {
  const tr = page.trend;
  const svg = document.getElementById("trend-chart");
  const W = svg.clientWidth || 800, H = svg.clientHeight || 340;
  const left = 64, right = 12, top = 12, bottom = 26;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const t = page.byKey.get(tr.key) || {};
  const pts = tr.points;
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!pts.length) { lo = 0; hi = 1; }
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x = (ms) => left + (W - left - right) * (ms - tr.start) / (tr.end - tr.start);
  const y = (v) => top + (H - top - bottom) * (1 - (v - lo) / (hi - lo));
  const children = [];
  const ticks = niceTicks(lo, hi, 5);
  for (const v of ticks.values) {
    children.push(svgEl("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    const label = svgEl("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = v.toFixed(ticks.decimals);
    children.push(label);
  }
  for (let k = 0; k <= 4; k++) {
    const ms = tr.start + (tr.end - tr.start) * k / 4;
    const label = svgEl("text", { x: x(ms), y: H - 8, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" });
    label.textContent = tr.range > 86400 ? new Date(ms).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" })
      : new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    children.push(label);
  }
  // one line per stretch without a gap: a gap wider than 2.5 M4 buckets (the device was off,
  // samples were bad) is left open instead of bridged by a straight line
  const gap = 2.5 * (tr.end - tr.start) / Math.max(1, tr.maxPoints / 4);
  const discrete = t.dtype === "bool" || t.state;
  let coords = [];
  const flush = () => {
    if (coords.length) {
      const line = svgEl("polyline", { class: "series", points: coords.join(" ") });
      line.dataset.points = String(coords.length);
      children.push(line);
    }
    coords = [];
  };
  pts.forEach(([ms, v], i) => {
    if (i > 0 && ms - pts[i - 1][0] > gap) flush();
    else if (discrete && i > 0) coords.push(`${x(ms).toFixed(1)},${y(pts[i - 1][1]).toFixed(1)}`);
    coords.push(`${x(ms).toFixed(1)},${y(v).toFixed(1)}`);
  });
  flush();
  svg.replaceChildren(...children);
  const info = document.getElementById("trend-info");
  info.dataset.points = String(tr.fetched);
  info.dataset.raw = String(tr.raw);
  info.dataset.maxPoints = String(tr.maxPoints);
  let mn = Infinity, mx = -Infinity;
  for (const [, v] of pts) { mn = Math.min(mn, v); mx = Math.max(mx, v); }
  const f = (v) => fmt(v, t.dtype, t.resolution);
  setText(info, `${tr.fetched} points drawn from ${tr.raw} samples (M4, at most ${tr.maxPoints})` +
    (tr.live ? ` + ${tr.live} live` : "") + (pts.length ? ` · min ${f(mn)} · max ${f(mx)} · last ${f(pts[pts.length - 1][1])}` : ""));
}

// ------------------------------------------------------------------ start

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(tokenKey, document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  document.getElementById("error").hidden = true;
  stream();
});

document.getElementById("banner-toggle").addEventListener("click", () => {
  const panel = document.getElementById("alarm-panel");
  panel.hidden = !panel.hidden;
  document.getElementById("banner-toggle").setAttribute("aria-expanded", String(!panel.hidden));
});

document.getElementById("trend-ranges").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-range]");
  if (b) location.hash = `#/trend/${encodeURIComponent(page.route.key)}?range=${b.dataset.range}`;
});

window.addEventListener("hashchange", () => {
  if (/token=/.test(location.hash)) { takeTokenFromUrl(); return; }
  onRoute();
});
window.addEventListener("resize", () => { if (page.route.view === "trend" && page.trend) drawTrend(); });

takeTokenFromUrl();
onRoute();
stream();
