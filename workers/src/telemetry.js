// blackroad-telemetry: takes request events from the gateway (service binding) and ships them to
// Loki (one log line per request) and to a Pushgateway-style endpoint (Prometheus counters), and
// serves the public status page on status.<domain>.
//
// Shipping always happens in ctx.waitUntil after a 202, and every sink error is swallowed: a slow
// or dead monitoring server must never show up as latency or errors for users.

// Histogram buckets in seconds, from a cache hit to a slow origin.
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const DEFAULT_PUSH_SECONDS = 10;
const SINK_TIMEOUT_MS = 5000;
// Cloudflare's per-key KV read limit is generous, but a status page with more hosts than this is
// a configuration error, not something to fetch on every view.
const MAX_STATUS_HOSTS = 200;

// Module scope lives as long as the isolate: counters are cumulative per isolate, which is what
// Prometheus counters expect (each isolate pushes under its own `instance`).
const requests = new Map();
const durations = new Map();
let isolateId = null;
let lastPush = 0;

// Hosts that the routing table does not know come from whatever a client put in Host; as a label
// they would let anyone create unbounded series in Prometheus and streams in Loki.
const hostLabel = (event) => (event.route_found && event.host ? event.host : "_unrouted");
const statusClass = (status) => (status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : "unknown");

function count(event) {
  const host = hostLabel(event);
  const cls = statusClass(event.status);
  const key = `${host}\u0000${cls}`;
  requests.set(key, (requests.get(key) || 0) + 1);
  let hist = durations.get(host);
  if (!hist) durations.set(host, (hist = { buckets: BUCKETS.map(() => 0), sum: 0, count: 0 }));
  const seconds = Math.max(0, Number(event.duration_ms) || 0) / 1000;
  BUCKETS.forEach((le, i) => { if (seconds <= le) hist.buckets[i] += 1; });
  hist.sum += seconds;
  hist.count += 1;
}

const escapeLabel = (value) => String(value).replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');

// Prometheus text exposition format 0.0.4.
function exposition() {
  const lines = [
    "# HELP blackroad_edge_requests_total Requests answered by the edge gateway.",
    "# TYPE blackroad_edge_requests_total counter",
  ];
  for (const [key, value] of requests) {
    const [host, cls] = key.split("\u0000");
    lines.push(`blackroad_edge_requests_total{host="${escapeLabel(host)}",status_class="${cls}"} ${value}`);
  }
  lines.push(
    "# HELP blackroad_edge_request_duration_seconds Time from request to response headers at the edge.",
    "# TYPE blackroad_edge_request_duration_seconds histogram",
  );
  for (const [host, hist] of durations) {
    const h = escapeLabel(host);
    BUCKETS.forEach((le, i) => {
      lines.push(`blackroad_edge_request_duration_seconds_bucket{host="${h}",le="${le}"} ${hist.buckets[i]}`);
    });
    lines.push(`blackroad_edge_request_duration_seconds_bucket{host="${h}",le="+Inf"} ${hist.count}`);
    lines.push(`blackroad_edge_request_duration_seconds_sum{host="${h}"} ${hist.sum}`);
    lines.push(`blackroad_edge_request_duration_seconds_count{host="${h}"} ${hist.count}`);
  }
  return `${lines.join("\n")}\n`;
}

function sinkHeaders(env, contentType) {
  const headers = { "content-type": contentType };
  if (env.TELEMETRY_TOKEN) headers.authorization = `Bearer ${env.TELEMETRY_TOKEN}`;
  return headers;
}

async function send(name, url, init) {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(SINK_TIMEOUT_MS) });
    await res.body?.cancel();
    if (!res.ok) console.warn(`${name} answered ${res.status}`);
  } catch (err) {
    console.warn(`${name} unreachable:`, String(err));
  }
}

function shipLog(env, event) {
  if (!env.LOKI_URL) return null;
  const ms = Number.isFinite(event.ts) ? Math.floor(event.ts) : Date.now();
  const body = {
    streams: [{
      // Labels stay low-cardinality; path prefix, user and timing go in the line, where
      // LogQL's `| json` can still filter on them.
      stream: { job: "blackroad-edge", host: hostLabel(event), status_class: statusClass(event.status) },
      values: [[`${BigInt(ms) * 1000000n}`, JSON.stringify(event)]],
    }],
  };
  return send("loki", env.LOKI_URL, {
    method: "POST",
    headers: sinkHeaders(env, "application/json"),
    body: JSON.stringify(body),
  });
}

// Counters are pushed at most once per interval per isolate; the push carries the cumulative
// totals, so a skipped or failed push loses no counts, only freshness.
function shipMetrics(env) {
  if (!env.METRICS_URL) return null;
  const interval = Number.parseInt(env.METRICS_PUSH_SECONDS, 10);
  const seconds = Number.isNaN(interval) || interval < 0 ? DEFAULT_PUSH_SECONDS : interval;
  const now = Date.now();
  if (lastPush && now - lastPush < seconds * 1000) return null;
  lastPush = now;
  // Random values are not allowed in global scope, so the isolate names itself on first use.
  isolateId ??= crypto.randomUUID();
  const url = `${env.METRICS_URL.replace(/\/+$/, "")}/instance/${isolateId}`;
  return send("metrics", url, {
    method: "POST",
    headers: sinkHeaders(env, "text/plain; version=0.0.4; charset=utf-8"),
    body: exposition(),
  });
}

async function acceptEvent(request, env, ctx) {
  let event;
  try {
    event = await request.json();
  } catch {
    return new Response(null, { status: 400 });
  }
  if (!event || typeof event !== "object") return new Response(null, { status: 400 });
  count(event);
  ctx.waitUntil(Promise.all([shipLog(env, event), shipMetrics(env)]));
  return new Response(null, { status: 202 });
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readStatus(env) {
  const names = [];
  let cursor;
  do {
    const page = await env.STATE.list({ prefix: "route:", cursor });
    for (const key of page.keys) names.push(key.name);
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor && names.length < MAX_STATUS_HOSTS);
  const hosts = await Promise.all(names.slice(0, MAX_STATUS_HOSTS).map(async (name) => {
    const [route, health] = await Promise.all([
      env.STATE.get(name, "json").catch(() => null),
      env.STATE.get(`health:${name.slice("route:".length)}`, "json").catch(() => null),
    ]);
    // Only the public hostname and its health: origins and backends are internal topology.
    return {
      hostname: route?.hostname || name.slice("route:".length),
      ok: typeof health?.ok === "boolean" ? health.ok : null,
      checked: typeof health?.checked === "string" ? health.checked : null,
    };
  }));
  return hosts.sort((a, b) => a.hostname.localeCompare(b.hostname));
}

function statusPage(hosts) {
  const rows = hosts.map((h) => {
    const state = h.ok === null ? "unknown" : h.ok ? "operational" : "down";
    return `<tr class="${state}"><td>${escapeHtml(h.hostname)}</td><td>${state}</td>` +
      `<td>${h.checked ? escapeHtml(h.checked) : "&mdash;"}</td></tr>`;
  }).join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BlackRoad status</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}td,th{padding:.25rem 1rem;text-align:left}
.operational td:nth-child(2){color:#17803d}.down td:nth-child(2){color:#b42318}.unknown td:nth-child(2){color:#667085}</style>
</head><body><h1>BlackRoad status</h1>
<table><thead><tr><th>Service</th><th>Status</th><th>Last checked</th></tr></thead><tbody>
${rows}
</tbody></table></body></html>
`;
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    // Events are only accepted under the internal name a service binding uses: a public
    // request on status.<domain> carries the public Host and cannot inject fake traffic.
    if (url.hostname === "telemetry.internal") {
      if (request.method === "POST" && url.pathname === "/event") return acceptEvent(request, env, ctx);
      return new Response(null, { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    if (url.pathname !== "/" && url.pathname !== "/status.json") {
      return new Response("not found\n", { status: 404, headers: { "content-type": "text/plain" } });
    }
    const hosts = await readStatus(env);
    // Short public caching: the page is read by many and KV reads are not free.
    const cache = { "cache-control": "public, max-age=30" };
    if (url.pathname === "/status.json") return Response.json({ hosts }, { headers: cache });
    return new Response(statusPage(hosts), {
      headers: { ...cache, "content-type": "text/html; charset=utf-8" },
    });
  },
};
