// The dashboard: reads the node's HTTP API every 2 s and draws it (no libraries, no CDN).
//
// Everything it shows comes from the public API (/health, /v1/cluster, /v1/views,
// /v1/views/{view}/epochs, /batch, /range, /metrics), so it shows nothing a client could
// not read. In `speedlayer demo` the page is served by the demo, which forwards these
// reads to a live node and adds /demo/nodes (stop and start a node).
//
// For tests (headless Chromium dumps the DOM): <body data-refreshes data-errors> count
// finished refreshes and script errors, the chart carries data-points, and each member
// row data-addr and data-state.
"use strict";

const REFRESH_MS = 2000;
const HISTORY = 60;
const TOKEN_KEY = "speedlayer-token";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  previousMetrics: null,
  series: { rate: [], applied: [], latency: [], lag: [] },
  demoNodes: null,
  timer: null,
};

// An answer the node gave (or could not give): shown in its panel. Any other failure
// of a panel is a bug of this script and is counted as a script error too.
class ApiError extends Error {}
class NeedsLogin extends ApiError {}

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A script error is shown on the page and counted (a test fails on any).
function reportScriptError(message) {
  const list = $("#errors");
  list.hidden = false;
  list.append(el("li", {}, message));
  document.body.dataset.errors = String(Number(document.body.dataset.errors) + 1);
}
window.addEventListener("error", (e) => reportScriptError(`script error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) =>
  reportScriptError(`script error: ${e.reason && e.reason.message ? e.reason.message : e.reason}`));

// GET `path` from the node; JSON unless `text`. A 401 asks for the password.
async function api(path, text) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(`${path}: the node is unreachable (${e.message})`);
  }
  if (response.status === 401) throw new NeedsLogin("a password is required");
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = body.detail || body.error || detail;
    } catch (_) { /* not JSON */ }
    const error = new ApiError(`${path}: ${response.status} ${detail}`);
    error.status = response.status;
    throw error;
  }
  return text ? response.text() : response.json();
}

function utc(secs) {
  return new Date(secs * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function formatNumber(n) {
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toFixed(2);
}

// ---- health -------------------------------------------------------------------------

async function refreshHealth() {
  const badge = $("#health");
  try {
    const health = await api("/health");
    $("#node").textContent = `node ${health.node}`;
    badge.textContent = health.status;
    badge.className = `badge ${health.status === "ok" ? "ok" : "bad"}`;
  } catch (e) {
    if (e instanceof NeedsLogin) throw e;
    badge.textContent = e.status === 503 ? "storage failed" : "unreachable";
    badge.className = "badge bad";
  }
}

// ---- cluster ------------------------------------------------------------------------

async function refreshCluster() {
  const cluster = await api("/v1/cluster");
  const owned = new Map();
  for (const entry of cluster.ring) {
    for (const addr of entry.nodes) owned.set(addr, (owned.get(addr) || 0) + 1);
  }
  const demoByAddr = new Map((state.demoNodes || []).map((n) => [n.cluster, n]));
  const rows = cluster.nodes.map((member) => {
    const stateCell = el("td", {}, el("span", { class: `badge state-${member.state}` }, member.state));
    const row = el("tr", { "data-addr": member.addr, "data-state": member.state },
      el("td", {}, member.node_id || "?", member.self ? " (this node)" : ""),
      el("td", {}, member.addr),
      stateCell,
      el("td", {}, String(owned.get(member.addr) || 0)),
      el("td", {}, String(member.hints_pending)),
      el("td", {}, member.clock_offset_ms === null || member.clock_offset_ms === undefined
        ? "–" : `${member.clock_offset_ms} ms`));
    if (state.demoNodes) row.append(el("td", {}, demoButton(demoByAddr.get(member.addr))));
    return row;
  });
  $("#members tbody").replaceChildren(...rows);
  $("#demo-head").hidden = !state.demoNodes;
  $("#ring").textContent = `ring ${cluster.ring_version} · ${cluster.partitions} partitions × `
    + `${cluster.replicas} replicas · ${cluster.consistency} (${cluster.quorum})`;
  const ae = cluster.anti_entropy || {};
  const extra = [];
  if (cluster.moving_partitions) extra.push(`${cluster.moving_partitions} partitions moving`);
  if (cluster.clock_skewed) extra.push("this node's clock is skewed: it refuses to coordinate writes");
  extra.push(ae.interval_secs
    ? `anti-entropy: ${ae.rounds} rounds, last ${ae.last_round_age_secs === null ? "never" : `${ae.last_round_age_secs} s ago`}`
      + ` (${ae.differing_last_round} differing ranges), ${ae.keys_pulled} keys pulled, ${ae.keys_pushed} pushed`
    : "anti-entropy: off");
  $("#cluster-extra").textContent = extra.join(" · ");
}

// ---- demo controls (only under `speedlayer demo`) ------------------------------------

// Asked once on a node: it answers 404 (not the demo) and is not asked again, so
// ordinary nodes do not log a failed request every refresh.
async function refreshDemo() {
  if (state.demoNodes === false) return;
  try {
    const answer = await api("/demo/nodes");
    state.demoNodes = answer.nodes;
  } catch (e) {
    if (e instanceof NeedsLogin) throw e;
    state.demoNodes = e.status === 404 ? false : null; // not the demo, or it is gone
  }
}

function demoButton(node) {
  if (!node) return "";
  const action = node.running ? "stop" : "start";
  const button = el("button", { class: "demo", type: "button" }, `${action} ${node.name}`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const response = await fetch(`/demo/nodes/${node.index}/${action}`, { method: "POST" });
      if (!response.ok) throw new Error(`${action} ${node.name}: ${response.status}`);
    } catch (e) {
      $("#cluster-extra").textContent = e.message;
    }
    refresh();
  });
  return button;
}

// ---- views --------------------------------------------------------------------------

async function refreshViews() {
  const { views } = await api("/v1/views");
  const shown = views.slice(0, 50);
  const details = await Promise.all(shown.map(async (view) => {
    const name = encodeURIComponent(view.name);
    const [epochs, batch] = await Promise.all([
      api(`/v1/views/${name}/epochs`).catch((e) => ({ error: e.message })),
      api(`/v1/views/${name}/batch`).catch((e) => ({ error: e.message })),
    ]);
    return { view, epochs, batch };
  }));
  const rows = details.map(({ view, epochs, batch }) => {
    const live = epochs.error ? "?" : String(epochs.epochs.length);
    const keys = epochs.error ? epochs.error
      : formatNumber(epochs.epochs.reduce((sum, e) => sum + e.approx_keys, 0));
    const boundary = batch.error ? "?" : batch.boundary ? utc(batch.boundary) : "none";
    return el("tr", { "data-view": view.name },
      el("td", {}, view.name), el("td", {}, view.type),
      el("td", {}, view.epoch_secs >= 1e9 ? "one" : `${view.epoch_secs} s`),
      el("td", {}, live), el("td", {}, keys), el("td", {}, boundary));
  });
  $("#views tbody").replaceChildren(...rows);
  fillViewSelect(views);
}

function fillViewSelect(views) {
  const select = $("#view-select");
  const names = views.map((v) => v.name);
  const current = Array.from(select.options).map((o) => o.value);
  if (names.join("\n") === current.join("\n")) return;
  const wanted = select.value || new URLSearchParams(location.search).get("view")
    || localStorage.getItem("speedlayer-view") || names[0] || "";
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(wanted)) select.value = wanted;
}

// ---- the chart ----------------------------------------------------------------------

// A row's value as a number to draw: counters, max/min and HLL estimates are numbers; a
// set is drawn by its size; other values (registers) are not drawn.
function drawable(value) {
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.length;
  return null;
}

async function refreshChart() {
  const view = $("#view-select").value;
  const key = $("#key-input").value;
  const svg = $("#chart");
  if (!view || key === "") {
    svg.replaceChildren(svgEl("text", { x: 20, y: 40 }, "Choose a view and a key to chart its range."));
    svg.dataset.points = "[]";
    $("#chart-summary").textContent = "";
    return;
  }
  const range = await api(`/v1/views/${encodeURIComponent(view)}/range?key=${encodeURIComponent(key)}`);
  const rows = range.rows.slice(-36);
  drawChart(svg, rows, range.boundary);
  const total = drawable(range.total);
  $("#chart-summary").textContent = `${range.rows.length} rows · total ${range.approximate ? "≈ " : ""}`
    + `${total === null ? JSON.stringify(range.total) : formatNumber(total)}`
    + (range.boundary ? ` · T = ${utc(range.boundary)}` : " · no batch view yet")
    + (range.truncated ? " · truncated" : "");
}

function drawChart(svg, rows, boundary) {
  const W = 900, H = 260, left = 50, right = 10, top = 18, bottom = 40;
  const values = rows.map((r) => drawable(r.value));
  svg.dataset.points = JSON.stringify(rows.map((r, i) => [r.clustering, values[i], r.source]));
  const parts = [];
  if (rows.length === 0) {
    parts.push(svgEl("text", { x: 20, y: 40 }, "No rows for this key yet."));
    svg.replaceChildren(...parts);
    return;
  }
  const max = Math.max(1, ...values.filter((v) => v !== null));
  const slot = (W - left - right) / rows.length;
  const barWidth = Math.max(2, slot * 0.7);
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  parts.push(svgEl("line", { x1: left, x2: W - right, y1: H - bottom, y2: H - bottom, stroke: "#dde1ea" }));
  parts.push(svgEl("text", { x: 4, y: top + 4 }, formatNumber(max)));
  parts.push(svgEl("text", { x: 4, y: H - bottom }, "0"));
  let boundaryX = null;
  rows.forEach((row, i) => {
    const x = left + i * slot + (slot - barWidth) / 2;
    const v = values[i];
    if (i > 0 && rows[i - 1].source === "batch" && row.source !== "batch") boundaryX = left + i * slot;
    if (v !== null) {
      const classes = `bar ${row.source === "batch" ? "batch" : "realtime"}${row.approximate ? " approx" : ""}`;
      const bar = svgEl("rect", { class: classes, x, y: y(v), width: barWidth, height: Math.max(0, H - bottom - y(v)) });
      bar.append(svgEl("title", {}, `${row.clustering}: ${row.approximate ? "≈ " : ""}${v} (${row.source})`));
      parts.push(bar);
      if (rows.length <= 24) {
        parts.push(svgEl("text", { class: "value", x: x + barWidth / 2, y: y(v) - 3, "text-anchor": "middle" },
          `${row.approximate ? "≈" : ""}${formatNumber(v)}`));
      }
    }
    const step = Math.ceil(rows.length / 12);
    if (i % step === 0) {
      const label = String(row.clustering).length > 10 ? String(row.clustering).slice(-8) : String(row.clustering);
      parts.push(svgEl("text", { x: x + barWidth / 2, y: H - bottom + 14, "text-anchor": "middle" }, label));
    }
  });
  if (boundary && boundaryX !== null) {
    parts.push(svgEl("line", { class: "boundary", x1: boundaryX, x2: boundaryX, y1: top - 8, y2: H - bottom + 32 }));
    parts.push(svgEl("text", { x: boundaryX + 4, y: H - bottom + 30 }, `T = ${utc(boundary)}`));
  }
  svg.replaceChildren(...parts);
}

// ---- metrics sparklines ---------------------------------------------------------------

// Sums of the samples of each metric family in an OpenMetrics/Prometheus text.
function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) sums.set(match[1], (sums.get(match[1]) || 0) + value);
  }
  return sums;
}

async function refreshMetrics() {
  const now = performance.now();
  const sums = parseMetrics(await api("/metrics", true));
  const get = (name) => sums.get(name) || 0;
  const sample = {
    at: now,
    requests: get("speedlayer_http_requests_total") + get("speedlayer_resp_commands_total"),
    applied: get("speedlayer_store_updates_applied_total"),
    latencySum: get("speedlayer_http_request_seconds_sum"),
    latencyCount: get("speedlayer_http_request_seconds_count"),
  };
  const lag = get("speedlayer_event_queue_lag_seconds");
  const previous = state.previousMetrics;
  state.previousMetrics = sample;
  if (!previous) return;
  const seconds = Math.max(0.001, (sample.at - previous.at) / 1000);
  const push = (name, value, label, format) => {
    const series = state.series[name];
    series.push(Math.max(0, value));
    if (series.length > HISTORY) series.shift();
    $(label).textContent = format(Math.max(0, value));
    drawSpark($(`#spark-${name}`), series);
  };
  push("rate", (sample.requests - previous.requests) / seconds, "#rate-now", (v) => formatNumber(Math.round(v)));
  push("applied", (sample.applied - previous.applied) / seconds, "#applied-now", (v) => formatNumber(Math.round(v)));
  const count = sample.latencyCount - previous.latencyCount;
  push("latency", count > 0 ? 1000 * (sample.latencySum - previous.latencySum) / count : 0,
    "#latency-now", (v) => v.toFixed(2));
  push("lag", lag, "#lag-now", (v) => v.toFixed(1));
}

function drawSpark(svg, series) {
  const max = Math.max(1e-9, ...series);
  const points = series.map((v, i) => `${(i * 300) / (HISTORY - 1)},${58 - (v / max) * 54}`).join(" ");
  svg.replaceChildren(svgEl("polyline", { points }));
  svg.dataset.points = JSON.stringify(series);
}

// ---- the loop -----------------------------------------------------------------------

function showLogin(needed) {
  $("#login").hidden = !needed;
  $("#main").hidden = needed;
}

async function refresh() {
  clearTimeout(state.timer);
  const panels = [
    [refreshHealth, null],
    [async () => { await refreshDemo(); await refreshCluster(); }, "#cluster-extra"],
    [refreshViews, "#views tbody"],
    [refreshChart, "#chart-summary"],
    [refreshMetrics, "#rate-now"],
  ];
  const results = await Promise.allSettled(panels.map(([run]) => run()));
  if (results.some((r) => r.status === "rejected" && r.reason instanceof NeedsLogin)) {
    showLogin(true);
    if (state.token) $("#login-error").textContent = "wrong password";
    return;
  }
  showLogin(false);
  results.forEach((result, i) => {
    const target = panels[i][1];
    if (result.status === "rejected" && !(result.reason instanceof ApiError)) {
      reportScriptError(`script error: ${result.reason && result.reason.stack ? result.reason.stack : result.reason}`);
    }
    if (result.status === "rejected" && target) {
      const message = result.reason && result.reason.message ? result.reason.message : String(result.reason);
      const cell = $(target);
      if (cell.tagName === "TBODY") {
        cell.replaceChildren(el("tr", {}, el("td", { class: "bad", colSpan: 6 }, message)));
      } else {
        cell.textContent = message;
        cell.classList.add("bad");
      }
    } else if (target) {
      $(target).classList && $(target).classList.remove("bad");
    }
  });
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  state.timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  // `#token=...` in the address (e.g. from a script) is taken once and removed.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    state.token = fragment.get("token");
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const params = new URLSearchParams(location.search);
  $("#key-input").value = params.get("key") || localStorage.getItem("speedlayer-key") || "";
  $("#view-select").addEventListener("change", () => {
    localStorage.setItem("speedlayer-view", $("#view-select").value);
    refresh();
  });
  $("#key-input").addEventListener("change", () => {
    localStorage.setItem("speedlayer-key", $("#key-input").value);
    refresh();
  });
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    refresh();
  });
  refresh();
}

start();
