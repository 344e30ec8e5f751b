// blackroad-auth: answers the gateway's "who is this?" through a service binding (it has no route).
// 204 + X-User-ID (+ X-Key-ID) means authenticated; 401/403 are client-facing and the gateway
// returns them as they are.

import { json, sha256Hex, hmacSha256, equalBytes } from "./common.js";

// Clock skew tolerated on exp/nbf between the token issuer and the edge.
const LEEWAY_SECONDS = 60;
// Longer than any key or token we issue; bounds the work an attacker can make us hash.
const MAX_CREDENTIAL_LENGTH = 4096;

const missing = (error) =>
  json(401, { error }, { "www-authenticate": 'Bearer realm="blackroad"' });
const invalidToken = (error) =>
  json(401, { error }, { "www-authenticate": 'Bearer realm="blackroad", error="invalid_token"' });

function bearer(headers) {
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(headers.get("authorization") || "");
  return match ? match[1] : null;
}

function cookie(headers, name) {
  for (const part of (headers.get("cookie") || "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

// Keys are 256-bit random strings, so one SHA-256 is enough: a slow password hash only helps
// against guessable secrets, and here it would add latency to every API call for nothing.
async function verifyApiKey(headers, env) {
  const key = bearer(headers) || headers.get("x-api-key");
  if (!key) return missing("missing_key");
  if (key.length > MAX_CREDENTIAL_LENGTH) return json(403, { error: "invalid_key" });
  const record = await env.AUTH_KV.get(`apikey:${await sha256Hex(key)}`, "json");
  if (!record || typeof record !== "object") return json(403, { error: "invalid_key" });
  if (record.revoked === true) return json(403, { error: "revoked_key" });
  if (!record.user || !record.id) return json(403, { error: "invalid_key" });
  return new Response(null, {
    status: 204,
    headers: { "x-user-id": String(record.user), "x-key-id": String(record.id) },
  });
}

function base64UrlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  try {
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

function decodeJson(part) {
  const bytes = base64UrlDecode(part);
  if (!bytes) return null;
  try {
    const value = JSON.parse(new TextDecoder().decode(bytes));
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

async function verifySession(headers, env) {
  // No secret configured means sessions are off, not "every token is valid".
  if (!env.JWT_SECRET) return missing("session_unavailable");
  const token = bearer(headers) || cookie(headers, "session");
  if (!token) return missing("missing_session");
  if (token.length > MAX_CREDENTIAL_LENGTH) return invalidToken("invalid_session");
  const parts = token.split(".");
  if (parts.length !== 3) return invalidToken("invalid_session");
  const header = decodeJson(parts[0]);
  // The algorithm is pinned: trusting the token's own "alg" is how "none" and key-confusion
  // attacks get in.
  if (!header || header.alg !== "HS256") return invalidToken("invalid_session");
  const signature = base64UrlDecode(parts[2]);
  const expected = await hmacSha256(env.JWT_SECRET, `${parts[0]}.${parts[1]}`);
  if (!equalBytes(signature, expected)) return invalidToken("invalid_session");
  const claims = decodeJson(parts[1]);
  if (!claims || typeof claims.sub !== "string" || !claims.sub) return invalidToken("invalid_session");
  const now = Math.floor(Date.now() / 1000);
  // A session without an expiry would be valid forever once leaked.
  if (typeof claims.exp !== "number" || now > claims.exp + LEEWAY_SECONDS) return invalidToken("session_expired");
  if (typeof claims.nbf === "number" && now + LEEWAY_SECONDS < claims.nbf) return invalidToken("session_not_yet_valid");
  return new Response(null, { status: 204, headers: { "x-user-id": claims.sub } });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (request.method !== "POST" || url.pathname !== "/verify") return json(404, { error: "not_found" });
    const mode = request.headers.get("x-auth-mode") || "api_key";
    if (mode === "api_key") return verifyApiKey(request.headers, env);
    if (mode === "session") return verifySession(request.headers, env);
    return json(400, { error: "unknown_auth_mode" });
  },
};
