// blackroad-telemetry on its own, in workerd: what it ships to Loki and to the metrics push
// endpoint (checked by a local server), that a dead monitoring server costs the caller nothing,
// and the status page.

import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { workerModules, startServer, fake, sleep, newMiniflare } from "./support.mjs";

let mf, sink, hanging, state, telemetry, eager, quiet, stuck;
const token = fake("FAKECANARY-telemetry-");
const hung = [];

before(async () => {
  sink = await startServer((req, res) => {
    res.writeHead(req.url.startsWith("/loki/") ? 204 : 200);
    res.end();
  });
  // Accepts the connection and the request, never answers.
  hanging = await startServer((req, res) => { hung.push(res); });
  const worker = (name, bindings) => ({ name, ...workerModules("telemetry"), kvNamespaces: { STATE: "state" }, bindings });
  mf = newMiniflare({
    workers: [
      worker("telemetry", {
        LOKI_URL: `${sink.url}/loki/api/v1/push`,
        METRICS_URL: `${sink.url}/metrics/job/blackroad-edge`,
        TELEMETRY_TOKEN: token,
      }),
      worker("telemetry-eager", {
        LOKI_URL: "",
        METRICS_URL: `${sink.url}/eager/metrics/job/blackroad-edge/`,
        METRICS_PUSH_SECONDS: "0",
      }),
      worker("telemetry-quiet", { LOKI_URL: "", METRICS_URL: "" }),
      worker("telemetry-stuck", {
        LOKI_URL: `${hanging.url}/loki/api/v1/push`,
        METRICS_URL: `${hanging.url}/metrics/job/blackroad-edge`,
      }),
    ],
  });
  state = await mf.getKVNamespace("STATE", "telemetry");
  [telemetry, eager, quiet, stuck] = await Promise.all(
    ["telemetry", "telemetry-eager", "telemetry-quiet", "telemetry-stuck"].map((n) => mf.getWorker(n)));
});

after(async () => {
  await mf?.dispose();
  for (const res of hung) res.destroy();
  await Promise.all([sink?.close(), hanging?.close()]);
});

beforeEach(() => {
  sink.seen.length = 0;
});

const sampleEvent = (extra = {}) => ({
  ts: Date.now(), host: "api.example.test", method: "GET", path_prefix: "/v2/", status: 200,
  duration_ms: 42, route_found: true, user_id: "lab-user", ...extra,
});

const post = (worker, event) => worker.fetch("https://telemetry.internal/event", {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event),
});

async function waitFor(predicate, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// Every sample line of the text exposition format: name{labels} value.
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|\+Inf|NaN)$/;

function parseExposition(text) {
  assert.ok(text.endsWith("\n"), "exposition ends with a newline");
  const samples = new Map();
  const types = new Map();
  for (const line of text.trimEnd().split("\n")) {
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ");
      types.set(name, type);
      continue;
    }
    if (line.startsWith("# HELP ")) continue;
    assert.match(line, SAMPLE);
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return { samples, types };
}

test("an event is accepted at once and shipped to Loki and the metrics endpoint", async () => {
  const event = sampleEvent();
  const res = await post(telemetry, event);
  assert.equal(res.status, 202);
  await waitFor(() => sink.seen.length === 2, "two pushes");

  const loki = sink.seen.find((r) => r.url === "/loki/api/v1/push");
  assert.equal(loki.method, "POST");
  assert.equal(loki.headers.authorization, `Bearer ${token}`);
  assert.match(loki.headers["content-type"], /^application\/json/);
  const push = JSON.parse(loki.body);
  assert.equal(push.streams.length, 1);
  assert.deepEqual(push.streams[0].stream, { job: "blackroad-edge", host: "api.example.test", status_class: "2xx" });
  const [[ns, line]] = push.streams[0].values;
  assert.match(ns, /^\d{19}$/, "Loki wants unix nanoseconds as a string");
  assert.equal(ns, `${event.ts}000000`);
  assert.deepEqual(JSON.parse(line), event);

  const metrics = sink.seen.find((r) => r.url.startsWith("/metrics/"));
  assert.equal(metrics.method, "POST");
  assert.match(metrics.url, /^\/metrics\/job\/blackroad-edge\/instance\/[0-9a-f-]{36}$/);
  assert.equal(metrics.headers.authorization, `Bearer ${token}`);
  assert.match(metrics.headers["content-type"], /^text\/plain; version=0\.0\.4/);
  const { samples, types } = parseExposition(metrics.body.toString());
  assert.equal(types.get("blackroad_edge_requests_total"), "counter");
  assert.equal(types.get("blackroad_edge_request_duration_seconds"), "histogram");
  assert.equal(samples.get('blackroad_edge_requests_total{host="api.example.test",status_class="2xx"}'), 1);
  assert.equal(samples.get('blackroad_edge_request_duration_seconds_count{host="api.example.test"}'), 1);
  assert.equal(samples.get('blackroad_edge_request_duration_seconds_sum{host="api.example.test"}'), 0.042);
  assert.equal(samples.get('blackroad_edge_request_duration_seconds_bucket{host="api.example.test",le="0.025"}'), 0);
  assert.equal(samples.get('blackroad_edge_request_duration_seconds_bucket{host="api.example.test",le="0.05"}'), 1);
  assert.equal(samples.get('blackroad_edge_request_duration_seconds_bucket{host="api.example.test",le="+Inf"}'), 1);

  // Within the push interval only the log line goes out; the counter waits for the next push.
  await (await post(telemetry, sampleEvent({ status: 503 }))).arrayBuffer();
  await waitFor(() => sink.seen.length === 3, "the second log push");
  await sleep(100);
  assert.equal(sink.seen.filter((r) => r.url.startsWith("/metrics/")).length, 1);
  const second = JSON.parse(sink.seen[2].body);
  assert.equal(second.streams[0].stream.status_class, "5xx");
});

test("counters are cumulative per isolate; unrouted hosts share one label", async () => {
  for (const event of [sampleEvent(), sampleEvent({ status: 404 }), sampleEvent({ host: "evil-random.example", route_found: false, status: 404 })]) {
    await (await post(eager, event)).arrayBuffer();
  }
  await waitFor(() => sink.seen.length === 3, "three metric pushes");
  assert.ok(sink.seen.every((r) => /^\/eager\/metrics\/job\/blackroad-edge\/instance\/[0-9a-f-]{36}$/.test(r.url)));
  assert.equal(new Set(sink.seen.map((r) => r.url)).size, 1, "one isolate, one instance id");
  assert.equal(sink.seen[0].headers.authorization, undefined, "no token, no Authorization");
  // Pushes run concurrently; the one carrying all three events is the longest.
  const last = sink.seen.map((r) => r.body.toString()).sort((a, b) => b.length - a.length)[0];
  const { samples } = parseExposition(last);
  assert.equal(samples.get('blackroad_edge_requests_total{host="api.example.test",status_class="2xx"}'), 1);
  assert.equal(samples.get('blackroad_edge_requests_total{host="api.example.test",status_class="4xx"}'), 1);
  assert.equal(samples.get('blackroad_edge_requests_total{host="_unrouted",status_class="4xx"}'), 1);
  assert.doesNotMatch(last, /evil-random/);
});

test("empty sink URLs ship nothing", async () => {
  const res = await post(quiet, sampleEvent());
  assert.equal(res.status, 202);
  await sleep(200);
  assert.equal(sink.seen.length, 0);
});

test("a monitoring server that never answers costs the caller nothing", async () => {
  const started = Date.now();
  for (let i = 0; i < 5; i++) {
    const res = await post(stuck, sampleEvent());
    assert.equal(res.status, 202);
  }
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 2500, `five events took ${elapsed} ms`);
  await waitFor(() => hung.length >= 2, "the pushes to reach the stuck server");
});

test("events only under the internal name; bad events are 400", async () => {
  let res = await telemetry.fetch("https://status.example.test/event", { method: "POST", body: "{}" });
  assert.equal(res.status, 405);
  await res.arrayBuffer();
  res = await telemetry.fetch("https://telemetry.internal/other", { method: "POST", body: "{}" });
  assert.equal(res.status, 404);
  res = await telemetry.fetch("https://telemetry.internal/event", { method: "POST", body: "not json" });
  assert.equal(res.status, 400);
  await sleep(50);
  assert.equal(sink.seen.length, 0);
});

test("the status page lists public hosts and their health, nothing internal", async () => {
  const route = (hostname) => ({ hostname, paths: [{ prefix: "/", origin: `https://${hostname}`, backend: "pi5-alpha:8000", auth: "none", rate_limit: false }] });
  await state.put("route:api.example.test", JSON.stringify(route("api.example.test")));
  await state.put("route:www.example.test", JSON.stringify(route("www.example.test")));
  await state.put("route:new.example.test", JSON.stringify(route("new.example.test")));
  await state.put("health:api.example.test", JSON.stringify({ ok: true, checked: "2026-04-01T10:00:00Z" }));
  await state.put("health:www.example.test", JSON.stringify({ ok: false, checked: "2026-04-01T10:00:05Z" }));

  let res = await telemetry.fetch("https://status.example.test/");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "public, max-age=30");
  assert.match(res.headers.get("content-type"), /^text\/html/);
  const html = await res.text();
  assert.match(html, /<td>api\.example\.test<\/td><td>operational<\/td><td>2026-04-01T10:00:00Z<\/td>/);
  assert.match(html, /<td>www\.example\.test<\/td><td>down<\/td>/);
  assert.match(html, /<td>new\.example\.test<\/td><td>unknown<\/td>/);
  assert.doesNotMatch(html, /pi5-alpha|8000|origin/);

  res = await telemetry.fetch("https://status.example.test/status.json");
  assert.deepEqual(await res.json(), {
    hosts: [
      { hostname: "api.example.test", ok: true, checked: "2026-04-01T10:00:00Z" },
      { hostname: "new.example.test", ok: null, checked: null },
      { hostname: "www.example.test", ok: false, checked: "2026-04-01T10:00:05Z" },
    ],
  });

  res = await telemetry.fetch("https://status.example.test/nope");
  assert.equal(res.status, 404);
  await res.arrayBuffer();
});

test("the status page escapes what it prints", async () => {
  await state.put("route:x.example.test", JSON.stringify({ hostname: "<script>alert(1)</script>", paths: [] }));
  const html = await (await telemetry.fetch("https://status.example.test/")).text();
  assert.doesNotMatch(html, /<script>/);
  assert.match(html, /&#60;script&#62;/);
  await state.delete("route:x.example.test");
});
