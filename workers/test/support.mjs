// Shared test helpers: Worker definitions for Miniflare, throwaway local HTTP servers, and
// per-run fake secrets. Not a test file itself (the test script only runs *.test.mjs).

import http from "node:http";
import { createHmac, randomBytes, createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import { Miniflare } from "miniflare";

export const SRC = fileURLToPath(new URL("../src/", import.meta.url));
export const COMPATIBILITY_DATE = "2026-04-01";

// Uploaded the way the playbook does it: the main module first, common.js next to it when the
// main module imports it.
export function workerModules(name) {
  const main = `${SRC}${name}.js`;
  const modules = [{ type: "ESModule", path: main }];
  if (readFileSync(main, "utf8").includes('from "./common.js"')) modules.push({ type: "ESModule", path: `${SRC}common.js` });
  return { modules, modulesRoot: SRC };
}

// Obviously fake, different on every run, so a leak in output is easy to grep for and never a
// real credential.
// Every test runtime: no cf.json download (there is no internet here), the Workers' own date.
export const newMiniflare = (options) => new Miniflare({ cf: false, compatibilityDate: COMPATIBILITY_DATE, ...options });

export const fake = (prefix = "FAKECANARY-") => `${prefix}${randomBytes(16).toString("hex")}`;

export const sha256Hex = (text) => createHash("sha256").update(text).digest("hex");

// A local HTTP server recording what it received. `handler(req, res, body)` gets the body
// already read unless `streaming` is set, in which case the handler reads `req` itself.
export async function startServer(handler, { streaming = false } = {}) {
  const seen = [];
  const server = http.createServer(async (req, res) => {
    try {
      if (streaming) {
        seen.push({ method: req.method, url: req.url, headers: req.headers });
        await handler(req, res);
        return;
      }
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const body = Buffer.concat(chunks);
      const record = { method: req.method, url: req.url, headers: req.headers, body };
      seen.push(record);
      await handler(req, res, body, record);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

// A port nothing listens on: bind an ephemeral one and release it.
export async function closedPort() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export function stripeSignature(secret, body, timestamp = Math.floor(Date.now() / 1000)) {
  const v1 = createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
  return `t=${timestamp},v1=${v1}`;
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

export function signJwt(secret, claims, header = { alg: "HS256", typ: "JWT" }) {
  const head = `${b64url(header)}.${b64url(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

// The rate limiter's windows are aligned to the epoch; start a burst early in a window so it
// cannot straddle two of them.
export async function startOfWindow(periodSeconds, marginMs = 3000) {
  const into = Date.now() % (periodSeconds * 1000);
  if (periodSeconds * 1000 - into < marginMs) {
    await new Promise((resolve) => setTimeout(resolve, periodSeconds * 1000 - into + 50));
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Miniflare's dispatchFetch re-sends every body chunked, dropping Content-Length; a plain HTTP
// request to the runtime's own address keeps the framing a real client would use.
export function rawRequest(base, { host, path = "/", method = "GET", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const url = new URL(path, base);
    const req = http.request(url, {
      method,
      headers: { host, ...(body !== undefined ? { "content-length": Buffer.byteLength(body) } : {}), ...headers },
    }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}
