// blackroad-ratelimit on its own, in workerd, with the real Rate Limiting binding (limit 3 per
// 10 s so the test stays short).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { workerModules, startOfWindow, newMiniflare } from "./support.mjs";

let mf, limiter;

before(async () => {
  mf = newMiniflare({
    workers: [{
      name: "ratelimit",
      ...workerModules("ratelimit"),
      ratelimits: { LIMITER: { simple: { limit: 3, period: 10 } } },
      bindings: { LIMIT: "3", PERIOD: "10" },
    }],
  });
  limiter = await mf.getWorker("ratelimit");
});

after(async () => {
  await mf?.dispose();
});

const check = (key) => limiter.fetch("https://ratelimit.internal/check", {
  method: "POST",
  headers: key ? { "x-ratelimit-key": key } : {},
});

test("three requests pass with the policy headers, the fourth is 429 until the window ends", async () => {
  await startOfWindow(10);
  for (let i = 0; i < 3; i++) {
    const res = await check("key:a");
    assert.equal(res.status, 204, `request ${i + 1}`);
    assert.equal(res.headers.get("ratelimit-limit"), "3");
    assert.equal(res.headers.get("ratelimit-policy"), "3;w=10");
  }
  const res = await check("key:a");
  assert.equal(res.status, 429);
  const retry = Number(res.headers.get("retry-after"));
  assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 10, `Retry-After ${retry}`);
  assert.equal(res.headers.get("ratelimit-limit"), "3");
  assert.equal(res.headers.get("ratelimit-remaining"), "0");
  assert.equal(res.headers.get("ratelimit-reset"), String(retry));
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.deepEqual(await res.json(), { error: "rate_limited", retry_after: retry });

  // Keys are counted separately.
  const other = await check("key:b");
  assert.equal(other.status, 204);
});

test("a missing key is 400, anything but POST /check is 404", async () => {
  let res = await check(null);
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { error: "missing_ratelimit_key" });
  res = await limiter.fetch("https://ratelimit.internal/check", { headers: { "x-ratelimit-key": "k" } });
  assert.equal(res.status, 404);
  await res.arrayBuffer();
});
