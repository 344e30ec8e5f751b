// edge-lab: run, locally in workerd (through Miniflare), the Workers a Cloudflare account holds.
//
// It reads the account through the API v4 (the lab's emulator, or any account the token can read):
// zones and their Worker routes, the scripts those routes name plus every script reachable through
// `service` bindings (settings and modules), the KV namespaces they bind (keys and values) and the
// tunnels' ingress rules. Then it starts one Miniflare with one worker per script, so requests are
// dispatched by Host and route pattern as on Cloudflare, and a Worker subrequest to a tunnelled
// hostname goes to the ingress rule's service from the tunnel's connector host, as cloudflared's would.
//
//   node lab/edge-lab.mjs --base-url URL --token-file FILE --listen 127.0.0.1:PORT
//   node lab/edge-lab.mjs --base-url URL --token-file FILE --probe https://api.blackroad.io/health
//
// The API token is only ever read from a file: argv is visible to every local user in ps.
import { spawn } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { Duplex, PassThrough, Readable, pipeline } from "node:stream";
import tls from "node:tls";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import zlib from "node:zlib";
import {
  Log, LogLevel, Miniflare, Response, supportedCompatibilityDate,
  _transformsForContentEncodingAndContentType as miniflareReencodes,
} from "miniflare";

const USAGE = `usage: edge-lab.mjs (--listen HOST:PORT | --probe URL) [options]
  --base-url URL        API base, e.g. http://127.0.0.1:PORT/client/v4 (env CLOUDFLARE_BASE_URL)
  --token-file FILE     file holding the API token (env CLOUDFLARE_API_TOKEN_FILE)
  --account-id ID       account to read (env CLOUDFLARE_ACCOUNT_ID; default: the only one visible)
  --secrets FILE        JSON {"<script>": {"<BINDING>": "value"}} for secret_text bindings
  --connector-prefix P  reach tunnel services through "docker exec -i P<tunnel name>" (default: directly)
  probe only: --method M, --header 'Name: value' (repeatable), --api-key-file FILE, --body-file FILE`;
const PROBE_BODY_LIMIT = 16384;
// Not a valid Cloudflare script name (those start with [a-z0-9]), so it cannot collide with one.
const UNROUTED = "__edge-lab-unrouted";
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
  "trailer"]);
const DECODERS = { gzip: zlib.createGunzip, "x-gzip": zlib.createGunzip, deflate: zlib.createInflate,
  br: zlib.createBrotliDecompress };
// Exit status 3 means the connector host could not reach the service (cloudflared answers 502); any
// other failure means the connector itself is unreachable, which Cloudflare shows as 530.
const RELAY_PY = `import os, socket, sys, threading
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
except OSError as e:
    sys.stderr.write("relay: %s\\n" % e); sys.exit(3)
s.settimeout(None)
def up():
    while True:
        d = os.read(0, 65536)
        if not d: break
        s.sendall(d)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d: break
    sys.stdout.buffer.write(d); sys.stdout.buffer.flush()
`;

const warn = (msg) => process.stderr.write(`edge-lab: warning: ${msg}\n`);
const usageError = (msg) => Object.assign(new Error(`${msg}\n${USAGE}`), { exitCode: 2 });

// ---------------------------------------------------------------- reading the account
function apiClient(baseUrl, token) {
  const base = baseUrl.replace(/\/+$/, "");
  async function raw(path) {
    const res = await fetch(base + path, { headers: { Authorization: `Bearer ${token}` } });
    if (!res.ok) {
      const errors = await res.json().then((b) => b.errors ?? [], () => []);
      const why = errors.map((e) => `${e.code} ${e.message}`).join("; ");
      const err = new Error(`GET ${path}: HTTP ${res.status}${why && ` (${why})`}`);
      throw Object.assign(err, { status: res.status });
    }
    return res;
  }
  const get = async (path) => (await (await raw(path)).json()).result;
  async function pages(path, perPage) {
    const out = [];
    for (let page = 1; ; page++) {
      const sep = path.includes("?") ? "&" : "?";
      const body = await (await raw(`${path}${sep}page=${page}&per_page=${perPage}`)).json();
      out.push(...body.result);
      if (!body.result.length || page >= (body.result_info?.total_pages ?? 1)) return out;
    }
  }
  return { raw, get, pages };
}

// The upload content types Cloudflare knows; plain (non "+module") JavaScript is CommonJS.
function moduleType(ctype, name) {
  if (ctype.includes("javascript+module") || (!ctype && /\.m?js$/.test(name))) return "ESModule";
  if (ctype.includes("javascript")) return "CommonJS";
  if (ctype.includes("wasm")) return "CompiledWasm";
  return ctype.startsWith("text/") || ctype.includes("json") ? "Text" : "Data";
}

async function readModules(api, acct, name) {
  const res = await api.raw(`${acct}/workers/scripts/${name}/content/v2`);
  const main = res.headers.get("cf-entrypoint");
  const ctype = (res.headers.get("content-type") ?? "").split(";")[0].trim();
  let files = [{ name: main ?? "index.js", ctype }];
  if (ctype === "multipart/form-data") {
    files = [...await res.formData()].map(([part, blob]) => ({ name: part, ctype: blob.type ?? "", blob }));
  } else files[0].blob = await res.blob();
  files.sort((a, b) => (b.name === main) - (a.name === main));  // Miniflare's entry point is the first module
  return Promise.all(files.map(async ({ name, ctype, blob }) =>
    ({ name, type: moduleType(ctype, name), contents: new Uint8Array(await blob.arrayBuffer()) })));
}

async function readKv(api, acct, nsId) {
  const base = `${acct}/storage/kv/namespaces/${nsId}`;
  const keys = [];
  let cursor = "";
  do {
    const after = cursor && `&cursor=${encodeURIComponent(cursor)}`;
    const body = await (await api.raw(`${base}/keys?limit=1000${after}`)).json();
    keys.push(...body.result);
    cursor = body.result_info?.cursor ?? "";
  } while (cursor);
  const entries = [];
  for (let i = 0; i < keys.length; i += 16) {  // a few at a time: quick, yet gentle on the API
    entries.push(...await Promise.all(keys.slice(i, i + 16).map(async (k) => {
      const res = await api.raw(`${base}/values/${encodeURIComponent(k.name)}`);
      return { ...k, value: new Uint8Array(await res.arrayBuffer()) };
    })));
  }
  return entries;
}

async function readAccount(api, accountId) {
  if (!accountId) {
    const accounts = await api.pages("/accounts", 50);
    if (accounts.length !== 1) throw new Error(`${accounts.length} accounts visible; pass --account-id`);
    accountId = accounts[0].id;
  }
  const acct = `/accounts/${accountId}`;
  const routes = [];
  for (const zone of await api.pages(`/zones?account.id=${accountId}`, 50)) {
    routes.push(...await api.get(`/zones/${zone.id}/workers/routes`));
  }
  // A custom domain sends a whole hostname to a Worker, which as a route is "<host>/*".
  for (const d of await api.get(`${acct}/workers/domains`)) {
    routes.push({ pattern: `${d.hostname}/*`, script: d.service });
  }

  const scripts = new Map();
  const pending = routes.map((r) => r.script).filter(Boolean);
  while (pending.length) {
    const name = pending.shift();
    if (scripts.has(name)) continue;
    // A route or binding naming a script that is not there is reported when the workers are built.
    const settings = await api.get(`${acct}/workers/scripts/${name}/settings`).catch((e) => {
      if (e.status !== 404) throw e;
    });
    scripts.set(name, settings && { name, settings, modules: await readModules(api, acct, name) });
    pending.push(...(settings?.bindings ?? []).filter((b) => b.type === "service").map((b) => b.service));
  }
  for (const [name, s] of scripts) if (!s) scripts.delete(name);

  const kv = new Map();  // namespace id -> one binding of it, to fill it through, and its entries
  for (const s of scripts.values()) {
    for (const b of s.settings.bindings.filter((x) => x.type === "kv_namespace" && !kv.has(x.namespace_id))) {
      const entries = await readKv(api, acct, b.namespace_id);
      kv.set(b.namespace_id, { script: s.name, binding: b.name, entries });
    }
  }
  const tunnels = [];
  for (const t of await api.pages(`${acct}/cfd_tunnel?is_deleted=false`, 100)) {
    const { config } = await api.get(`${acct}/cfd_tunnel/${t.id}/configurations`);
    tunnels.push({ name: t.name, ingress: config?.ingress ?? [], originRequest: config?.originRequest ?? {} });
  }
  return { routes, scripts, kv, tunnels };
}

// ---------------------------------------------------------------- the tunnel stand-in
const hostMatches = (rule, host) => !rule.hostname || rule.hostname === "*" || (rule.hostname.startsWith("*.")
  ? host.endsWith(rule.hostname.slice(1).toLowerCase()) : host === rule.hostname.toLowerCase());

// Only a hostname rule claims a request for a tunnel (DNS does that on Cloudflare); that tunnel then
// applies all its rules in order, catch-all included, as cloudflared does.
function matchIngress(tunnels, url) {
  const host = url.hostname.toLowerCase();
  const claims = (r) => r.hostname && r.hostname !== "*" && hostMatches(r, host);
  const tunnel = tunnels.find((t) => t.ingress.some(claims));
  const rule = tunnel?.ingress.find((r) => hostMatches(r, host) && (!r.path || new RegExp(r.path).test(url.pathname)));
  return tunnel && { tunnel, rule: rule ?? { service: "http_status:502" } };
}

// A TCP connection made from inside the connector host, as cloudflared's is: lab hosts' firewalls
// only admit the tailnet, and a service may listen on the host's loopback only.
export function relaySocket(prefix, host, port) {
  const argv = [...prefix, "python3", "-c", RELAY_PY, host, String(port)];
  const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
  // EOF (and EPIPE) is passed on only once the exit status is known, so that a failure reads as one,
  // not as a connection the origin closed.
  const readable = child.stdout.pipe(new PassThrough(), { end: false });
  const writable = new PassThrough();
  writable.pipe(child.stdin).on("error", () => {});
  const sock = Duplex.from({ readable, writable });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr = (stderr + d).slice(-500); });
  const fail = (err, code) => sock.destroy(Object.assign(err, { connectorDown: code !== 3 }));
  child.on("error", (e) => fail(e));
  child.on("close", (code) => {
    if (code) fail(new Error(`relay via ${argv[0]} exited ${code}: ${stderr.trim()}`), code);
    else readable.end();
  });
  sock.on("close", () => child.exitCode === null && child.kill());
  // node:http tunes the sockets it is given; a pipe has nothing to tune.
  sock.setNoDelay = sock.setKeepAlive = sock.setTimeout = () => sock;
  return sock;
}

// Streams method, headers and body with node:http, which (unlike fetch) can take its connection from
// elsewhere (createConnection).
function forward(request, target, path, host, extra = {}) {
  return new Promise((resolve, reject) => {
    const headers = { host };
    for (const [k, v] of request.headers) if (!HOP_BY_HOP.has(k) && k !== "host") headers[k] = v;
    const req = (target.protocol === "https:" ? https : http).request({
      protocol: target.protocol, hostname: target.hostname, port: target.port || undefined,
      // An agent (even agent: false) would ignore createConnection; without one, Connection: close.
      method: request.method, path, headers, agent: extra.createConnection ? undefined : false,
      servername: target.hostname, ...extra,
    }, (res) => {
      const out = new Headers();
      const raw = res.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i].toLowerCase())) out.append(raw[i], raw[i + 1]);
      // Miniflare takes an outbound body as fetch() gives it (decoded) and compresses it again where
      // Cloudflare would, so exactly those bodies are decoded here, or workerd would get them twice encoded.
      let body = res;
      const enc = res.headers["content-encoding"];
      const codings = (enc ?? "").split(",").map((c) => c.trim().toLowerCase()).reverse();
      if (miniflareReencodes(enc, res.headers["content-type"]).length && codings.every((c) => DECODERS[c])) {
        body = pipeline(res, ...codings.map((c) => DECODERS[c]()), () => {});
      }
      const empty = request.method === "HEAD" || [204, 304].includes(res.statusCode);
      const init = { status: res.statusCode, statusText: res.statusMessage, headers: out };
      resolve(new Response(empty ? null : Readable.toWeb(body), init));
    });
    req.on("error", reject);
    if (request.body) Readable.fromWeb(request.body).on("error", (e) => req.destroy(e)).pipe(req);
    else req.end();
  });
}

function outboundService(tunnels, connectorPrefix) {
  return async (request) => {
    const url = new URL(request.url);
    const hit = matchIngress(tunnels, url);
    if (!hit) {
      return forward(request, url, url.pathname + url.search, url.host)
        .catch((e) => new Response(`edge-lab: fetch ${url.origin} failed: ${e.message}\n`, { status: 502 }));
    }
    const { tunnel, rule } = hit;
    const status = /^http_status:(\d{3})$/.exec(rule.service);
    if (status) return new Response(null, { status: Number(status[1]) });
    if (!/^https?:\/\//.test(rule.service)) {
      return new Response(`edge-lab: ingress service ${rule.service} is not emulated\n`, { status: 502 });
    }
    const target = new URL(rule.service);
    const origin = { ...tunnel.originRequest, ...rule.originRequest };
    const secure = target.protocol === "https:";
    const tlsOpts = { servername: origin.originServerName || target.hostname, rejectUnauthorized: !origin.noTLSVerify };
    const extra = { ...tlsOpts };
    if (connectorPrefix) {
      const argv = ["docker", "exec", "-i", connectorPrefix + tunnel.name];
      extra.createConnection = () => {
        const sock = relaySocket(argv, target.hostname, Number(target.port) || (secure ? 443 : 80));
        return secure ? tls.connect({ socket: sock, ...tlsOpts }) : sock;
      };
    }
    const host = origin.httpHostHeader || url.host;
    return forward(request, target, url.pathname + url.search, host, extra).catch((e) =>
      new Response(`edge-lab: tunnel ${tunnel.name}: ${e.message}\n`, { status: e.connectorDown ? 530 : 502 }));
  };
}

// ---------------------------------------------------------------- Miniflare
function workerOptions(script, { routes, secrets, outbound, scripts }) {
  const root = `/edge-lab/${script.name}`;
  const opts = {
    name: script.name, routes, modulesRoot: root,
    modules: script.modules.map((m) => ({ type: m.type, path: `${root}/${m.name}`, contents: m.contents })),
    compatibilityDate: script.settings.compatibility_date || supportedCompatibilityDate,
    compatibilityFlags: script.settings.compatibility_flags ?? [],
    kvNamespaces: {}, bindings: {}, serviceBindings: {}, ratelimits: {}, outboundService: outbound,
  };
  // workerd refuses dates newer than itself; its newest date is the closest it can run.
  if (opts.compatibilityDate > supportedCompatibilityDate) {
    warn(`${script.name}: compatibility_date ${opts.compatibilityDate} is newer than this workerd; ` +
      `using ${supportedCompatibilityDate}`);
    opts.compatibilityDate = supportedCompatibilityDate;
  }
  for (const b of script.settings.bindings) {
    if (b.type === "kv_namespace") opts.kvNamespaces[b.name] = b.namespace_id;
    else if (b.type === "plain_text") opts.bindings[b.name] = b.text;
    else if (b.type === "json") opts.bindings[b.name] = b.json;
    else if (b.type === "ratelimit") opts.ratelimits[b.name] = { simple: b.simple };
    else if (b.type === "service" && scripts.has(b.service)) {
      opts.serviceBindings[b.name] = b.entrypoint ? { name: b.service, entrypoint: b.entrypoint } : b.service;
    } else if (b.type === "service") warn(`${script.name}: ${b.name} binds missing script ${b.service}; left unbound`);
    else if (b.type === "secret_text") {
      // The API never returns secret values: they come from --secrets, or are empty.
      const value = secrets[script.name]?.[b.name];
      if (value === undefined) warn(`${script.name}: secret ${b.name} not in --secrets; bound as ""`);
      opts.bindings[b.name] = value ?? "";
    } else warn(`${script.name}: binding ${b.name} of type ${b.type} is not emulated; left unbound`);
  }
  return opts;
}

async function startEdge(account, { secrets, connectorPrefix, host, port }) {
  const routesOf = new Map([[UNROUTED, []]]);
  for (const r of account.routes) {
    // A route without a script turns Workers off for its pattern; in the lab nothing is behind it.
    const name = account.scripts.has(r.script) ? r.script : UNROUTED;
    if (r.script && name === UNROUTED) warn(`route ${r.pattern} names missing script ${r.script}`);
    routesOf.set(name, [...(routesOf.get(name) ?? []), r.pattern]);
  }
  // Miniflare hands a request that matches no route to the first worker: this one, so it gets a 404.
  const workers = [{
    name: UNROUTED, routes: routesOf.get(UNROUTED), compatibilityDate: supportedCompatibilityDate, modules: true,
    script: `export default { fetch: () => Response.json(
      { error: "no_route", message: "No Worker route matches this host" }, { status: 404 }) };`,
  }];
  const outbound = outboundService(account.tunnels, connectorPrefix);
  for (const s of account.scripts.values()) {
    workers.push(workerOptions(s, { secrets, outbound, scripts: account.scripts, routes: routesOf.get(s.name) ?? [] }));
  }

  class StderrLog extends Log { log(message) { process.stderr.write(`${message}\n`); } }
  const mf = new Miniflare({
    workers, cf: false, host, port, log: new StderrLog(LogLevel.WARN),
    // stdout is kept for the ready line and the probe's JSON; Worker console output goes to stderr.
    handleRuntimeStdio: (out, err) => { out.pipe(process.stderr); err.pipe(process.stderr); },
  });
  try {
    const url = await mf.ready;
    for (const { script, binding, entries } of account.kv.values()) {
      const kv = await mf.getKVNamespace(binding, script);  // namespaces are keyed by id: one fill serves all
      for (const e of entries) {
        const expiration = e.expiration > Date.now() / 1000 + 60 ? e.expiration : undefined;  // KV's minimum
        await kv.put(e.name, e.value, { metadata: e.metadata ?? undefined, expiration });
      }
    }
    return { mf, url };
  } catch (e) {
    await mf.dispose();
    throw e;
  }
}

// ---------------------------------------------------------------- command line
// The probe comes in through the listener --listen serves, with the URL's host as Host (Miniflare's
// dispatchFetch keeps the URL but sends Host: 127.0.0.1:<port>); Workers see an http:// URL either way.
function probe(edgeUrl, opts) {
  const target = new URL(opts.probe);
  const headers = { host: target.host };
  for (const h of opts.header ?? []) {
    const i = h.indexOf(":");
    if (i < 1) throw usageError(`--header ${JSON.stringify(h)}: expected "Name: value"`);
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  if (opts["api-key-file"]) {
    headers.authorization = `Bearer ${readFileSync(opts["api-key-file"], "utf8").trim()}`;
  }
  const body = opts["body-file"] ? readFileSync(opts["body-file"]) : undefined;
  return new Promise((resolve, reject) => {
    const options = { method: opts.method ?? "GET", headers, agent: false };
    const req = http.request(new URL(target.pathname + target.search, edgeUrl), options, (res) => {
      const out = {};
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        const k = res.rawHeaders[i].toLowerCase();
        out[k] = k in out ? `${out[k]}, ${res.rawHeaders[i + 1]}` : res.rawHeaders[i + 1];
      }
      // Read only what is shown: a streaming response must not keep the probe waiting.
      let text = "";
      const done = (truncated) =>
        resolve({ status: res.statusCode, headers: out, body: text.slice(0, PROBE_BODY_LIMIT), truncated });
      res.setEncoding("utf8").on("data", (d) => {
        text += d;
        if (text.length > PROBE_BODY_LIMIT) { res.destroy(); done(true); }
      }).on("end", () => done(false)).on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function main() {
  const strings = ["base-url", "token-file", "account-id", "secrets", "connector-prefix", "listen", "probe",
    "method", "api-key-file", "body-file"];
  const { values: opts } = parseArgs({ options: {
    ...Object.fromEntries(strings.map((n) => [n, { type: "string" }])),
    header: { type: "string", multiple: true }, help: { type: "boolean", short: "h" } } });
  if (opts.help) return console.log(USAGE);
  const baseUrl = opts["base-url"] ?? process.env.CLOUDFLARE_BASE_URL;
  const tokenFile = opts["token-file"] ?? process.env.CLOUDFLARE_API_TOKEN_FILE;
  if (!baseUrl || !tokenFile) {
    throw usageError("need --base-url and --token-file (or CLOUDFLARE_BASE_URL, CLOUDFLARE_API_TOKEN_FILE)");
  }
  if (!opts.listen === !opts.probe) throw usageError("need exactly one of --listen and --probe");
  if (opts.probe && !URL.canParse(opts.probe)) throw usageError(`--probe ${opts.probe}: not a URL`);
  const listen = /^\[?([^\]]*)\]?:(\d+)$/.exec(opts.listen ?? "127.0.0.1:0");
  if (!listen) throw usageError("--listen wants HOST:PORT");
  const lines = readFileSync(tokenFile, "utf8").split("\n").map((l) => l.trim());
  const token = lines.find((l) => l && !l.startsWith("#"));
  if (!token) throw new Error(`no token in ${tokenFile}`);
  const secrets = opts.secrets ? JSON.parse(readFileSync(opts.secrets, "utf8")) : {};

  const api = apiClient(baseUrl, token);
  const account = await readAccount(api, opts["account-id"] ?? process.env.CLOUDFLARE_ACCOUNT_ID).catch((e) => {
    throw new Error(`reading the account at ${baseUrl}: ${e.message}`);
  });
  const { mf, url } = await startEdge(account,
    { secrets, connectorPrefix: opts["connector-prefix"], host: listen[1], port: Number(listen[2]) });
  if (opts.probe) {
    try {
      console.log(JSON.stringify(await probe(url, opts)));
    } finally {
      await mf.dispose();
    }
    return;
  }
  console.log(`edge-lab listening on ${url.origin}`);
  // Miniflare's own exit hook normally wins: it stops workerd and exits 128 + the signal (143, 130).
  await new Promise((resolve) => ["SIGTERM", "SIGINT"].forEach((s) => process.once(s, resolve)));
  await mf.dispose();
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main().then(() => process.exit(0), (e) => {
    process.stderr.write(`edge-lab: error: ${e.message}\n`);
    process.exit(e.exitCode ?? 1);
  });
}
