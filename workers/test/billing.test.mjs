// blackroad-billing on its own, in workerd, with real KV: Stripe signature verification,
// idempotency on the event id, and ordering by event.created.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { workerModules, fake, stripeSignature, newMiniflare } from "./support.mjs";

let mf, kv, billing, unconfigured;
const secret = fake("whsec_FAKECANARY");
const URL_ = "https://api.example.test/billing/webhook";
const now = () => Math.floor(Date.now() / 1000);
let serial = 0;

before(async () => {
  mf = newMiniflare({
    workers: [
      {
        name: "billing",
        ...workerModules("billing"),
        kvNamespaces: { BILLING: "billing" },
        bindings: { STRIPE_WEBHOOK_SECRET: secret, WEBHOOK_TOLERANCE_SECONDS: "300" },
      },
      { name: "billing-unconfigured", ...workerModules("billing"), kvNamespaces: { BILLING: "billing" }, bindings: { STRIPE_WEBHOOK_SECRET: "" } },
    ],
  });
  kv = await mf.getKVNamespace("BILLING", "billing");
  billing = await mf.getWorker("billing");
  unconfigured = await mf.getWorker("billing-unconfigured");
});

after(async () => {
  await mf?.dispose();
});

function event(type, object, created = now()) {
  serial += 1;
  return { id: `evt_FAKE${serial}${Date.now()}`, object: "event", type, created, livemode: false, data: { object } };
}

const subscription = (id, status, extra = {}) => ({
  id, object: "subscription", customer: "cus_FAKE1", status,
  items: { data: [{ price: { id: "price_FAKE_pro" }, current_period_end: 1900000000 }] },
  ...extra,
});

// Stripe's exact serialisation does not matter; what matters is that the signed bytes are the
// delivered bytes. Pretty-printing makes any re-serialisation in the Worker fail the MAC.
function deliver(evt, { sign = secret, timestamp, header, body } = {}) {
  const raw = body ?? JSON.stringify(evt, null, 2);
  const headers = { "content-type": "application/json" };
  const signature = header !== undefined ? header : stripeSignature(sign, raw, timestamp);
  if (signature !== null) headers["stripe-signature"] = signature;
  return billing.fetch(URL_, { method: "POST", headers, body: raw });
}

async function expectRejected(res, error) {
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { error });
}

test("a correctly signed subscription event is applied and remembered", async () => {
  const evt = event("customer.subscription.created", subscription("sub_FAKE_a", "active"));
  const res = await deliver(evt);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, applied: true });
  const stored = await kv.get("subscription:sub_FAKE_a", "json");
  assert.deepEqual(stored, {
    id: "sub_FAKE_a", customer: "cus_FAKE1", status: "active", price_ids: ["price_FAKE_pro"],
    current_period_end: 1900000000, cancel_at_period_end: false, deleted: false,
    event_id: evt.id, event_created: evt.created,
  });
  const seen = await kv.get(`event:${evt.id}`, "json");
  assert.equal(seen.type, "customer.subscription.created");
  assert.ok(!Number.isNaN(Date.parse(seen.received)));
  const { keys } = await kv.list({ prefix: `event:${evt.id}` });
  const in30Days = now() + 30 * 24 * 3600;
  assert.ok(Math.abs(keys[0].expiration - in30Days) < 60, "event ids expire after about 30 days");
});

test("tampered body, wrong secret, stale or future timestamp are 400 and change nothing", async () => {
  const evt = event("customer.subscription.created", subscription("sub_FAKE_bad", "active"));
  const raw = JSON.stringify(evt);
  const tampered = raw.replace('"active"', '"trialing"');
  await expectRejected(await deliver(evt, { body: tampered, header: stripeSignature(secret, raw) }), "bad_signature");
  await expectRejected(await deliver(evt, { sign: fake("whsec_FAKECANARY") }), "bad_signature");
  await expectRejected(await deliver(evt, { timestamp: now() - 301 }), "stale_timestamp");
  await expectRejected(await deliver(evt, { timestamp: now() + 301 }), "stale_timestamp");
  assert.equal(await kv.get("subscription:sub_FAKE_bad"), null);
  assert.equal(await kv.get(`event:${evt.id}`), null);
  // Inside the tolerance the same event is accepted.
  const res = await deliver(evt, { timestamp: now() - 200 });
  assert.equal(res.status, 200);
  await res.arrayBuffer();
});

test("missing or malformed Stripe-Signature is 400", async () => {
  const evt = event("invoice.paid", { id: "in_FAKE", customer: "cus_FAKE1" });
  const raw = JSON.stringify(evt);
  const t = now();
  const good = createHmac("sha256", secret).update(`${t}.${raw}`).digest("hex");
  await expectRejected(await deliver(evt, { header: null }), "missing_or_malformed_signature");
  for (const header of ["garbage", `v1=${good}`, `t=${t}`, `t=abc,v1=${good}`, `t=${t},v1=zz`, `t=${t},v0=${good}`, `t=${t},v1=${good.slice(0, 60)}`]) {
    await expectRejected(await deliver(evt, { header, body: raw }), "missing_or_malformed_signature");
  }
});

test("any v1 may match (secret roll), and the first failing one does not matter", async () => {
  const evt = event("invoice.paid", { id: "in_FAKE_roll", customer: "cus_FAKE_roll", amount_paid: 900, currency: "usd" });
  const raw = JSON.stringify(evt);
  const t = now();
  const sig = (s) => createHmac("sha256", s).update(`${t}.${raw}`).digest("hex");
  const res = await deliver(evt, { body: raw, header: `t=${t},v1=${sig(fake("whsec_FAKECANARY"))},v1=${sig(secret)},v0=${"0".repeat(64)}` });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).applied, true);
});

test("a replayed event is a duplicate and is not applied again", async () => {
  const evt = event("customer.subscription.updated", subscription("sub_FAKE_replay", "active"));
  let res = await deliver(evt);
  assert.deepEqual(await res.json(), { received: true, applied: true });
  // Remove the state: if the replay were applied it would come back.
  await kv.delete("subscription:sub_FAKE_replay");
  res = await deliver(evt);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, duplicate: true });
  assert.equal(await kv.get("subscription:sub_FAKE_replay"), null);
});

test("an older event delivered late does not roll state back", async () => {
  const t = now();
  const newer = event("customer.subscription.deleted", subscription("sub_FAKE_order", "canceled"), t);
  const older = event("customer.subscription.updated", subscription("sub_FAKE_order", "active"), t - 30);
  let res = await deliver(newer);
  assert.deepEqual(await res.json(), { received: true, applied: true });
  res = await deliver(older);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, applied: false });
  const stored = await kv.get("subscription:sub_FAKE_order", "json");
  assert.equal(stored.status, "canceled");
  assert.equal(stored.deleted, true);
  assert.equal(stored.event_id, newer.id);
  assert.notEqual(await kv.get(`event:${older.id}`), null, "the older event is still recorded as seen");
});

test("checkout and invoices update the customer record, each part ordered on its own", async () => {
  const t = now();
  const checkout = event("checkout.session.completed", {
    id: "cs_FAKE1", object: "checkout.session", customer: "cus_FAKE_c", subscription: "sub_FAKE_c",
    client_reference_id: "lab-user", mode: "subscription", payment_status: "paid",
  }, t);
  const paid = event("invoice.paid", { id: "in_FAKE_1", customer: "cus_FAKE_c", amount_due: 900, amount_paid: 900, currency: "usd", subscription: "sub_FAKE_c" }, t + 10);
  const failed = event("invoice.payment_failed", { id: "in_FAKE_2", customer: "cus_FAKE_c", amount_due: 900, amount_paid: 0, currency: "usd" }, t + 20);
  const stalePaid = event("invoice.paid", { id: "in_FAKE_0", customer: "cus_FAKE_c", amount_paid: 900 }, t + 5);
  for (const evt of [checkout, paid, failed]) {
    const res = await deliver(evt);
    assert.deepEqual(await res.json(), { received: true, applied: true }, evt.type);
  }
  let res = await deliver(stalePaid);
  assert.deepEqual(await res.json(), { received: true, applied: false });
  const customer = await kv.get("customer:cus_FAKE_c", "json");
  assert.equal(customer.id, "cus_FAKE_c");
  assert.equal(customer.checkout.client_reference_id, "lab-user");
  assert.equal(customer.checkout.subscription, "sub_FAKE_c");
  assert.equal(customer.last_invoice.invoice_id, "in_FAKE_2");
  assert.equal(customer.last_invoice.status, "payment_failed");
  assert.equal(customer.delinquent, true);

  // A guest checkout (no customer object) is acknowledged without state.
  res = await deliver(event("checkout.session.completed", { id: "cs_FAKE_guest", customer: null }));
  assert.deepEqual(await res.json(), { received: true, applied: false });
});

test("unknown event types are acknowledged and recorded, nothing else", async () => {
  const before = (await kv.list()).keys.length;
  const evt = event("customer.tax_id.created", { id: "txi_FAKE" });
  const res = await deliver(evt);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true, applied: false });
  assert.equal((await kv.list()).keys.length, before + 1);
  assert.notEqual(await kv.get(`event:${evt.id}`), null);
});

test("signed but not an event: 400", async () => {
  await expectRejected(await deliver(null, { body: "not json" }), "invalid_json");
  await expectRejected(await deliver({ id: "evt_FAKE_x", type: "invoice.paid" }), "invalid_event");
});

test("other paths and methods, and a missing secret", async () => {
  let res = await billing.fetch(URL_);
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("allow"), "POST");
  await res.arrayBuffer();
  for (const path of ["/billing/checkout", "/billing/", "/billing/webhook/x", "/other"]) {
    res = await billing.fetch(`https://api.example.test${path}`, { method: "POST" });
    assert.equal(res.status, 404, path);
    await res.arrayBuffer();
  }
  const evt = event("invoice.paid", { id: "in_FAKE_u", customer: "cus_FAKE_u" });
  const raw = JSON.stringify(evt);
  res = await unconfigured.fetch(URL_, { method: "POST", body: raw, headers: { "stripe-signature": stripeSignature(secret, raw) } });
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { error: "webhook_not_configured" });
});
