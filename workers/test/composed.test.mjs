// All five Workers together in one workerd, wired as the playbook wires them: the gateway on the
// zone-wide routes, billing and telemetry on their more specific routes, auth and the limiter
// reachable only through service bindings, real KV and the real Rate Limiting binding. Local
// HTTP servers stand in for the origin, the failover droplet and the monitoring stack.

import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  workerModules, startServer, closedPort, fake, sha256Hex, signJwt,
  stripeSignature, startOfWindow, sleep, rawRequest, newMiniflare } from "./support.mjs";

const ZONE = "example.test";
const API = `api.${ZONE}`;
const apiKey = fake("FAKECANARY-key-");
const burstKey = fake("FAKECANARY-key-");
const revokedKey = fake("FAKECANARY-key-");
const jwtSecret = fake("FAKECANARY-jwt-");
const webhookSecret = fake("whsec_FAKECANARY");
const telemetryToken = fake("FAKECANARY-telemetry-");

let mf, backend, failover, monitor, monitorMode = "record";
const parked = [];

before(async () => {
  backend = await startServer((req, res, body) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({
      url: req.url,
      method: req.method,
      user: req.headers["x-user-id"] ?? null,
      key: req.headers["x-key-id"] ?? null,
      custom: req.headers["x-custom"] ?? null,
      sha256: createHash("sha256").update(body).digest("hex"),
    }));
  });
  failover = await startServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<h1>FAILOVER maintenance page</h1>");
  });
  monitor = await startServer((req, res) => {
    if (monitorMode === "hang") return parked.push(res);
    res.writeHead(204);
    res.end();
  });
  const downPort = await closedPort();

  mf = newMiniflare({
    workers: [
      {
        name: "blackroad-edge-gateway",
        ...workerModules("gateway"),
        routes: [`${ZONE}/*`, `*.${ZONE}/*`],
        kvNamespaces: { ROUTES: "state-namespace" },
        bindings: { MAINTENANCE_URL: `${failover.url}/` },
        serviceBindings: { AUTH: "blackroad-auth", RATELIMIT: "blackroad-ratelimit", TELEMETRY: "blackroad-telemetry" },
      },
      {
        name: "blackroad-auth",
        ...workerModules("auth"),
        kvNamespaces: { AUTH_KV: "auth-namespace" },
        bindings: { JWT_SECRET: jwtSecret },
      },
      {
        name: "blackroad-ratelimit",
        ...workerModules("ratelimit"),
        ratelimits: { LIMITER: { simple: { limit: 3, period: 10 } } },
        bindings: { LIMIT: "3", PERIOD: "10" },
      },
      {
        name: "blackroad-billing",
        ...workerModules("billing"),
        routes: [`${API}/billing/*`],
        kvNamespaces: { BILLING: "billing-namespace" },
        bindings: { STRIPE_WEBHOOK_SECRET: webhookSecret, WEBHOOK_TOLERANCE_SECONDS: "300" },
      },
      {
        name: "blackroad-telemetry",
        ...workerModules("telemetry"),
        routes: [`status.${ZONE}/*`],
        kvNamespaces: { STATE: "state-namespace" },
        bindings: {
          LOKI_URL: `${monitor.url}/loki/api/v1/push`,
          METRICS_URL: `${monitor.url}/metrics/job/blackroad-edge`,
          TELEMETRY_TOKEN: telemetryToken,
          METRICS_PUSH_SECONDS: "0",
        },
      },
    ],
  });

  const state = await mf.getKVNamespace("ROUTES", "blackroad-edge-gateway");
  const route = (hostname, paths) => state.put(`route:${hostname}`, JSON.stringify({ hostname, paths }));
  await route(API, [
    { prefix: "/public/", origin: backend.url, backend: "pi5-alpha:8000", auth: "none", rate_limit: false },
    { prefix: "/", origin: backend.url, backend: "pi5-alpha:8000", auth: "api_key", rate_limit: true },
  ]);
  await route(`www.${ZONE}`, [{ prefix: "/", origin: backend.url, backend: "pi5-alpha:8080", auth: "none", rate_limit: false }]);
  await route(`app.${ZONE}`, [{ prefix: "/", origin: backend.url, backend: "pi5-alpha:3000", auth: "session", rate_limit: false }]);
  await route(`down.${ZONE}`, [{ prefix: "/", origin: `http://127.0.0.1:${downPort}`, backend: "pi5-beta:80", auth: "none", rate_limit: false }]);
  await state.put(`health:${API}`, JSON.stringify({ ok: true, checked: "2026-04-01T10:00:00Z" }));
  await state.put(`health:down.${ZONE}`, JSON.stringify({ ok: false, checked: "2026-04-01T10:00:00Z" }));

  const keys = await mf.getKVNamespace("AUTH_KV", "blackroad-auth");
  await keys.put(`apikey:${sha256Hex(apiKey)}`, JSON.stringify({ id: "lab-demo", user: "lab-user", revoked: false }));
  await keys.put(`apikey:${sha256Hex(burstKey)}`, JSON.stringify({ id: "lab-burst", user: "lab-user", revoked: false }));
  await keys.put(`apikey:${sha256Hex(revokedKey)}`, JSON.stringify({ id: "lab-old", user: "lab-user", revoked: true }));
});

after(async () => {
  await mf?.dispose();
  for (const res of parked) res.destroy();
  await Promise.all([backend, failover, monitor].map((s) => s?.close()));
});

beforeEach(() => {
  backend.seen.length = 0;
  monitor.seen.length = 0;
  monitorMode = "record";
});

async function waitFor(predicate, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test("API host: key checked by auth, identity at the backend, rate limit headers on the answer", async () => {
  const res = await mf.dispatchFetch(`http://${API}/v1/things?page=2`, {
    headers: { authorization: `Bearer ${apiKey}`, "x-user-id": "admin", "x-custom": "kept" },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("ratelimit-limit"), "3");
  assert.equal(res.headers.get("ratelimit-policy"), "3;w=10");
  assert.deepEqual(await res.json(), {
    url: "/v1/things?page=2", method: "GET", user: "lab-user", key: "lab-demo", custom: "kept",
    sha256: sha256Hex(""),
  });
  const seen = backend.seen.at(-1).headers;
  assert.equal(seen.authorization, undefined, "the API key itself never reaches the backend");
  assert.ok(!JSON.stringify(seen).includes(apiKey));
});

test("API host: a POST with a fixed-length body passes auth and keeps body and framing", async () => {
  const body = `{"name":"${fake()}"}`;
  const res = await rawRequest(await mf.ready, {
    host: API, path: "/v1/things", method: "POST", body,
    headers: { "x-api-key": apiKey, "content-type": "application/json" },
  });
  assert.equal(res.status, 200);
  const seen = JSON.parse(res.body);
  assert.equal(seen.method, "POST");
  assert.equal(seen.user, "lab-user");
  assert.equal(seen.sha256, sha256Hex(body));
  assert.equal(backend.seen[0].headers["content-length"], String(body.length), "Content-Length survives");
  assert.equal(backend.seen[0].headers["transfer-encoding"], undefined);
  assert.equal(backend.seen[0].headers.host, `127.0.0.1:${backend.port}`, "Host follows the origin URL");
  assert.equal(backend.seen[0].headers["x-api-key"], undefined, "the API key itself never reaches the backend");
});

test("API host: missing, unknown and revoked keys never reach the backend", async () => {
  let res = await mf.dispatchFetch(`http://${API}/v1/things`);
  assert.equal(res.status, 401);
  assert.match(res.headers.get("www-authenticate"), /^Bearer/);
  assert.deepEqual(await res.json(), { error: "missing_key" });
  res = await mf.dispatchFetch(`http://${API}/v1/things`, { headers: { "x-api-key": fake("FAKECANARY-key-") } });
  assert.equal(res.status, 403);
  assert.deepEqual(await res.json(), { error: "invalid_key" });
  res = await mf.dispatchFetch(`http://${API}/v1/things`, { headers: { authorization: `Bearer ${revokedKey}` } });
  assert.equal(res.status, 403);
  assert.deepEqual(await res.json(), { error: "revoked_key" });
  assert.equal(backend.seen.length, 0);
});

test("API host: the fourth request in a window is 429 with Retry-After", async () => {
  await startOfWindow(10);
  const call = () => mf.dispatchFetch(`http://${API}/v1/burst`, { headers: { "x-api-key": burstKey } });
  for (let i = 0; i < 3; i++) {
    const res = await call();
    assert.equal(res.status, 200, `request ${i + 1}`);
    await res.arrayBuffer();
  }
  const res = await call();
  assert.equal(res.status, 429);
  const retry = Number(res.headers.get("retry-after"));
  assert.ok(retry >= 1 && retry <= 10, `Retry-After ${retry}`);
  assert.equal(res.headers.get("ratelimit-remaining"), "0");
  assert.equal(res.headers.get("ratelimit-limit"), "3");
  assert.equal(res.headers.get("ratelimit-reset"), String(retry));
  assert.equal((await res.json()).error, "rate_limited");
  assert.equal(backend.seen.length, 3);
});

test("session host: a large streamed POST and its headers arrive intact", async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = signJwt(jwtSecret, { sub: "sess-user", exp: now + 300 });
  const payload = randomBytes(3 * 1024 * 1024);
  const parts = [payload.subarray(0, 1024 * 1024), payload.subarray(1024 * 1024)];
  const body = new ReadableStream({
    pull(controller) {
      const next = parts.shift();
      if (next) controller.enqueue(new Uint8Array(next));
      else controller.close();
    },
  });
  const res = await mf.dispatchFetch(`http://app.${ZONE}/upload`, {
    method: "POST", body, duplex: "half",
    headers: { cookie: `session=${token}`, "x-custom": "through-the-chain", "content-type": "application/octet-stream" },
  });
  assert.equal(res.status, 200);
  const seen = await res.json();
  assert.equal(seen.user, "sess-user");
  assert.equal(seen.key, null);
  assert.equal(seen.custom, "through-the-chain");
  assert.equal(seen.sha256, createHash("sha256").update(payload).digest("hex"));

  const expired = signJwt(jwtSecret, { sub: "sess-user", exp: now - 3600 });
  const denied = await mf.dispatchFetch(`http://app.${ZONE}/`, { headers: { authorization: `Bearer ${expired}` } });
  assert.equal(denied.status, 401);
  assert.deepEqual(await denied.json(), { error: "session_expired" });
});

test("open host: client identity headers are dropped", async () => {
  const res = await mf.dispatchFetch(`http://www.${ZONE}/`, { headers: { "x-user-id": "admin", "x-key-id": "root" } });
  const seen = await res.json();
  assert.equal(seen.user, null);
  assert.equal(seen.key, null);
  const pub = await mf.dispatchFetch(`http://${API}/public/x`, { headers: { "x-user-id": "admin" } });
  assert.equal(pub.status, 200, "auth none prefix on the API host");
  assert.equal((await pub.json()).user, null);
});

test("billing route wins over the gateway's wildcard and verifies Stripe signatures", async () => {
  const evt = {
    id: `evt_FAKE${randomBytes(6).toString("hex")}`, object: "event", type: "customer.subscription.created",
    created: Math.floor(Date.now() / 1000),
    data: { object: { id: "sub_FAKE_composed", customer: "cus_FAKE", status: "active", items: { data: [] } } },
  };
  const raw = JSON.stringify(evt);
  const deliver = (signature) => mf.dispatchFetch(`http://${API}/billing/webhook`, {
    method: "POST", body: raw, headers: { "stripe-signature": signature, "content-type": "application/json" },
  });
  let res = await deliver(stripeSignature(fake("whsec_FAKECANARY"), raw));
  assert.equal(res.status, 400);
  await res.arrayBuffer();
  res = await deliver(stripeSignature(webhookSecret, raw));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, applied: true });
  res = await deliver(stripeSignature(webhookSecret, raw));
  assert.deepEqual(await res.json(), { received: true, duplicate: true });
  const billing = await mf.getKVNamespace("BILLING", "blackroad-billing");
  assert.equal((await billing.get("subscription:sub_FAKE_composed", "json")).status, "active");
  assert.equal(backend.seen.length, 0, "webhooks never reach the API backend");
});

test("origin down: 503 with the failover's maintenance page", async () => {
  const res = await mf.dispatchFetch(`http://down.${ZONE}/anything`);
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "60");
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.match(await res.text(), /FAILOVER maintenance page/);
});

test("status host is served by telemetry from the shared routing table", async () => {
  const res = await mf.dispatchFetch(`http://status.${ZONE}/status.json`);
  assert.equal(res.status, 200);
  const { hosts } = await res.json();
  assert.deepEqual(hosts.map((h) => h.hostname), [API, `app.${ZONE}`, `down.${ZONE}`, `www.${ZONE}`]);
  assert.equal(hosts.find((h) => h.hostname === API).ok, true);
  assert.equal(hosts.find((h) => h.hostname === `down.${ZONE}`).ok, false);
  const html = await (await mf.dispatchFetch(`http://status.${ZONE}/`)).text();
  assert.match(html, /www\.example\.test/);
});

test("each request is shipped to Loki and the metrics endpoint", async () => {
  const res = await mf.dispatchFetch(`http://www.${ZONE}/shipped?secret=FAKECANARY`);
  await res.arrayBuffer();
  await waitFor(() => monitor.seen.some((r) => r.url.startsWith("/loki/") && r.body.includes("www.example.test")) &&
    monitor.seen.some((r) => r.url.startsWith("/metrics/")), "Loki and metrics pushes");
  const loki = monitor.seen.find((r) => r.url.startsWith("/loki/") && r.body.includes("www.example.test"));
  assert.equal(loki.headers.authorization, `Bearer ${telemetryToken}`);
  const push = JSON.parse(loki.body);
  assert.deepEqual(push.streams[0].stream, { job: "blackroad-edge", host: `www.${ZONE}`, status_class: "2xx" });
  const line = JSON.parse(push.streams[0].values[0][1]);
  assert.equal(line.path_prefix, "/");
  assert.equal(line.route_found, true);
  assert.equal(line.method, "GET");
  assert.doesNotMatch(push.streams[0].values[0][1], /shipped|FAKECANARY/, "only the prefix, never the path or query");
  const metrics = monitor.seen.filter((r) => r.url.startsWith("/metrics/")).map((r) => r.body.toString());
  assert.ok(metrics.some((m) => /^blackroad_edge_requests_total\{host="www\.example\.test",status_class="2xx"\} \d+$/m.test(m)));
});

test("a monitoring server that never answers does not delay users", async () => {
  monitorMode = "hang";
  const started = Date.now();
  for (let i = 0; i < 3; i++) {
    const res = await mf.dispatchFetch(`http://www.${ZONE}/`);
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  }
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 2500, `three requests took ${elapsed} ms with monitoring hung`);
  await waitFor(() => parked.length >= 3, "telemetry pushes to hang at the monitor");
});
