// Helpers shared by the edge Workers. The playbook uploads this module next to every main module
// that imports it, so it must stay dependency-free and side-effect-free at import time (Workers
// forbid I/O and randomness in global scope).

const encoder = new TextEncoder();

// Every error the edge produces is JSON and never cached: a cached 401/429/503 would be served to
// other clients.
export function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", ...headers },
  });
}

export function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

// null instead of a throw: callers treat undecodable input as "does not match".
export function fromHex(text) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export async function sha256Hex(text) {
  return toHex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

export async function hmacSha256(secret, message) {
  const key = await crypto.subtle.importKey(
    "raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(message)));
}

// timingSafeEqual throws on different lengths; a length mismatch leaks nothing secret (MAC
// lengths are public), so it is answered early.
export function equalBytes(a, b) {
  if (!a || !b || a.byteLength !== b.byteLength) return false;
  return crypto.subtle.timingSafeEqual(a, b);
}
