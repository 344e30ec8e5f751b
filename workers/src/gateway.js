// blackroad-edge-gateway: the only Worker on the public wildcard routes. It looks the host up in
// the routing table (KV), asks blackroad-auth and blackroad-ratelimit through service bindings
// (calls that never leave Cloudflare, usually not even the machine, and need no public route),
// forwards the request to the origin unchanged and streamed, and hands a telemetry event to
// blackroad-telemetry after responding.

import { json } from "./common.js";

// What Cloudflare answers when the origin or its tunnel is unreachable (530: tunnel down).
const ORIGIN_DOWN = new Set([502, 503, 504, 530]);
const MAINTENANCE_TIMEOUT_MS = 5000;

const BUILTIN_MAINTENANCE_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Down for maintenance</title></head>
<body><h1>Down for maintenance</h1><p>This service is temporarily unavailable. Please try again in a minute.</p></body></html>
`;

// Identity is only ever what blackroad-auth says; anything a client sends under these names is
// dropped on every route, so an auth "none" route cannot be used to smuggle an identity either.
function isIdentityHeader(name) {
  return name === "x-user-id" || name === "x-key-id" || name.startsWith("x-auth-");
}

function sanitizedHeaders(original) {
  const headers = new Headers(original);
  for (const name of [...headers.keys()]) if (isIdentityHeader(name)) headers.delete(name);
  return headers;
}

// Prefixes end with "/"; "/v2/" also covers exactly "/v2". The table is sorted by the playbook,
// but the longest match is chosen here so a hand-edited entry cannot shadow a more specific one.
function matchPath(paths, pathname) {
  let best = null;
  for (const entry of Array.isArray(paths) ? paths : []) {
    if (typeof entry?.prefix !== "string" || typeof entry.origin !== "string") continue;
    const prefix = entry.prefix.endsWith("/") ? entry.prefix : `${entry.prefix}/`;
    const hit = pathname.startsWith(prefix) || pathname === prefix.slice(0, -1);
    if (hit && (!best || prefix.length > best.prefix.length)) best = { ...entry, prefix };
  }
  return best;
}

async function maintenance(env) {
  const headers = { "retry-after": "60", "cache-control": "no-store" };
  if (env.MAINTENANCE_URL) {
    try {
      const page = await fetch(env.MAINTENANCE_URL, {
        signal: AbortSignal.timeout(MAINTENANCE_TIMEOUT_MS),
        headers: { accept: "text/html" },
      });
      if (page.ok) {
        const type = page.headers.get("content-type") || "text/html; charset=utf-8";
        return new Response(page.body, { status: 503, headers: { ...headers, "content-type": type } });
      }
      await page.body?.cancel();
    } catch (err) {
      console.warn("maintenance page unavailable:", String(err));
    }
  }
  return new Response(BUILTIN_MAINTENANCE_PAGE, {
    status: 503,
    headers: { ...headers, "content-type": "text/html; charset=utf-8" },
  });
}

async function authenticate(env, headers, mode) {
  const probe = new Headers(headers);
  probe.set("x-auth-mode", mode);
  // No body: auth only needs the credentials, and the client's body must reach the origin
  // intact. Framing headers would describe a body that is not there.
  probe.delete("content-length");
  probe.delete("transfer-encoding");
  let res;
  try {
    res = await env.AUTH.fetch(new Request("https://auth.internal/verify", { method: "POST", headers: probe }));
  } catch (err) {
    // Fail closed: without a verdict nobody gets in.
    console.error("auth unreachable:", String(err));
    return { denied: json(503, { error: "auth_unavailable" }) };
  }
  if (res.status === 204) {
    return { userId: res.headers.get("x-user-id"), keyId: res.headers.get("x-key-id") };
  }
  // 401/403 carry the client-facing error (and WWW-Authenticate); anything else is an auth fault
  // and must not turn into "access granted" or leak auth's internals.
  if (res.status === 401 || res.status === 403) return { denied: res };
  await res.body?.cancel();
  console.error("auth answered", res.status);
  return { denied: json(503, { error: "auth_unavailable" }) };
}

async function checkRate(env, key) {
  try {
    const res = await env.RATELIMIT.fetch(new Request("https://ratelimit.internal/check", {
      method: "POST",
      headers: { "x-ratelimit-key": key },
    }));
    if (res.status === 429) return { limited: res };
    const copy = [];
    for (const [name, value] of res.headers) if (name.startsWith("ratelimit")) copy.push([name, value]);
    await res.body?.cancel();
    if (res.status !== 204) console.warn("ratelimit answered", res.status);
    return { headers: copy };
  } catch (err) {
    // Fail open: a broken limiter should cost abuse protection, not the whole API.
    console.warn("ratelimit unavailable:", String(err));
    return { headers: [] };
  }
}

async function handle(request, env, event) {
  const url = new URL(request.url);
  const host = url.hostname.toLowerCase().replace(/\.$/, "");
  event.host = host;

  let table;
  try {
    table = await env.ROUTES.get(`route:${host}`, "json");
  } catch (err) {
    console.error(`routing entry for ${host} is not valid JSON:`, String(err));
    return json(500, { error: "edge_misconfigured" });
  }
  if (!table) return json(404, { error: "unknown_host" });
  const route = matchPath(table.paths, url.pathname);
  if (!route) return json(404, { error: "no_route" });
  event.route_found = true;
  event.path_prefix = route.prefix;

  const headers = sanitizedHeaders(request.headers);
  const mode = route.auth || "none";
  let identity = {};
  if (mode !== "none") {
    identity = await authenticate(env, headers, mode);
    if (identity.denied) return identity.denied;
    if (identity.userId) {
      headers.set("x-user-id", identity.userId);
      event.user_id = identity.userId;
    }
    if (identity.keyId) {
      // The backend gets who it is, never the key: a raw key that reached the API could end up
      // in its logs. (Session cookies and tokens stay; the application may need them.)
      headers.delete("x-api-key");
      if (/^bearer\s/i.test(headers.get("authorization") || "")) headers.delete("authorization");
      headers.set("x-key-id", identity.keyId);
      // The key's id (never the key) lets a leaked key's use be found in the logs.
      event.key_id = identity.keyId;
    }
  }

  let rateHeaders = [];
  if (route.rate_limit) {
    const key = identity.keyId ? `key:${identity.keyId}`
      : identity.userId ? `user:${identity.userId}`
      : `ip:${request.headers.get("cf-connecting-ip") || "unknown"}`;
    const rate = await checkRate(env, key);
    if (rate.limited) return rate.limited;
    rateHeaders = rate.headers;
  }

  const target = route.origin.replace(/\/+$/, "") + url.pathname + url.search;
  let upstream;
  try {
    upstream = await fetch(target, {
      method: request.method,
      headers,
      body: request.body,
      // Redirects belong to the client; following them here would rewrite what it sees.
      redirect: "manual",
      duplex: "half",
    });
  } catch (err) {
    console.warn(`origin for ${host} unreachable:`, String(err));
    return maintenance(env);
  }
  if (ORIGIN_DOWN.has(upstream.status)) {
    await upstream.body?.cancel();
    return maintenance(env);
  }
  if (rateHeaders.length === 0) return upstream;
  const response = new Response(upstream.body, upstream);
  for (const [name, value] of rateHeaders) response.headers.set(name, value);
  return response;
}

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const event = {
      ts: started,
      host: "",
      method: request.method,
      path_prefix: null,
      status: 0,
      duration_ms: 0,
      route_found: false,
    };
    if (request.cf?.colo) event.colo = request.cf.colo;

    let response;
    try {
      response = await handle(request, env, event);
    } catch (err) {
      console.error("gateway error:", err?.stack || String(err));
      response = json(500, { error: "internal_error" });
    }

    event.status = response.status;
    event.duration_ms = Date.now() - started;
    // Telemetry runs after the response is on its way; any failure there is swallowed so it can
    // neither fail nor delay the user's request.
    try {
      if (env.TELEMETRY) {
        ctx.waitUntil(
          env.TELEMETRY.fetch("https://telemetry.internal/event", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(event),
          }).then((r) => r.body?.cancel(), (err) => console.warn("telemetry unavailable:", String(err))),
        );
      }
    } catch (err) {
      console.warn("telemetry not queued:", String(err));
    }
    return response;
  },
};
