// blackroad-ratelimit: counts requests per key with Cloudflare's Rate Limiting binding and turns
// the verdict into RateLimit-* / Retry-After headers for the gateway.
//
// Why not counters in KV: KV is eventually consistent. A write is visible at the location that
// made it at once, but other locations keep serving their cached value for up to ~60 s, and one
// key takes at most one write per second. A read-increment-write counter therefore loses
// increments under concurrency (two requests read 41, both write 42) and sees different counts in
// different locations, so a client spreading requests over locations or firing them in parallel
// is barely limited. The binding counts in memory next to the request, with no KV write per call.
//
// The binding counts per Cloudflare location, not globally, and is deliberately approximate: a
// client hitting two locations can get up to twice the limit. That is fine for abuse protection.
// A hard global quota (billing, "1000 calls per month") would need a Durable Object: one object
// per key, single-threaded, strongly consistent storage, at the price of a round trip to the
// object's home location on every request.

import { json } from "./common.js";

// The binding does not expose its own config, so LIMIT/PERIOD mirror it for the headers; the
// defaults are the values the playbook uploads.
function config(env) {
  const limit = Number.parseInt(env.LIMIT, 10);
  const period = Number.parseInt(env.PERIOD, 10);
  return {
    limit: limit > 0 ? limit : 100,
    period: period > 0 ? period : 60,
  };
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (request.method !== "POST" || url.pathname !== "/check") return json(404, { error: "not_found" });
    const key = request.headers.get("x-ratelimit-key");
    if (!key) return json(400, { error: "missing_ratelimit_key" });

    const { limit, period } = config(env);
    const policy = { "ratelimit-limit": String(limit), "ratelimit-policy": `${limit};w=${period}` };
    const { success } = await env.LIMITER.limit({ key });
    if (success) return new Response(null, { status: 204, headers: policy });

    // The binding reports no reset time. Its windows are taken to be fixed and aligned to the
    // epoch (which is how the local implementation counts), so the wait is until the current
    // window ends: at least one second, so a client never retries in a tight loop.
    const nowSeconds = Math.floor(Date.now() / 1000);
    const reset = Math.max(1, period - (nowSeconds % period));
    return json(429, { error: "rate_limited", retry_after: reset }, {
      ...policy,
      "retry-after": String(reset),
      "ratelimit-remaining": "0",
      "ratelimit-reset": String(reset),
    });
  },
};
