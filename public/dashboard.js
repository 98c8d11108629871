// The dashboard page: reads GET /dashboard (JSON) and GET /health, draws the counts and
// latencies as inline SVG, and refreshes itself every 30 s (each view reads D1 rows, which D1
// bills; see d1-migrations/0003_consultation_counts.sql). No external requests.
"use strict";

const REFRESH_MS = 30000;
const SOURCES = ["groq", "ollama", "sqlite"];
const PROVIDERS = ["groq", "ollama"];
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function svg(name, attributes, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

function clear(el) {
  while (el.lastChild && el.lastChild.nodeName !== "title") el.removeChild(el.lastChild);
}

const ms = (value) => (value === null || value === undefined ? "–" : `${value} ms`);
const when = (value) => (value ? new Date(value).toLocaleTimeString() : "–");

function drawBySource(metrics) {
  const chart = $("by-source");
  clear(chart);
  const counts = SOURCES.map((source) => metrics.by_source[source] || 0);
  const max = Math.max(1, ...counts);
  SOURCES.forEach((source, i) => {
    const y = 20 + i * 60;
    const width = Math.round((500 * counts[i]) / max);
    chart.appendChild(svg("text", { x: 70, y: y + 22, class: "axis", "text-anchor": "end" }, source));
    chart.appendChild(svg("rect", { x: 80, y, width: 500, height: 36, rx: 4, class: "track" }));
    const bar = svg("rect", { x: 80, y, width, height: 36, rx: 4, class: `bar ${source}`, "data-source": source, "data-count": counts[i] });
    bar.appendChild(svg("title", {}, `${source}: ${counts[i]}`));
    chart.appendChild(bar);
    chart.appendChild(svg("text", { x: 80 + width + 8, y: y + 23, class: "count", "data-source": source }, String(counts[i])));
  });
  const share = metrics.total ? SOURCES.map((s, i) => `${s} ${Math.round((100 * counts[i]) / metrics.total)}%`).join(" · ") : "no consultations yet";
  $("by-source-caption").textContent = share;
}

function drawLatency(metrics) {
  const chart = $("latency-chart");
  clear(chart);
  const values = PROVIDERS.flatMap((p) => [metrics.providers[p].latency_ms.p50, metrics.providers[p].latency_ms.p95]);
  const max = Math.max(1, ...values.filter((v) => v !== null));
  PROVIDERS.forEach((provider, i) => {
    const y = 15 + i * 78;
    chart.appendChild(svg("text", { x: 70, y: y + 32, class: "axis", "text-anchor": "end" }, provider));
    ["p50", "p95"].forEach((percentile, j) => {
      const value = metrics.providers[provider].latency_ms[percentile];
      const top = y + j * 30;
      const width = value === null ? 0 : Math.max(2, Math.round((400 * value) / max));
      chart.appendChild(svg("rect", { x: 80, y: top, width, height: 24, rx: 3, class: `bar ${percentile}`, "data-provider": provider, "data-percentile": percentile, "data-ms": value === null ? "" : value }));
      const label = value === null ? `${percentile}: no samples` : `${percentile} ${value} ms`;
      chart.appendChild(svg("text", { x: 80 + width + 8, y: top + 17, class: "count" }, label));
    });
  });
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function drawProviders(metrics) {
  const body = $("providers");
  body.replaceChildren();
  for (const name of PROVIDERS) {
    const p = metrics.providers[name];
    const row = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    row.appendChild(th);
    cell(row, p.configured ? "yes" : "no");
    cell(row, String(p.calls));
    cell(row, String(p.answers));
    cell(row, `${ms(p.latency_ms.p50)} / ${ms(p.latency_ms.p95)}`);
    cell(row, `${ms(p.first_token_ms.p50)} / ${ms(p.first_token_ms.p95)}`);
    const failures = Object.entries(p.failures).map(([reason, n]) => `${reason.replace(/_/g, " ")} ${n}`).join(", ");
    cell(row, failures || "none");
    cell(row, when(p.cool_down_until), p.cool_down_until ? "warn" : "");
    cell(row, when(p.breaker_open_until), p.breaker_open_until ? "warn" : "");
    body.appendChild(row);
  }
}

function drawHealth(health) {
  $("health").textContent = health ? health.status : "unreachable";
  $("health").className = `value status-${health ? health.status : "critical"}`;
  const body = $("checks");
  body.replaceChildren();
  if (!health) return;
  for (const [name, check] of Object.entries(health.checks)) {
    const row = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    row.appendChild(th);
    cell(row, check.status.replace(/_/g, " "), `status-${check.status === "ok" ? "ok" : name === "database" ? "critical" : "degraded"}`);
    cell(row, check.error || (check.count !== undefined && check.count !== null ? `${check.count} canned answers` : ""));
    body.appendChild(row);
  }
}

async function readJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
  const body = await response.json();
  if (!response.ok && path !== "/health") throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

let loads = 0;

async function refresh() {
  try {
    const [metrics, health] = await Promise.all([readJson("/dashboard"), readJson("/health").catch(() => null)]);
    $("total").textContent = String(metrics.total);
    $("fallback").textContent = `${Math.round(metrics.fallback_rate * 100)}%`;
    $("latency").textContent = `${ms(metrics.latency_ms.p50)} / ${ms(metrics.latency_ms.p95)}`;
    $("overhead").textContent = `${ms(metrics.overhead_ms.p50)} / ${ms(metrics.overhead_ms.p95)}`;
    $("limited").textContent = String(metrics.limited);
    drawBySource(metrics);
    drawLatency(metrics);
    drawProviders(metrics);
    drawHealth(health);
    $("error").hidden = true;
    $("updated").textContent = `Updated ${when(metrics.generated_at)}${metrics.since ? ` · since ${new Date(metrics.since).toLocaleString()}` : ""}`;
    document.body.dataset.loads = String(++loads);
  } catch (error) {
    $("error").textContent = `The metrics cannot be read right now (${error.message}). Retrying in ${REFRESH_MS / 1000} s.`;
    $("error").hidden = false;
  }
}

refresh();
setInterval(() => {
  if (document.visibilityState === "visible") refresh();
}, REFRESH_MS);
