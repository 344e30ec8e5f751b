// blackroad-billing: receives Stripe webhooks on api.<domain>/billing/webhook and keeps the
// subscription state the API needs in KV.
//
// There are no checkout or customer-portal endpoints here: creating those sessions needs the
// Stripe *secret key*, which this Worker deliberately does not hold. It only holds the webhook
// signing secret, which can verify events but cannot act on the Stripe account.

import { json, fromHex, hmacSha256, equalBytes } from "./common.js";

const DEFAULT_TOLERANCE_SECONDS = 300;
// Stripe retries a failed delivery for up to three days; remembering ids ten times longer makes
// a late retry or a manual resend a recognised duplicate.
const EVENT_TTL_SECONDS = 30 * 24 * 3600;
// Stripe events are a few KB; anything far larger is not from Stripe and is refused before it
// is buffered.
const MAX_BODY_BYTES = 1024 * 1024;

// Header format: "t=<unix seconds>,v1=<hex>,v1=<hex>,v0=<hex>". Several v1 values appear while a
// secret is being rolled; v0 is Stripe's test scheme and is ignored.
function parseSignatureHeader(value) {
  if (!value) return null;
  let timestamp = null;
  const signatures = [];
  for (const item of value.split(",")) {
    const eq = item.indexOf("=");
    if (eq < 0) continue;
    const key = item.slice(0, eq).trim();
    const val = item.slice(eq + 1).trim();
    if (key === "t" && /^\d{1,12}$/.test(val)) timestamp = Number(val);
    else if (key === "v1") {
      const bytes = fromHex(val);
      if (bytes && bytes.byteLength === 32) signatures.push(bytes);
    }
  }
  return timestamp === null || signatures.length === 0 ? null : { timestamp, signatures };
}

async function verify(request, env, rawBody) {
  const header = parseSignatureHeader(request.headers.get("stripe-signature"));
  if (!header) return { error: "missing_or_malformed_signature" };
  // The signed payload is the timestamp and the exact bytes Stripe sent; re-serialised JSON
  // would not match, which is why the body is read as text before anything parses it.
  const expected = await hmacSha256(env.STRIPE_WEBHOOK_SECRET, `${header.timestamp}.${rawBody}`);
  // Every candidate is compared, in constant time, so the time taken says nothing about which
  // (or how much of one) matched.
  let match = false;
  for (const candidate of header.signatures) match = equalBytes(candidate, expected) || match;
  if (!match) return { error: "bad_signature" };
  // The timestamp is covered by the signature, so checking it after the MAC is safe; it stops a
  // captured delivery from being replayed later.
  const tolerance = Number.parseInt(env.WEBHOOK_TOLERANCE_SECONDS, 10) || DEFAULT_TOLERANCE_SECONDS;
  if (Math.abs(Math.floor(Date.now() / 1000) - header.timestamp) > tolerance) return { error: "stale_timestamp" };
  return { ok: true };
}

const ids = (value) => (typeof value === "string" ? value : value?.id ?? null);

// Stripe does not guarantee delivery order. Each record keeps the `created` of the event that
// wrote it, and an older event for the same object is acknowledged but not applied, so a late
// "updated" cannot roll back a newer "deleted". Events created in the same second cannot be
// ordered this way; the later delivery wins.
function isOlder(stored, event) {
  return typeof stored?.event_created === "number" && event.created < stored.event_created;
}

async function applySubscription(env, event) {
  const sub = event.data.object;
  if (!sub?.id) return false;
  const key = `subscription:${sub.id}`;
  if (isOlder(await env.BILLING.get(key, "json"), event)) return false;
  const items = sub.items?.data ?? [];
  const record = {
    id: sub.id,
    customer: ids(sub.customer),
    status: event.type === "customer.subscription.deleted" ? sub.status || "canceled" : sub.status,
    price_ids: items.map((item) => item.price?.id).filter(Boolean),
    // Newer Stripe API versions moved current_period_end from the subscription to its items.
    current_period_end: sub.current_period_end ?? items[0]?.current_period_end ?? null,
    cancel_at_period_end: Boolean(sub.cancel_at_period_end),
    deleted: event.type === "customer.subscription.deleted",
    event_id: event.id,
    event_created: event.created,
  };
  await env.BILLING.put(key, JSON.stringify(record));
  return true;
}

// The customer record is updated by several event types; each section carries its own
// event_created so an old invoice event cannot overwrite a newer checkout, or the reverse.
async function mergeCustomer(env, customerId, section, value, event) {
  const key = `customer:${customerId}`;
  const record = (await env.BILLING.get(key, "json")) || { id: customerId };
  if (isOlder(record[section], event)) return false;
  record[section] = { ...value, event_id: event.id, event_created: event.created };
  if (section === "last_invoice") record.delinquent = value.status === "payment_failed";
  await env.BILLING.put(key, JSON.stringify(record));
  return true;
}

async function applyCheckout(env, event) {
  const session = event.data.object;
  const customer = ids(session?.customer);
  // A one-off payment without a customer object has nothing to attach state to.
  if (!customer) return false;
  return mergeCustomer(env, customer, "checkout", {
    session_id: session.id,
    client_reference_id: session.client_reference_id ?? null,
    subscription: ids(session.subscription),
    mode: session.mode ?? null,
    payment_status: session.payment_status ?? null,
  }, event);
}

async function applyInvoice(env, event) {
  const invoice = event.data.object;
  const customer = ids(invoice?.customer);
  if (!customer) return false;
  return mergeCustomer(env, customer, "last_invoice", {
    invoice_id: invoice.id,
    status: event.type === "invoice.paid" ? "paid" : "payment_failed",
    amount_due: invoice.amount_due ?? null,
    amount_paid: invoice.amount_paid ?? null,
    currency: invoice.currency ?? null,
    subscription: ids(invoice.subscription ?? invoice.parent?.subscription_details?.subscription),
  }, event);
}

const HANDLERS = {
  "customer.subscription.created": applySubscription,
  "customer.subscription.updated": applySubscription,
  "customer.subscription.deleted": applySubscription,
  "checkout.session.completed": applyCheckout,
  "invoice.paid": applyInvoice,
  "invoice.payment_failed": applyInvoice,
};

async function webhook(request, env) {
  // Without the secret nothing can be verified; 503 makes Stripe retry later instead of
  // dropping the event.
  if (!env.STRIPE_WEBHOOK_SECRET) return json(503, { error: "webhook_not_configured" });
  const length = Number(request.headers.get("content-length") || 0);
  if (length > MAX_BODY_BYTES) return json(413, { error: "payload_too_large" });
  const rawBody = await request.text();
  if (rawBody.length > MAX_BODY_BYTES) return json(413, { error: "payload_too_large" });

  const verdict = await verify(request, env, rawBody);
  if (!verdict.ok) return json(400, { error: verdict.error });

  let event;
  try {
    event = JSON.parse(rawBody);
  } catch {
    return json(400, { error: "invalid_json" });
  }
  if (typeof event?.id !== "string" || !event.id || typeof event.type !== "string" ||
      typeof event.created !== "number" || typeof event.data !== "object" || event.data === null) {
    return json(400, { error: "invalid_event" });
  }

  // KV is eventually consistent: a marker written in one location may be invisible in another
  // for up to ~60 s, so two near-simultaneous deliveries can both get past this check. That is
  // tolerable because applying is idempotent (same event, same record) and ordered by `created`.
  const seenKey = `event:${event.id}`;
  if (await env.BILLING.get(seenKey)) return json(200, { received: true, duplicate: true });

  const handler = HANDLERS[event.type];
  // If applying throws, the event is not marked as seen: the 500 makes Stripe deliver it again.
  const applied = handler ? await handler(env, event) : false;
  await env.BILLING.put(seenKey, JSON.stringify({ type: event.type, received: new Date().toISOString() }), {
    expirationTtl: EVENT_TTL_SECONDS,
  });
  return json(200, { received: true, applied });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/billing/webhook") {
      if (request.method !== "POST") return json(405, { error: "method_not_allowed" }, { allow: "POST" });
      try {
        return await webhook(request, env);
      } catch (err) {
        console.error("webhook failed:", err?.stack || String(err));
        return json(500, { error: "internal_error" });
      }
    }
    return json(404, { error: "not_found" });
  },
};
