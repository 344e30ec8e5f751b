// The gateway on its own, in workerd: real KV for the routing table, local HTTP servers as
// origins and failover, and the three service bindings replaced by Node functions so each test
// can see exactly what the gateway asks auth, the limiter and telemetry.

import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Response as MfResponse } from "miniflare";
import { workerModules, startServer, closedPort, fake, sleep, newMiniflare } from "./support.mjs";

let mf, routes, origin, v2, failover, downPort;
const calls = { auth: [], ratelimit: [], telemetry: [] };
// Per-test behaviour of the stubbed bindings.
let authReply, rateReply, telemetryReply;

const SITE = "api.example.test";

before(async () => {
  origin = await startServer((req, res, body) => {
    if (req.url.startsWith("/status/")) {
      res.writeHead(Number(req.url.split("/")[2]), { "content-type": "text/plain" });
      return res.end("origin says hi");
    }
    if (req.url === "/redirect") {
      res.writeHead(302, { location: "/elsewhere" });
      return res.end();
    }
    res.writeHead(200, {
      "content-type": "application/json",
      "x-origin": "root",
      "set-cookie": "a=1; Path=/",
    });
    res.end(JSON.stringify({ url: req.url, method: req.method, length: body.length }));
  });
  v2 = await startServer((req, res) => {
    res.writeHead(200, { "x-origin": "v2" });
    res.end(req.url);
  });
  failover = await startServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<h1>FAILOVER maintenance page</h1>");
  });
  downPort = await closedPort();

  mf = newMiniflare({
    workers: [{
      name: "gateway",
      ...workerModules("gateway"),
      kvNamespaces: { ROUTES: "state" },
      bindings: { MAINTENANCE_URL: `${failover.url}/maintenance.html` },
      serviceBindings: {
        AUTH: async (request) => {
          calls.auth.push({ url: request.url, method: request.method, headers: Object.fromEntries(request.headers), body: await request.text() });
          return authReply(request);
        },
        RATELIMIT: async (request) => {
          calls.ratelimit.push({ url: request.url, key: request.headers.get("x-ratelimit-key") });
          return rateReply(request);
        },
        TELEMETRY: async (request) => {
          calls.telemetry.push(JSON.parse(await request.text()));
          return telemetryReply(request);
        },
      },
    }],
  });
  routes = await mf.getKVNamespace("ROUTES", "gateway");
  const entry = (hostname, paths) => routes.put(`route:${hostname}`, JSON.stringify({ hostname, paths }));
  // Shortest prefix first on purpose: the Worker must not rely on the playbook's ordering.
  await entry(SITE, [
    { prefix: "/", origin: origin.url, backend: "pi5-alpha:8000", auth: "none", rate_limit: false },
    { prefix: "/v2/", origin: v2.url, backend: "pi5-alpha:8001", auth: "none", rate_limit: false },
    { prefix: "/private/", origin: origin.url, backend: "pi5-alpha:8000", auth: "api_key", rate_limit: true },
    { prefix: "/app/", origin: origin.url, backend: "pi5-alpha:8000", auth: "session", rate_limit: false },
    { prefix: "/open/", origin: origin.url, backend: "pi5-alpha:8000", auth: "none", rate_limit: true },
  ]);
  await entry("docs.example.test", [{ prefix: "/docs/", origin: origin.url, auth: "none", rate_limit: false }]);
  await entry("down.example.test", [{ prefix: "/", origin: `http://127.0.0.1:${downPort}`, auth: "none", rate_limit: false }]);
});

after(async () => {
  await mf?.dispose();
  await Promise.all([origin, v2, failover].map((s) => s?.close()));
});

beforeEach(() => {
  for (const list of Object.values(calls)) list.length = 0;
  authReply = () => new MfResponse(null, { status: 204, headers: { "x-user-id": "user-7", "x-key-id": "key-7" } });
  rateReply = () => new MfResponse(null, { status: 204, headers: { "ratelimit-limit": "100", "ratelimit-policy": "100;w=60" } });
  telemetryReply = () => new MfResponse(null, { status: 202 });
  origin.seen.length = 0;
  v2.seen.length = 0;
  failover.seen.length = 0;
});

async function waitFor(predicate, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test("routes by host and longest path prefix, keeping path and query", async () => {
  let res = await mf.dispatchFetch(`http://${SITE}/v2/users/42?expand=a&b=%2F`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-origin"), "v2");
  assert.equal(await res.text(), "/v2/users/42?expand=a&b=%2F");

  res = await mf.dispatchFetch(`http://${SITE}/v2`);
  assert.equal(res.headers.get("x-origin"), "v2", '"/v2/" also covers exactly "/v2"');
  assert.equal(await res.text(), "/v2");

  res = await mf.dispatchFetch(`http://${SITE}/v20/x?q=1`);
  assert.equal(res.headers.get("x-origin"), "root", '"/v20" is not under "/v2/"');
  assert.equal((await res.json()).url, "/v20/x?q=1");

  res = await mf.dispatchFetch(`http://API.Example.TEST/`);
  assert.equal(res.headers.get("x-origin"), "root", "host names are case-insensitive");
  await res.arrayBuffer();
});

test("unknown host and unmatched path are 404 without naming anything internal", async () => {
  for (const url of ["http://nobody.example.test/", "http://docs.example.test/other"]) {
    const res = await mf.dispatchFetch(url);
    assert.equal(res.status, 404);
    const text = await res.text();
    assert.doesNotMatch(text, /127\.0\.0\.1|pi5|origin|backend/i);
    assert.ok(["unknown_host", "no_route"].includes(JSON.parse(text).error));
  }
  assert.equal(origin.seen.length, 0);
});

test("method, headers and a large body reach the origin unchanged", async () => {
  const body = randomBytes(6 * 1024 * 1024);
  const res = await mf.dispatchFetch(`http://${SITE}/upload?x=1`, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream", "x-custom": "kept", "accept-language": "de" },
    body,
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("set-cookie"), "a=1; Path=/", "origin response headers are passed back");
  const answer = await res.json();
  assert.deepEqual(answer, { url: "/upload?x=1", method: "PUT", length: body.length });
  const seen = origin.seen[0];
  assert.equal(seen.headers["x-custom"], "kept");
  assert.equal(seen.headers["accept-language"], "de");
  assert.equal(createHash("sha256").update(seen.body).digest("hex"), createHash("sha256").update(body).digest("hex"));
});

test("the request body is streamed to the origin, not buffered", async () => {
  let firstChunkAt = 0;
  const streamed = await startServer(async (req, res) => {
    let total = 0;
    for await (const chunk of req) {
      firstChunkAt ||= Date.now();
      total += chunk.length;
    }
    res.writeHead(200, { "x-custom-seen": req.headers["x-custom"] ?? "" });
    res.end(String(total));
  }, { streaming: true });
  try {
    await routes.put("route:stream.example.test", JSON.stringify({
      hostname: "stream.example.test",
      paths: [{ prefix: "/", origin: streamed.url, auth: "none", rate_limit: false }],
    }));
    let sent = 0;
    let closedAt = 0;
    const chunk = new Uint8Array(64 * 1024).fill(120);
    const body = new ReadableStream({
      async pull(controller) {
        if (sent === 5) {
          closedAt = Date.now();
          return controller.close();
        }
        await sleep(sent === 0 ? 0 : 150);
        controller.enqueue(chunk);
        sent += 1;
      },
    });
    const res = await mf.dispatchFetch("http://stream.example.test/ingest", {
      method: "POST", body, duplex: "half", headers: { "x-custom": "streamed" },
    });
    assert.equal(await res.text(), String(5 * chunk.length));
    assert.equal(res.headers.get("x-custom-seen"), "streamed");
    assert.ok(firstChunkAt > 0 && closedAt - firstChunkAt > 300,
      `origin saw the first chunk ${closedAt - firstChunkAt} ms before the client finished`);
  } finally {
    await streamed.close();
  }
});

test("the response body is streamed back, not buffered", async () => {
  const slow = await startServer(async (req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("first;");
    await sleep(1000);
    res.end("second");
  });
  try {
    await routes.put("route:slow.example.test", JSON.stringify({
      hostname: "slow.example.test",
      paths: [{ prefix: "/", origin: slow.url, auth: "none", rate_limit: false }],
    }));
    const started = Date.now();
    // identity: workerd gzips text for clients that accept it, and the compressor holds small
    // chunks back, which would hide the streaming this test is about.
    const res = await mf.dispatchFetch("http://slow.example.test/", { headers: { "accept-encoding": "identity" } });
    const reader = res.body.getReader();
    const first = await reader.read();
    const firstAt = Date.now() - started;
    assert.equal(new TextDecoder().decode(first.value), "first;");
    assert.ok(firstAt < 700, `first chunk after ${firstAt} ms`);
    let rest = "";
    for (let next = await reader.read(); !next.done; next = await reader.read()) rest += new TextDecoder().decode(next.value);
    assert.equal(rest, "second");
  } finally {
    await slow.close();
  }
});

test("client-sent identity headers are stripped even on auth none routes", async () => {
  const res = await mf.dispatchFetch(`http://${SITE}/anything`, {
    headers: { "x-user-id": "admin", "x-key-id": "root", "x-auth-mode": "none", "x-auth-user": "admin", "x-other": "stays" },
  });
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  const seen = origin.seen[0].headers;
  for (const name of ["x-user-id", "x-key-id", "x-auth-mode", "x-auth-user"]) assert.equal(seen[name], undefined, name);
  assert.equal(seen["x-other"], "stays");
  assert.equal(calls.auth.length, 0, "auth none does not call auth");
});

test("auth is asked without the body, and its identity replaces the client's", async () => {
  const res = await mf.dispatchFetch(`http://${SITE}/private/data`, {
    method: "POST",
    headers: { authorization: "Bearer FAKECANARY-key", "x-user-id": "admin", "content-type": "text/plain" },
    body: "payload for the origin",
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).length, "payload for the origin".length);
  assert.equal(calls.auth.length, 1);
  const asked = calls.auth[0];
  assert.equal(asked.method, "POST");
  assert.equal(new URL(asked.url).pathname, "/verify");
  assert.equal(asked.body, "", "auth gets no body");
  assert.equal(asked.headers["x-auth-mode"], "api_key");
  assert.equal(asked.headers.authorization, "Bearer FAKECANARY-key");
  assert.equal(asked.headers["x-user-id"], undefined, "client identity is stripped before auth too");
  const seen = origin.seen[0];
  assert.equal(seen.headers["x-user-id"], "user-7");
  assert.equal(seen.headers["x-key-id"], "key-7");
  assert.equal(seen.body.toString(), "payload for the origin");
});

test("session routes ask auth in session mode", async () => {
  authReply = () => new MfResponse(null, { status: 204, headers: { "x-user-id": "sess-user" } });
  const res = await mf.dispatchFetch(`http://${SITE}/app/home`, { headers: { cookie: "session=abc" } });
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  assert.equal(calls.auth[0].headers["x-auth-mode"], "session");
  assert.equal(origin.seen[0].headers["x-user-id"], "sess-user");
  assert.equal(origin.seen[0].headers["x-key-id"], undefined);
});

test("auth's 401/403 are returned as they are and the origin is not called", async () => {
  authReply = () => new MfResponse(JSON.stringify({ error: "missing_key" }), {
    status: 401, headers: { "www-authenticate": 'Bearer realm="blackroad"', "content-type": "application/json" },
  });
  let res = await mf.dispatchFetch(`http://${SITE}/private/data`);
  assert.equal(res.status, 401);
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="blackroad"');
  assert.deepEqual(await res.json(), { error: "missing_key" });

  authReply = () => new MfResponse(JSON.stringify({ error: "revoked_key" }), { status: 403 });
  res = await mf.dispatchFetch(`http://${SITE}/private/data`);
  assert.equal(res.status, 403);
  assert.deepEqual(await res.json(), { error: "revoked_key" });

  // An auth fault is not "access granted".
  authReply = () => new MfResponse("boom", { status: 500 });
  res = await mf.dispatchFetch(`http://${SITE}/private/data`);
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { error: "auth_unavailable" });
  assert.equal(origin.seen.length, 0);
  assert.equal(calls.ratelimit.length, 0, "no rate limit check for a rejected request");
});

test("rate limit: key choice, headers copied on success, 429 returned as is", async () => {
  let res = await mf.dispatchFetch(`http://${SITE}/private/data`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("ratelimit-limit"), "100");
  assert.equal(res.headers.get("ratelimit-policy"), "100;w=60");
  await res.arrayBuffer();
  assert.equal(calls.ratelimit[0].key, "key:key-7", "API keys are limited per key id");

  authReply = () => new MfResponse(null, { status: 204, headers: { "x-user-id": "user-9" } });
  res = await mf.dispatchFetch(`http://${SITE}/private/data`);
  await res.arrayBuffer();
  assert.equal(calls.ratelimit[1].key, "user:user-9", "identities without a key id are limited per user");

  res = await mf.dispatchFetch(`http://${SITE}/open/x`, { headers: { "cf-connecting-ip": "203.0.113.9" } });
  await res.arrayBuffer();
  assert.equal(calls.ratelimit[2].key, "ip:203.0.113.9", "anonymous routes are limited per client IP");

  const before = origin.seen.length;
  rateReply = () => new MfResponse(JSON.stringify({ error: "rate_limited", retry_after: 7 }), {
    status: 429, headers: { "retry-after": "7", "ratelimit-remaining": "0", "content-type": "application/json" },
  });
  res = await mf.dispatchFetch(`http://${SITE}/open/x`);
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "7");
  assert.equal(res.headers.get("ratelimit-remaining"), "0");
  assert.equal((await res.json()).error, "rate_limited");
  assert.equal(origin.seen.length, before, "a limited request never reaches the origin");
});

test("a broken limiter fails open", async () => {
  rateReply = () => { throw new Error("limiter exploded"); };
  const res = await mf.dispatchFetch(`http://${SITE}/open/x`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
});

test("origin down: maintenance page from the failover, else the built-in one; 530 counts as down", async () => {
  let res = await mf.dispatchFetch("http://down.example.test/page");
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "60");
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.match(await res.text(), /FAILOVER maintenance page/);
  assert.equal(failover.seen[0].url, "/maintenance.html");

  for (const status of [502, 503, 504, 530]) {
    res = await mf.dispatchFetch(`http://${SITE}/status/${status}`);
    assert.equal(res.status, 503, `origin ${status}`);
    assert.match(await res.text(), /FAILOVER/);
  }

  // Other origin errors are the application's answer and pass through.
  res = await mf.dispatchFetch(`http://${SITE}/status/500`);
  assert.equal(res.status, 500);
  assert.equal(await res.text(), "origin says hi");

  // Redirects are the client's business, not followed at the edge.
  res = await mf.dispatchFetch(`http://${SITE}/redirect`, { redirect: "manual" });
  assert.equal(res.status, 302);
  assert.equal(res.headers.get("location"), "/elsewhere");
  await res.arrayBuffer();
});

test("failover also down: built-in maintenance page", async () => {
  const second = newMiniflare({
    workers: [{
      name: "gateway",
      ...workerModules("gateway"),
      kvNamespaces: { ROUTES: "state" },
      bindings: { MAINTENANCE_URL: `http://127.0.0.1:${downPort}/maintenance.html` },
      serviceBindings: { AUTH: () => new MfResponse(null, { status: 500 }), RATELIMIT: () => new MfResponse(null, { status: 500 }), TELEMETRY: () => new MfResponse(null, { status: 202 }) },
    }, {
      name: "gateway-no-failover",
      ...workerModules("gateway"),
      kvNamespaces: { ROUTES: "state" },
      bindings: { MAINTENANCE_URL: "" },
      serviceBindings: { AUTH: () => new MfResponse(null, { status: 500 }), RATELIMIT: () => new MfResponse(null, { status: 500 }), TELEMETRY: () => new MfResponse(null, { status: 202 }) },
    }],
  });
  try {
    const kv = await second.getKVNamespace("ROUTES", "gateway");
    await kv.put("route:down.example.test", JSON.stringify({
      hostname: "down.example.test",
      paths: [{ prefix: "/", origin: `http://127.0.0.1:${downPort}`, auth: "none", rate_limit: false }],
    }));
    for (const name of ["gateway", "gateway-no-failover"]) {
      const worker = await second.getWorker(name);
      const res = await worker.fetch("http://down.example.test/");
      assert.equal(res.status, 503, name);
      assert.equal(res.headers.get("retry-after"), "60");
      assert.equal(res.headers.get("cache-control"), "no-store");
      assert.match(res.headers.get("content-type"), /text\/html/);
      assert.match(await res.text(), /Down for maintenance/);
    }
  } finally {
    await second.dispose();
  }
});

test("telemetry gets one event per request, with the matched prefix and not the path", async () => {
  let res = await mf.dispatchFetch(`http://${SITE}/private/some/secret/path?token=x`);
  await res.arrayBuffer();
  res = await mf.dispatchFetch("http://nobody.example.test/x");
  await res.arrayBuffer();
  await waitFor(() => calls.telemetry.length === 2, "two telemetry events");
  const [hit, miss] = calls.telemetry;
  assert.equal(hit.host, SITE);
  assert.equal(hit.method, "GET");
  assert.equal(hit.path_prefix, "/private/");
  assert.equal(hit.status, 200);
  assert.equal(hit.route_found, true);
  assert.equal(hit.user_id, "user-7");
  assert.equal(hit.key_id, "key-7");
  assert.equal(typeof hit.ts, "number");
  assert.equal(typeof hit.duration_ms, "number");
  assert.doesNotMatch(JSON.stringify(hit), /secret|token/);
  assert.equal(miss.route_found, false);
  assert.equal(miss.path_prefix, null);
  assert.equal(miss.status, 404);
});

test("telemetry failures and hangs never reach the user", async () => {
  telemetryReply = () => { throw new Error("telemetry exploded"); };
  let res = await mf.dispatchFetch(`http://${SITE}/`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();

  let release;
  telemetryReply = () => new Promise((resolve) => { release = () => resolve(new MfResponse(null, { status: 202 })); });
  const started = Date.now();
  res = await mf.dispatchFetch(`http://${SITE}/`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 2000, `response took ${elapsed} ms while telemetry hung`);
  await waitFor(() => typeof release === "function", "the hanging telemetry call");
  release();
});

test("every client secret stays out of the route 404 and errors", async () => {
  const canary = fake();
  const res = await mf.dispatchFetch("http://nobody.example.test/", { headers: { authorization: `Bearer ${canary}` } });
  assert.doesNotMatch(await res.text(), new RegExp(canary));
});
