// lab/edge-lab.mjs against the real Python API emulator: two Workers (a service binding, a shared KV
// namespace, a secret, a rate limit binding), their routes and a tunnel with ingress rules are
// created through the API, then edge-lab must run exactly that in workerd.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { relaySocket } from "../lab/edge-lab.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PYTHON = join(ROOT, ".venv/bin/python");
const EDGE_LAB = fileURLToPath(new URL("../lab/edge-lab.mjs", import.meta.url));
const hex = (n) => randomBytes(n).toString("hex");

// Two modules, so the API serves the script as multipart and the relative import must still resolve.
const FRONT_JS = `import { tag } from "./common.js";
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    console.log("lab-front saw " + url.pathname);  // must land on stderr, never in the probe's JSON
    const { success } = await env.LIMITER.limit({ key: "probe" });
    const back = await env.BACK.fetch(new Request("https://back.internal" + url.pathname + url.search, request));
    return Response.json({ worker: tag("front"), host: url.hostname, hostHeader: request.headers.get("host"),
      kv: await env.STATE.get("greeting"), secret: env.SECRET, limited: !success, back: await back.json() });
  },
};`;
const COMMON_JS = `export const tag = (name) => "lab-" + name;`;
// Forwards method, headers and body to ORIGIN (or the X-Lab-Origin header), streamed, as a gateway does.
const BACK_JS = `export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const origin = request.headers.get("x-lab-origin") || env.ORIGIN;
    const r = await fetch(origin + url.pathname + url.search,
      { method: request.method, headers: request.headers, body: request.body, duplex: "half" });
    const text = await r.text();
    let body;
    try { body = JSON.parse(text); } catch { body = text; }
    return Response.json({ worker: "lab-back", kv: await env.STATE.get("greeting"), status: r.status, origin: body });
  },
};`;

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

async function freePort() {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

// The first line a child prints on stdout, or an error if it exits first.
function firstLine(child) {
  return new Promise((resolve, reject) => {
    child.stdout.setEncoding("utf8").once("data", resolve);
    child.once("exit", (code) => reject(new Error(`${child.spawnargs.join(" ")} exited ${code} before it was ready`)));
  });
}

// Runs edge-lab to completion: [exit code, stdout, stderr].
async function run(args, env = {}) {
  const child = spawn(process.execPath, [EDGE_LAB, ...args], { env: { ...process.env, ...env }, timeout: 60000 });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => { stdout += d; });
  child.stderr.on("data", (d) => { stderr += d; });
  const [code] = await once(child, "exit");
  return [code, stdout, stderr];
}

// One request to a listening edge, with the given Host.
function request(port, host, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, headers: { ...headers, host } }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (d) => { text += d; });
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("edge-lab runs the account's Workers, routes, KV and tunnel ingress", async (t) => {
  if (!existsSync(PYTHON)) {
    t.skip(`${PYTHON} is missing: create the virtualenv to run the Cloudflare API emulator`);
    return;
  }
  const tmp = mkdtempSync(join(tmpdir(), "edge-lab-test-"));
  const token = `FAKETOKEN-${hex(16)}`;
  const canary = `FAKECANARY-${hex(8)}`;
  const apiKey = `FAKEKEY-${hex(8)}`;
  const secret = `FAKESECRET-${hex(8)}`;
  writeFileSync(join(tmp, "token"), `${token}\n`, { mode: 0o600 });
  writeFileSync(join(tmp, "api-key"), `${apiKey}\n`, { mode: 0o600 });
  writeFileSync(join(tmp, "secrets.json"), JSON.stringify({ "lab-front": { SECRET: secret } }), { mode: 0o600 });
  writeFileSync(join(tmp, "body"), `payload-${canary}`);

  // The origin behind the tunnel: echoes what reached it (gzipped under /gzip).
  const backend = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d) => { body += d; }).on("end", () => {
      const reply = JSON.stringify({ method: req.method, path: req.url, host: req.headers.host,
        authorization: req.headers.authorization ?? null, test: req.headers["x-test"] ?? null, body });
      res.setHeader("content-type", "application/json");
      if (req.url.startsWith("/gzip")) res.setHeader("content-encoding", "gzip");
      res.end(req.url.startsWith("/gzip") ? gzipSync(reply) : reply);
    });
  });
  const backendPort = await listen(backend);
  const closedPort = await freePort();

  const emulator = spawn(PYTHON, ["-m", "cloudflare_emulator", "--listen", "127.0.0.1:0",
    "--token-file", join(tmp, "token")], { env: { ...process.env, PYTHONPATH: join(ROOT, "emulator") } });
  let edge;
  t.after(() => {
    edge?.kill("SIGTERM");
    emulator.kill("SIGTERM");
    backend.close();
    rmSync(tmp, { recursive: true, force: true });
  });
  const base = /(http:\/\/\S+)/.exec(await firstLine(emulator))[1];

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${token}` }, body };
    if (body !== undefined && !(body instanceof FormData) && typeof body !== "string") {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const out = await (await fetch(base + path, init)).json();
    assert.ok(out.success, `${method} ${path}: ${JSON.stringify(out.errors)}`);
    return out.result;
  }
  async function upload(name, modules, bindings, compatibilityDate = "2026-04-01") {
    const form = new FormData();
    const metadata = { main_module: modules[0][0], bindings, compatibility_date: compatibilityDate };
    form.append("metadata", JSON.stringify(metadata));
    for (const [file, src] of modules) {
      form.append(file, new Blob([src], { type: "application/javascript+module" }), file);
    }
    await api("PUT", `/accounts/${account}/workers/scripts/${name}`, form);
  }

  const [{ id: account }] = await api("GET", "/accounts");
  const [zone] = await api("GET", "/zones?name=blackroad.io");
  const ns = await api("POST", `/accounts/${account}/storage/kv/namespaces`, { title: `edge-lab-test-${hex(4)}` });
  await api("PUT", `/accounts/${account}/storage/kv/namespaces/${ns.id}/values/greeting`, canary);
  const kvBinding = { type: "kv_namespace", name: "STATE", namespace_id: ns.id };
  // A compatibility date newer than workerd must still run (clamped, with a warning).
  await upload("lab-front", [["front.js", FRONT_JS], ["common.js", COMMON_JS]], [
    kvBinding,
    { type: "service", name: "BACK", service: "lab-back" },
    { type: "secret_text", name: "SECRET", text: "not-readable-back" },
    { type: "ratelimit", name: "LIMITER", namespace_id: "1001", simple: { limit: 3, period: 10 } },
  ], "2099-01-01");
  await upload("lab-back", [["back.js", BACK_JS]],
    [kvBinding, { type: "plain_text", name: "ORIGIN", text: "https://app.blackroad.io" }]);
  const routes = [["api.blackroad.io/*", "lab-front"], ["api.blackroad.io/direct/*", "lab-back"],
    ["gone.blackroad.io/*", "lab-gone"]];
  for (const [pattern, script] of routes) await api("POST", `/zones/${zone.id}/workers/routes`, { pattern, script });
  const tunnel = await api("POST", `/accounts/${account}/cfd_tunnel`, { name: "lab-host", config_src: "cloudflare" });
  await api("PUT", `/accounts/${account}/cfd_tunnel/${tunnel.id}/configurations`, { config: { ingress: [
    { hostname: "app.blackroad.io", service: `http://127.0.0.1:${backendPort}` },
    { hostname: "down.blackroad.io", service: `http://127.0.0.1:${closedPort}` },
    { hostname: "*.blackroad.io", path: "^/teapot", service: "http_status:418" },
    { service: "http_status:404" },
  ] } });

  const common = ["--base-url", base, "--token-file", join(tmp, "token"), "--secrets", join(tmp, "secrets.json")];

  await t.test("--probe: through both Workers, the KV value and the tunnel, streaming a body", async () => {
    const [code, stdout, stderr] = await run([...common, "--probe", "https://API.blackroad.io/hello?x=1",
      "--method", "POST", "--api-key-file", join(tmp, "api-key"), "--header", "X-Test: yes",
      "--body-file", join(tmp, "body")]);
    assert.equal(code, 0, stderr);
    assert.match(stderr, /compatibility_date 2099-01-01/);
    assert.match(stderr, /lab-front saw \/hello/);
    assert.match(stderr, /route gone\.blackroad\.io\/\* names missing script lab-gone/);
    assert.ok(![stdout, stderr].some((s) => s.includes(token)), "the API token is never shown");
    const out = JSON.parse(stdout);
    assert.equal(out.status, 200);
    assert.equal(out.truncated, false);
    assert.match(out.headers["content-type"], /application\/json/);
    const body = JSON.parse(out.body);
    assert.deepEqual([body.worker, body.host, body.hostHeader], ["lab-front", "api.blackroad.io", "api.blackroad.io"]);
    assert.equal(body.kv, canary);
    assert.equal(body.secret, secret);
    assert.equal(body.limited, false);
    assert.equal(body.back.worker, "lab-back");
    assert.equal(body.back.kv, canary, "two Workers binding one namespace share it");
    assert.equal(body.back.status, 200);
    assert.deepEqual(body.back.origin, { method: "POST", path: "/hello?x=1", host: "app.blackroad.io",
      authorization: `Bearer ${apiKey}`, test: "yes", body: `payload-${canary}` });
  });

  await t.test("--listen: routes by Host, unmatched hosts 404, ingress rules, plain fetch", async () => {
    edge = spawn(process.execPath, [EDGE_LAB, ...common, "--listen", "127.0.0.1:0"]);
    let stderr = "";
    edge.stderr.on("data", (d) => { stderr += d; });
    const ready = await firstLine(edge);
    const port = Number(/^edge-lab listening on http:\/\/127\.0\.0\.1:(\d+)\n$/.exec(ready)?.[1]);
    assert.ok(port, ready);

    const front = JSON.parse((await request(port, "api.blackroad.io", "/x")).text);
    assert.equal(front.hostHeader, "api.blackroad.io");
    const direct = JSON.parse((await request(port, "api.blackroad.io", "/direct/x")).text);
    assert.equal(direct.worker, "lab-back", "the more specific route wins");
    for (const host of ["nothing.example.org", "gone.blackroad.io"]) {
      const unrouted = await request(port, host, "/");
      assert.equal(unrouted.status, 404, host);
      assert.equal(JSON.parse(unrouted.text).error, "no_route");
    }

    const via = async (origin, path) =>
      JSON.parse((await request(port, "api.blackroad.io", path, { "x-lab-origin": origin })).text).back;
    const gzipped = await via("https://app.blackroad.io", "/gzip");
    assert.equal(gzipped.origin.path, "/gzip", "a compressed origin body reaches the Worker decoded once");
    assert.equal((await via("https://other.blackroad.io", "/teapot/1")).status, 418, "wildcard + path rule");
    assert.equal((await via("https://other.blackroad.io", "/elsewhere")).status, 404, "the tunnel's catch-all");
    assert.equal((await via("https://down.blackroad.io", "/")).status, 502, "service down behind the tunnel");
    const plain = await via(`http://127.0.0.1:${backendPort}`, "/plain");
    assert.equal(plain.status, 200);
    assert.equal(plain.origin.host, `127.0.0.1:${backendPort}`, "not an ingress hostname: fetched directly");

    edge.kill("SIGTERM");
    // Miniflare's exit hook stops workerd and exits 128 + SIGTERM.
    assert.deepEqual(await once(edge, "exit"), [143, null], stderr);
    edge = undefined;
  });

  await t.test("--connector-prefix: tunnel traffic leaves from the connector through docker exec", async () => {
    // Stands in for `docker exec -i CONTAINER CMD...`: records the container and runs CMD here, or
    // fails the way docker does for a container that is not there.
    const bin = join(tmp, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "docker"), `#!/bin/sh
echo "$1 $2 $3" >> "${join(tmp, "docker-calls")}"
case "$3" in absent-*) echo "Error response from daemon: No such container: $3" >&2; exit 1;; esac
shift 3
exec "$@"
`, { mode: 0o755 });
    const env = { PATH: `${bin}:${dirname(PYTHON)}:${process.env.PATH}` };
    const [code, stdout, stderr] = await run([...common, "--connector-prefix", "lab-",
      "--probe", "https://api.blackroad.io/relayed", "--method", "PUT", "--body-file", join(tmp, "body")], env);
    assert.equal(code, 0, stderr);
    const { back } = JSON.parse(JSON.parse(stdout).body);
    assert.equal(back.status, 200);
    assert.deepEqual([back.origin.method, back.origin.path, back.origin.host, back.origin.body],
      ["PUT", "/relayed", "app.blackroad.io", `payload-${canary}`]);
    assert.match(readFileSync(join(tmp, "docker-calls"), "utf8"), /^exec -i lab-lab-host$/m);

    const [code2, stdout2, stderr2] = await run([...common, "--connector-prefix", "absent-",
      "--probe", "https://api.blackroad.io/"], env);
    assert.equal(code2, 0, stderr2);
    assert.equal(JSON.parse(JSON.parse(stdout2).body).back.status, 530, "no connector: a tunnel-down 530");
  });

  await t.test("the connector relay half-closes, and tells a down service from a missing connector", async () => {
    const prefix = ["env", `PATH=${dirname(PYTHON)}:${process.env.PATH}`];  // python3 runs here, not in a container
    const server = net.createServer((sock) => {
      let n = 0;
      sock.on("data", (d) => { n += d.length; }).on("end", () => sock.end(`got ${n}`));
    });
    const port = await listen(server);
    try {
      const sock = relaySocket(prefix, "127.0.0.1", port);
      let reply = "";
      sock.setEncoding("utf8").on("data", (d) => { reply += d; });
      sock.end("x".repeat(200000));  // more than a pipe buffer, then EOF; the answer comes after it
      await once(sock, "close");
      assert.equal(reply, "got 200000");

      const [refused] = await once(relaySocket(prefix, "127.0.0.1", closedPort), "error");
      assert.equal(refused.connectorDown, false, "the service is down, not the connector");
      const [missing] = await once(relaySocket([join(tmp, "no-such-docker")], "127.0.0.1", port), "error");
      assert.equal(missing.connectorDown, true);
    } finally {
      server.close();
    }
  });

  await t.test("an unreadable account: a clear error, exit 1, nothing on stdout", async () => {
    writeFileSync(join(tmp, "wrong-token"), `FAKETOKEN-${hex(16)}\n`, { mode: 0o600 });
    const [code, stdout, stderr] = await run(["--probe", "https://api.blackroad.io/"],
      { CLOUDFLARE_BASE_URL: base, CLOUDFLARE_API_TOKEN_FILE: join(tmp, "wrong-token") });
    assert.equal(code, 1);
    assert.equal(stdout, "");
    assert.match(stderr, /^edge-lab: error: reading the account at http:\S+: GET \/accounts\S*: HTTP 403/);
  });
});
