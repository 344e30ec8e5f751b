// blackroad-auth on its own, in workerd, with a real KV namespace: API keys stored by hash only,
// revocation, and HS256 sessions.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { workerModules, fake, sha256Hex, signJwt, newMiniflare } from "./support.mjs";

let mf, kv, auth, authNoSecret;
const jwtSecret = fake("FAKECANARY-jwt-");
const goodKey = fake("FAKECANARY-key-");
const revokedKey = fake("FAKECANARY-key-");

before(async () => {
  mf = newMiniflare({
    workers: [
      { name: "auth", ...workerModules("auth"), kvNamespaces: { AUTH_KV: "auth" }, bindings: { JWT_SECRET: jwtSecret } },
      { name: "auth-no-secret", ...workerModules("auth"), kvNamespaces: { AUTH_KV: "auth" } },
    ],
  });
  kv = await mf.getKVNamespace("AUTH_KV", "auth");
  // What the playbook writes: the hash of the key, never the key.
  await kv.put(`apikey:${sha256Hex(goodKey)}`, JSON.stringify({ id: "lab-demo", user: "lab-user", revoked: false, created: "2026-04-01" }));
  await kv.put(`apikey:${sha256Hex(revokedKey)}`, JSON.stringify({ id: "old-key", user: "lab-user", revoked: true }));
  auth = await mf.getWorker("auth");
  authNoSecret = await mf.getWorker("auth-no-secret");
});

after(async () => {
  await mf?.dispose();
});

const verify = (headers, worker = auth) =>
  worker.fetch("https://auth.internal/verify", { method: "POST", headers });

async function expectError(res, status, error) {
  assert.equal(res.status, status);
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.deepEqual(await res.json(), { error });
  assert.equal(res.headers.get("x-user-id"), null);
}

test("anything but POST /verify is 404", async () => {
  for (const [method, path] of [["GET", "/verify"], ["POST", "/"], ["POST", "/verify/x"]]) {
    const res = await auth.fetch(`https://auth.internal${path}`, { method, headers: { authorization: `Bearer ${goodKey}` } });
    assert.equal(res.status, 404, `${method} ${path}`);
    await res.arrayBuffer();
  }
});

test("a missing key is 401 with WWW-Authenticate", async () => {
  const res = await verify({ "x-auth-mode": "api_key" });
  assert.match(res.headers.get("www-authenticate"), /^Bearer/);
  await expectError(res, 401, "missing_key");
});

test("an unknown key is 403 invalid_key, a revoked one 403 revoked_key", async () => {
  await expectError(await verify({ authorization: `Bearer ${fake("FAKECANARY-key-")}` }), 403, "invalid_key");
  await expectError(await verify({ "x-api-key": revokedKey }), 403, "revoked_key");
  await expectError(await verify({ authorization: `Bearer ${revokedKey}` }), 403, "revoked_key");
});

test("a valid key, as Bearer or X-API-Key, gives the user and key id", async () => {
  for (const headers of [{ authorization: `Bearer ${goodKey}` }, { "x-api-key": goodKey }, { authorization: `bearer  ${goodKey}`, "x-auth-mode": "api_key" }]) {
    const res = await verify(headers);
    assert.equal(res.status, 204, JSON.stringify(Object.keys(headers)));
    assert.equal(res.headers.get("x-user-id"), "lab-user");
    assert.equal(res.headers.get("x-key-id"), "lab-demo");
  }
});

test("the raw key is nowhere in KV, only its SHA-256", async () => {
  const { keys } = await kv.list();
  const names = keys.map((k) => k.name);
  assert.ok(names.includes(`apikey:${sha256Hex(goodKey)}`));
  for (const { name } of keys) {
    assert.doesNotMatch(name, new RegExp(goodKey));
    assert.doesNotMatch(await kv.get(name), new RegExp(goodKey));
  }
});

test("session: a valid HS256 token from the header or the session cookie", async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = signJwt(jwtSecret, { sub: "sess-user", iat: now, exp: now + 600 });
  for (const headers of [{ authorization: `Bearer ${token}` }, { cookie: `theme=dark; session=${token}; other=1` }]) {
    const res = await verify({ ...headers, "x-auth-mode": "session" });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("x-user-id"), "sess-user");
    assert.equal(res.headers.get("x-key-id"), null);
  }
});

test("session: expired, not yet valid, bad signature, tampered, alg none, no exp", async () => {
  const now = Math.floor(Date.now() / 1000);
  const session = (token) => verify({ authorization: `Bearer ${token}`, "x-auth-mode": "session" });

  let res = await session(signJwt(jwtSecret, { sub: "u", exp: now - 120 }));
  assert.match(res.headers.get("www-authenticate"), /invalid_token/);
  await expectError(res, 401, "session_expired");
  // Inside the leeway an just-expired token still passes (clock skew).
  res = await session(signJwt(jwtSecret, { sub: "u", exp: now - 5 }));
  assert.equal(res.status, 204);

  await expectError(await session(signJwt(jwtSecret, { sub: "u", exp: now + 600, nbf: now + 600 })), 401, "session_not_yet_valid");
  await expectError(await session(signJwt(fake("FAKECANARY-other-"), { sub: "u", exp: now + 600 })), 401, "invalid_session");

  const good = signJwt(jwtSecret, { sub: "u", exp: now + 600 });
  const [head, , sig] = good.split(".");
  const forged = Buffer.from(JSON.stringify({ sub: "admin", exp: now + 600 })).toString("base64url");
  await expectError(await session(`${head}.${forged}.${sig}`), 401, "invalid_session");

  const none = signJwt(jwtSecret, { sub: "u", exp: now + 600 }, { alg: "none", typ: "JWT" });
  await expectError(await session(`${none.split(".").slice(0, 2).join(".")}.`), 401, "invalid_session");
  await expectError(await session(none), 401, "invalid_session");

  await expectError(await session(signJwt(jwtSecret, { sub: "u" })), 401, "session_expired");
  await expectError(await session("not-a-jwt"), 401, "invalid_session");
  await expectError(await verify({ "x-auth-mode": "session" }), 401, "missing_session");
});

test("session mode without JWT_SECRET answers 401", async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = signJwt("", { sub: "u", exp: now + 600 });
  await expectError(await verify({ authorization: `Bearer ${token}`, "x-auth-mode": "session" }, authNoSecret), 401, "session_unavailable");
});
