// The staff usage dashboard: per-minute rollups of every gateway process, plotted with uPlot; while
// the range ends now, the rollups and active connections arrive live over /admin/live.

import uPlot from "uplot";

const root = document.getElementById("dashboard");
const live = root.dataset.live === "1";
/** @type {Map<string, any>} rollup rows by gateway|app|minute */
const minutes = new Map();
/** @type {Map<string, Record<string, number>>} active connections by gateway, then app */
const active = new Map();
let bucketsMs = [];
let range = { start: new Date(root.dataset.start), end: new Date(root.dataset.end) };
const charts = {};

function keyOf(row) {
  return `${row.gateway}|${row.app}|${row.minute}`;
}

function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** The upper bound of a percentile from latency bucket counts. */
function percentile(counts, fraction) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i];
    if (seen >= fraction * total) return i < bucketsMs.length ? bucketsMs[i] : bucketsMs[bucketsMs.length - 1] * 2;
  }
  return null;
}

function series() {
  const start = Math.floor(range.start.getTime() / 60000) * 60;
  const end = Math.floor((live ? Date.now() : range.end.getTime()) / 60000) * 60;
  const xs = [];
  for (let t = start; t <= end; t += 60) xs.push(t);
  const index = new Map(xs.map((t, i) => [t, i]));
  const apps = new Set();
  const codes = new Set();
  for (const row of minutes.values()) {
    apps.add(row.app);
    for (const code of Object.keys(row.errors || {})) codes.add(code);
  }
  const frames = Object.fromEntries([...apps].map((a) => [a, xs.map(() => 0)]));
  const errors = Object.fromEntries([...codes].map((c) => [c, xs.map(() => 0)]));
  const latency = xs.map(() => new Array(bucketsMs.length + 1).fill(0));
  let totals = { frames: 0, results: 0, errors: 0 };
  for (const row of minutes.values()) {
    const i = index.get(Math.floor(new Date(row.minute).getTime() / 1000));
    if (i === undefined) continue;
    frames[row.app][i] += row.frames_in;
    totals.frames += row.frames_in;
    totals.results += row.results_out;
    for (const [code, n] of Object.entries(row.errors || {})) {
      errors[code][i] += n;
      totals.errors += n;
    }
    (row.latency_buckets || []).forEach((n, b) => (latency[i][b] += n));
  }
  return {
    xs, frames, errors, totals,
    p50: latency.map((c) => percentile(c, 0.5)),
    p95: latency.map((c) => percentile(c, 0.95)),
  };
}

const COLORS = ["#417690", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#2c3e50"];

function draw(id, names, columns, xs) {
  const el = document.getElementById(id);
  const opts = {
    width: Math.max(320, el.clientWidth || 480),
    height: 220,
    series: [
      {},
      ...names.map((name, i) => ({
        label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 5 },
      })),
    ],
    axes: [{}, { size: 50 }],
  };
  const data = [xs, ...columns];
  if (charts[id] && charts[id].series.length === names.length + 1) {
    charts[id].setData(data);
  } else {
    charts[id]?.destroy();
    charts[id] = new uPlot(opts, data, el);
  }
}

function render() {
  const s = series();
  const apps = Object.keys(s.frames).sort();
  draw("chart-frames", apps.length ? apps : ["(no traffic)"], apps.length ? apps.map((a) => s.frames[a]) : [s.xs.map(() => 0)], s.xs);
  draw("chart-latency", ["p50", "p95"], [s.p50, s.p95], s.xs);
  const codes = Object.keys(s.errors).sort();
  draw("chart-errors", codes.length ? codes : ["(no errors)"], codes.length ? codes.map((c) => s.errors[c]) : [s.xs.map(() => 0)], s.xs);
  document.getElementById("frames-total").textContent = s.totals.frames.toLocaleString();
  document.getElementById("results-total").textContent = s.totals.results.toLocaleString();
  document.getElementById("errors-total").textContent = s.totals.errors.toLocaleString();
  const byApp = {};
  for (const apps of active.values()) for (const [app, n] of Object.entries(apps)) byApp[app] = (byApp[app] || 0) + n;
  const total = Object.values(byApp).reduce((a, b) => a + b, 0);
  document.getElementById("active-now").textContent = String(total);
  document.getElementById("active-by-app").textContent = Object.entries(byApp).map(([a, n]) => `${a}: ${n}`).join(" · ");
}

function renderTopUsers(rows) {
  const body = document.querySelector("#top-users tbody");
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      for (const value of [row.username, row.connections, row.frames ?? 0, row.results ?? 0, row.seconds]) {
        const td = document.createElement("td");
        td.textContent = String(value);
        tr.append(td);
      }
      return tr;
    }),
  );
}

async function load() {
  const params = new URLSearchParams({ start: range.start.toISOString(), end: range.end.toISOString() });
  const response = await fetch(`${root.dataset.dataUrl}?${params}`, { credentials: "same-origin" });
  const data = await response.json();
  bucketsMs = data.buckets_ms;
  minutes.clear();
  for (const row of data.minutes) minutes.set(keyOf(row), row);
  active.clear();
  for (const [gateway, apps] of Object.entries(data.active)) active.set(gateway, apps);
  renderTopUsers(data.top_users);
  render();
}

function follow() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/admin/live`);
  const state = document.getElementById("live-state");
  socket.onopen = () => (state.textContent = "live");
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    active.set(message.gateway, message.active);
    for (const row of message.minutes) minutes.set(keyOf(row), row);
    range = { start: new Date(Date.now() - (range.end - range.start)), end: new Date() };
    render();
  };
  socket.onclose = () => {
    state.textContent = "reconnecting";
    setTimeout(follow, 2000);
  };
}

document.getElementById("range-start").value = toLocalInput(range.start);
document.getElementById("range-end").value = toLocalInput(range.end);
document.querySelector("form.range").addEventListener("submit", (event) => {
  event.preventDefault();
  const start = new Date(document.getElementById("range-start").value);
  const end = new Date(document.getElementById("range-end").value);
  location.search = new URLSearchParams({ start: start.toISOString(), end: end.toISOString() }).toString();
});
document.getElementById("export").addEventListener("click", (event) => {
  event.preventDefault();
  const params = new URLSearchParams({ start: range.start.toISOString(), end: range.end.toISOString() });
  location.href = `${root.dataset.exportUrl}?${params}`;
});
await load();
if (live) follow();
