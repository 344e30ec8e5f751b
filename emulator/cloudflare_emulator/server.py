"""HTTP front end: routing, envelope, auth, contract checks, faults and recording."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hmac
import json
import os
import re
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .contract import Contract
from .state import MAX_KV_BULK, ApiError, State, _redact, new_id, now_iso

PREFIX = "/client/v4"
CONTROL = "/__emulator"


class Reply:
    """A handler result that is not a plain 200 envelope."""

    def __init__(self, status=200, result=None, result_info=None, raw=None, content_type=None, headers=None):
        self.status = status
        self.result = result
        self.result_info = result_info
        self.raw = raw
        self.content_type = content_type
        self.headers = headers or {}


class Request:
    def __init__(self, method, params, query, multi, body, raw, content_type, headers):
        self.method = method
        self.params = params
        self.query = query          # first value of each query parameter
        self.multi = multi          # all values
        self.body = body            # parsed JSON or None
        self.raw = raw
        self.content_type = content_type
        self.headers = headers

    def multipart(self):
        """Parse multipart/form-data with the stdlib email parser: [(name, filename, ctype, bytes)]."""
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.raw)
        if not msg.is_multipart():
            raise ApiError(400, 10021, "Expected a multipart/form-data body")
        parts = []
        for part in msg.iter_parts():
            parts.append((part.get_param("name", header="content-disposition"), part.get_filename(),
                          part.get_content_type(), part.get_payload(decode=True) or b""))
        return parts


ROUTES = []


def route(method, template):
    """Register a handler for an API path template (OpenAPI spelling)."""
    rx = re.compile("^" + re.sub(r"\\\{([a-z_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")

    def deco(fn):
        ROUTES.append((method, template, rx, fn))
        return fn
    return deco


def paginate(items, q, default=20, maximum=50, minimum=1):
    """Page-based pagination; pages past the end are empty so SDK auto-pagination stops."""
    try:
        page = int(float(q.get("page", 1)))
        per_page = int(float(q.get("per_page", default)))
    except ValueError:
        raise ApiError(400, 1001, "page and per_page must be numbers") from None
    if page < 1 or not (minimum <= per_page <= maximum):
        raise ApiError(400, 1001, f"per_page must be between {minimum} and {maximum}, page at least 1")
    total = len(items)
    chunk = items[(page - 1) * per_page: page * per_page]
    info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": total,
            "total_pages": max(1, -(-total // per_page))}
    return Reply(result=chunk, result_info=info)


def _order(items, q, allowed, default=None):
    key = q.get("order", default)
    if key in allowed:
        items = sorted(items, key=lambda x: (str(_dig(x, key)) if _dig(x, key) is not None else ""))
    if q.get("direction") == "desc":
        items = list(reversed(items))
    return items


def _dig(obj, dotted):
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


# ---------------------------------------------------------------------------- accounts / zones
@route("GET", "/accounts")
def list_accounts(st, r):
    items = [a for a in st.accounts.values() if not r.query.get("name") or r.query["name"].lower() in a["name"].lower()]
    return paginate(_order(items, r.query, ()), r.query, maximum=50)


@route("GET", "/accounts/{account_id}")
def get_account(st, r):
    return st.account(r.params["account_id"])


@route("GET", "/zones")
def list_zones(st, r):
    q = r.query
    items = list(st.zones.values())
    if q.get("name"):
        items = [z for z in items if z["name"] == q["name"].lower()]
    if q.get("account.id"):
        items = [z for z in items if z["account"]["id"] == q["account.id"]]
    if q.get("account.name"):
        items = [z for z in items if z["account"]["name"] == q["account.name"]]
    if q.get("status"):
        items = [z for z in items if z["status"] == q["status"]]
    return paginate(_order(items, q, ("name", "status", "account.id", "account.name")), q, maximum=50, minimum=5)


@route("GET", "/zones/{zone_id}")
def get_zone(st, r):
    return st.zone(r.params["zone_id"])


# ---------------------------------------------------------------------------- DNS
def _match_str(value, q, field):
    """Cloudflare's name/content/comment filter family: field, field.exact, .contains, ..."""
    value = value or ""
    checks = []
    for suffix, fn in (("", lambda v, x: v == x), (".exact", lambda v, x: v == x),
                       (".contains", lambda v, x: x in v), (".startswith", lambda v, x: v.startswith(x)),
                       (".endswith", lambda v, x: v.endswith(x))):
        if field + suffix in q:
            checks.append(fn(value.lower(), q[field + suffix].lower()))
    if field + ".present" in q:
        checks.append(bool(value))
    if field + ".absent" in q:
        checks.append(not value)
    return checks


def _tag_checks(tags, q):
    checks = []
    names = {t.split(":", 1)[0]: (t.split(":", 1)[1] if ":" in t else "") for t in tags}
    if "tag" in q:
        want = q["tag"]
        checks.append(want in tags if ":" in want else want in names)
    if "tag.exact" in q:
        checks.append(q["tag.exact"] in tags)
    if "tag.present" in q:
        checks.append(q["tag.present"] in names)
    if "tag.absent" in q:
        checks.append(q["tag.absent"] not in names)
    for suffix, fn in ((".contains", lambda v, x: x in v), (".startswith", lambda v, x: v.startswith(x)),
                       (".endswith", lambda v, x: v.endswith(x))):
        if "tag" + suffix in q:
            n, _sep, x = q["tag" + suffix].partition(":")
            checks.append(n in names and fn(names[n], x))
    return checks


@route("GET", "/zones/{zone_id}/dns_records")
def list_dns(st, r):
    q = r.query
    zone = st.zone(r.params["zone_id"])
    if "name" in q:
        q = dict(q, name=st._fqdn(zone, q["name"]))
    out = []
    match_any = q.get("match") == "any"
    for rec in st.dns_list(zone["id"]):
        checks = []
        if "type" in q:
            checks.append(rec["type"] == q["type"].upper())
        if "proxied" in q:
            checks.append(rec["proxied"] == (q["proxied"].lower() == "true"))
        checks += _match_str(rec["name"], q, "name")
        checks += _match_str(rec["content"], q, "content")
        checks += _match_str(rec.get("comment"), q, "comment")
        tag_checks = _tag_checks(rec["tags"], q)
        if tag_checks:
            checks.append(any(tag_checks) if q.get("tag_match") == "any" else all(tag_checks))
        if "search" in q:
            s = q["search"].lower()
            checks.append(s in rec["name"] or s in rec["content"].lower() or s in (rec.get("comment") or "").lower())
        if not checks or (any(checks) if match_any else all(checks)):
            out.append(rec)
    key = q.get("order", "type")
    out.sort(key=lambda x: (str(x.get(key)), x["name"], x["content"]))
    if q.get("direction") == "desc":
        out.reverse()
    return paginate(out, q, default=100, maximum=5000000)


@route("POST", "/zones/{zone_id}/dns_records")
def create_dns(st, r):
    return st.dns_create(r.params["zone_id"], _json_obj(r))


@route("GET", "/zones/{zone_id}/dns_records/{dns_record_id}")
def get_dns(st, r):
    return st.dns_get(r.params["zone_id"], r.params["dns_record_id"])


@route("PUT", "/zones/{zone_id}/dns_records/{dns_record_id}")
def put_dns(st, r):
    return st.dns_update(r.params["zone_id"], r.params["dns_record_id"], _json_obj(r), merge=False)


@route("PATCH", "/zones/{zone_id}/dns_records/{dns_record_id}")
def patch_dns(st, r):
    return st.dns_update(r.params["zone_id"], r.params["dns_record_id"], _json_obj(r), merge=True)


@route("DELETE", "/zones/{zone_id}/dns_records/{dns_record_id}")
def delete_dns(st, r):
    return st.dns_delete(r.params["zone_id"], r.params["dns_record_id"])


@route("POST", "/zones/{zone_id}/dns_records/batch")
def batch_dns(st, r):
    return st.dns_batch(r.params["zone_id"], _json_obj(r))


def _json_obj(r):
    if not isinstance(r.body, dict):
        raise ApiError(400, 9207, "Request body is invalid: expected a JSON object.")
    return r.body


# ---------------------------------------------------------------------------- workers
@route("PUT", "/accounts/{account_id}/workers/scripts/{script_name}")
def put_script(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    metadata, files = None, []
    for name, filename, ctype, data in r.multipart():
        if name == "metadata" and not filename:
            try:
                metadata = json.loads(data)
            except ValueError:
                raise ApiError(400, 10021, "metadata part is not valid JSON") from None
        else:
            files.append((filename or name, ctype, data))
    if not isinstance(metadata, dict):
        raise ApiError(400, 10021, "Missing metadata part")
    s = st.put_script(aid, r.params["script_name"], metadata, files)
    return st.script_public(s)


@route("GET", "/accounts/{account_id}/workers/scripts")
def list_scripts(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    return [st.script_public(s) for (a, _n), s in sorted(st.workers.items()) if a == aid]


def _modules_multipart(s):
    """All of a script's modules as multipart/form-data: (body, content type).

    One part per module, named after it (name and filename), with the module's own content type,
    the way the real API and wrangler's download of a multi-module Worker look.
    """
    boundary = "----emulator" + new_id()
    chunks = []
    for f in s["files"]:
        chunks.append((f"--{boundary}\r\nContent-Disposition: form-data; name=\"{f['name']}\"; "
                       f"filename=\"{f['name']}\"\r\nContent-Type: {f['content_type']}\r\n\r\n").encode()
                      + f["data"] + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@route("GET", "/accounts/{account_id}/workers/scripts/{script_name}")
def download_script(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    body, ctype = _modules_multipart(s)
    return Reply(raw=body, content_type=ctype)


@route("GET", "/accounts/{account_id}/workers/scripts/{script_name}/content/v2")
def script_content(st, r):
    """A single-module Worker answers the bare module; several modules answer multipart/form-data
    with one part per module. Both carry ``cf-entrypoint`` naming the main module."""
    s = st.script(r.params["account_id"], r.params["script_name"])
    headers = {"cf-entrypoint": s["main_module"]}
    if len(s["files"]) > 1:
        body, ctype = _modules_multipart(s)
        return Reply(raw=body, content_type=ctype, headers=headers)
    main = next(f for f in s["files"] if f["name"] == s["main_module"])
    return Reply(raw=main["data"], content_type=main["content_type"], headers=headers)


@route("DELETE", "/accounts/{account_id}/workers/scripts/{script_name}")
def delete_script(st, r):
    st.delete_script(r.params["account_id"], r.params["script_name"])
    return None


def _settings(st, s):
    return {
        "bindings": [_redact(b) for b in s["bindings"]],
        "compatibility_date": s["compatibility_date"], "compatibility_flags": s["compatibility_flags"],
        "logpush": s["logpush"], "placement": {}, "tags": s["tags"], "tail_consumers": [],
        "usage_model": s["usage_model"], "limits": {"cpu_ms": 50},
        "observability": {"enabled": False},
    }


@route("GET", "/accounts/{account_id}/workers/scripts/{script_name}/settings")
def script_settings(st, r):
    return _settings(st, st.script(r.params["account_id"], r.params["script_name"]))


@route("PATCH", "/accounts/{account_id}/workers/scripts/{script_name}/settings")
def patch_script_settings(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    body = None
    for name, _fn, _ct, data in r.multipart():
        if name == "settings":
            body = json.loads(data)
    if not isinstance(body, dict):
        raise ApiError(400, 10021, "Missing settings part")
    with st.lock:
        if "bindings" in body:
            keep = {b["name"]: b for b in s["bindings"] if b.get("type") in ("secret_text", "secret_key")}
            new = []
            for b in body["bindings"]:
                # A secret binding sent back without text (as listings show it) keeps its value.
                if b.get("type") == "secret_text" and "text" not in b and b.get("name") in keep:
                    b = keep[b["name"]]
                new.append(b)
            s["bindings"] = new
        for k in ("compatibility_date", "compatibility_flags", "logpush", "tags", "usage_model"):
            if k in body:
                s[k] = body[k]
        s["modified_on"] = now_iso()
    return _settings(st, s)


@route("GET", "/accounts/{account_id}/workers/scripts/{script_name}/script-settings")
def script_script_settings(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    return {"logpush": s["logpush"], "tail_consumers": None, "observability": {"enabled": False}}


@route("PUT", "/accounts/{account_id}/workers/scripts/{script_name}/secrets")
def put_secret(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    body = _json_obj(r)
    if body.get("type", "secret_text") != "secret_text" or not body.get("name") or "text" not in body:
        raise ApiError(400, 10021, "A secret needs name, text and type secret_text.")
    with st.lock:
        s["bindings"] = [b for b in s["bindings"] if b.get("name") != body["name"]]
        s["bindings"].append({"type": "secret_text", "name": body["name"], "text": body["text"]})
        s["modified_on"] = now_iso()
    return {"name": body["name"], "type": "secret_text"}


@route("GET", "/accounts/{account_id}/workers/scripts/{script_name}/secrets")
def list_secrets(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    return [{"name": b["name"], "type": b["type"]} for b in s["bindings"] if b.get("type") == "secret_text"]


def _find_secret(s, name):
    for b in s["bindings"]:
        if b.get("type") == "secret_text" and b.get("name") == name:
            return b
    raise ApiError(404, 10056, f"Secret {name!r} not found")


@route("GET", "/accounts/{account_id}/workers/scripts/{script_name}/secrets/{secret_name}")
def get_secret(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    b = _find_secret(s, unquote(r.params["secret_name"]))
    return {"name": b["name"], "type": b["type"]}


@route("DELETE", "/accounts/{account_id}/workers/scripts/{script_name}/secrets/{secret_name}")
def delete_secret(st, r):
    s = st.script(r.params["account_id"], r.params["script_name"])
    b = _find_secret(s, unquote(r.params["secret_name"]))
    with st.lock:
        s["bindings"].remove(b)
    return {}


@route("GET", "/zones/{zone_id}/workers/routes")
def list_routes(st, r):
    st.zone(r.params["zone_id"])
    return list(st.routes.get(r.params["zone_id"], {}).values())


def _route_body(st, zid, body, rid=None):
    pattern = body.get("pattern")
    zone = st.zone(zid)
    host = (pattern or "").split("/", 1)[0].lstrip("*").lstrip(".")
    if not pattern or not (host == zone["name"] or host.endswith("." + zone["name"])):
        raise ApiError(400, 10022, f"Route pattern {pattern!r} must match a hostname in zone {zone['name']}.")
    for other in st.routes.get(zid, {}).values():
        if other["pattern"] == pattern and other["id"] != rid:
            raise ApiError(409, 10020, "A route with the same pattern already exists.")
    return {"id": rid or new_id(), "pattern": pattern, "script": body.get("script")}


@route("POST", "/zones/{zone_id}/workers/routes")
def create_route(st, r):
    zid = r.params["zone_id"]
    with st.lock:
        rt = _route_body(st, zid, _json_obj(r))
        st.routes.setdefault(zid, {})[rt["id"]] = rt
    return rt


@route("GET", "/zones/{zone_id}/workers/routes/{route_id}")
def get_route(st, r):
    st.zone(r.params["zone_id"])
    rt = st.routes.get(r.params["zone_id"], {}).get(r.params["route_id"])
    if rt is None:
        raise ApiError(404, 10005, "Route not found")
    return rt


@route("PUT", "/zones/{zone_id}/workers/routes/{route_id}")
def put_route(st, r):
    get_route(st, r)
    zid = r.params["zone_id"]
    with st.lock:
        rt = _route_body(st, zid, _json_obj(r), rid=r.params["route_id"])
        st.routes[zid][rt["id"]] = rt
    return rt


@route("DELETE", "/zones/{zone_id}/workers/routes/{route_id}")
def delete_route(st, r):
    rt = get_route(st, r)
    with st.lock:
        del st.routes[r.params["zone_id"]][rt["id"]]
    return {"id": rt["id"]}


@route("GET", "/accounts/{account_id}/workers/domains")
def list_domains(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    items = list(st.domains.get(aid, {}).values())
    for field in ("hostname", "service", "zone_id", "zone_name", "environment"):
        if r.query.get(field):
            items = [d for d in items if d.get(field) == r.query[field]]
    return items


@route("PUT", "/accounts/{account_id}/workers/domains")
def put_domain(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    body = _json_obj(r)
    if (r.params["account_id"], body.get("service")) not in st.workers:
        raise ApiError(400, 100114, f"Worker {body.get('service')!r} does not exist.")
    return st.put_domain(aid, body)


@route("GET", "/accounts/{account_id}/workers/domains/{domain_id}")
def get_domain(st, r):
    d = st.domains.get(r.params["account_id"], {}).get(r.params["domain_id"])
    if d is None:
        raise ApiError(404, 100116, "Domain not found")
    return d


@route("DELETE", "/accounts/{account_id}/workers/domains/{domain_id}")
def delete_domain(st, r):
    get_domain(st, r)
    with st.lock:
        del st.domains[r.params["account_id"]][r.params["domain_id"]]
    # The schema gives the 200 as application/json; the SDK casts it to DomainDeleteResponse
    # (success, errors, messages): the standard envelope, result null. Never an empty body.
    return Reply(result=None)


# ---------------------------------------------------------------------------- KV
def _ns_public(ns):
    return {"id": ns["id"], "title": ns["title"], "supports_url_encoding": True}


@route("GET", "/accounts/{account_id}/storage/kv/namespaces")
def list_kv(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    items = [_ns_public(n) for n in st.kv.values() if n["account_id"] == aid]
    return paginate(_order(items, r.query, ("id", "title")), r.query, maximum=100, minimum=5)


@route("POST", "/accounts/{account_id}/storage/kv/namespaces")
def create_kv(st, r):
    st.account(r.params["account_id"])
    return _ns_public(st.kv_create(r.params["account_id"], _json_obj(r).get("title")))


@route("GET", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}")
def get_kv(st, r):
    return _ns_public(st.kv_ns(r.params["account_id"], r.params["namespace_id"]))


@route("PUT", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}")
def rename_kv(st, r):
    return _ns_public(st.kv_rename(r.params["account_id"], r.params["namespace_id"], _json_obj(r).get("title")))


@route("DELETE", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}")
def delete_kv(st, r):
    with st.lock:
        st.kv_ns(r.params["account_id"], r.params["namespace_id"])
        del st.kv[r.params["namespace_id"]]
    return {}


@route("GET", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/keys")
def list_keys(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    try:
        limit = int(float(r.query.get("limit", 1000)))
    except ValueError:
        limit = -1
    if not 10 <= limit <= 1000:
        raise ApiError(400, 10023, "Invalid limit: must be between 10 and 1000.")
    keys = st.kv_keys(ns, r.query.get("prefix", ""))
    start = 0
    if r.query.get("cursor"):
        # The cursor is opaque to clients; ours is the base64 of the last key returned.
        try:
            after = base64.urlsafe_b64decode(r.query["cursor"].encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, 10025, "Invalid cursor.") from None
        import bisect
        start = bisect.bisect_right(keys, after)
    chunk = keys[start:start + limit]
    more = start + limit < len(keys)
    cursor = base64.urlsafe_b64encode(chunk[-1].encode()).decode() if more and chunk else ""
    items = []
    for k in chunk:
        e = ns["_keys"][k]
        item = {"name": k}
        if e.get("expiration"):
            item["expiration"] = e["expiration"]
        if e.get("metadata") is not None:
            item["metadata"] = e["metadata"]
        items.append(item)
    return Reply(result=items, result_info={"count": len(items), "cursor": cursor})


def _key(r):
    return unquote(r.params["key_name"])


@route("PUT", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/values/{key_name}")
def put_value(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    metadata = None
    if r.content_type == "multipart/form-data":
        value = None
        for name, _fn, _ct, data in r.multipart():
            if name == "value":
                value = data
            elif name == "metadata":
                try:
                    metadata = json.loads(data) if data else None
                except ValueError:
                    raise ApiError(400, 10026, "metadata part must be valid JSON") from None
        if value is None:
            raise ApiError(400, 10021, "multipart body needs a 'value' part")
    else:
        value = r.raw
    q = r.query
    entry = st.kv_entry(_key(r), value, metadata,
                        float(q["expiration"]) if "expiration" in q else None,
                        float(q["expiration_ttl"]) if "expiration_ttl" in q else None)
    with st.lock:
        ns["_keys"][_key(r)] = entry
    return {}


@route("GET", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/values/{key_name}")
def get_value(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    e = ns["_keys"].get(_key(r))
    if e is None or not st._kv_live(e):
        raise ApiError(404, 10009, "get: 'key not found'")
    headers = {}
    if e.get("expiration"):
        headers["expiration"] = str(int(e["expiration"]))
    return Reply(raw=e["value"], content_type="application/octet-stream", headers=headers)


@route("GET", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/metadata/{key_name}")
def get_metadata(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    e = ns["_keys"].get(_key(r))
    if e is None or not st._kv_live(e):
        raise ApiError(404, 10009, "get: 'key not found'")
    return e.get("metadata")


@route("DELETE", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/values/{key_name}")
def delete_value(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    with st.lock:
        ns["_keys"].pop(_key(r), None)  # deleting a missing key succeeds on the real API
    return {}


@route("PUT", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/bulk")
def bulk_write(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    if not isinstance(r.body, list):
        raise ApiError(400, 9207, "Request body is invalid: expected an array of key-value pairs.")
    if len(r.body) > MAX_KV_BULK:
        raise ApiError(413, 10005, f"Too many pairs: at most {MAX_KV_BULK} per bulk write.")
    staged = {}
    for i, item in enumerate(r.body):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or "value" not in item:
            raise ApiError(400, 10021, f"item {i}: each pair needs a string key and a value")
        value = item["value"]
        if item.get("base64"):
            try:
                data = base64.b64decode(value, validate=True)
            except (ValueError, TypeError):
                raise ApiError(400, 10021, f"item {i}: value is not valid base64") from None
        else:
            data = value.encode("utf-8") if isinstance(value, str) else json.dumps(value).encode()
        staged[item["key"]] = st.kv_entry(item["key"], data, item.get("metadata"), item.get("expiration"),
                                          item.get("expiration_ttl"))
    with st.lock:
        ns["_keys"].update(staged)  # all pairs validated first: a bad pair writes nothing
    return {"successful_key_count": len(staged), "unsuccessful_keys": []}


def _bulk_delete(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    if not isinstance(r.body, list) or not all(isinstance(k, str) for k in r.body):
        raise ApiError(400, 9207, "Request body is invalid: expected an array of key names.")
    if len(r.body) > MAX_KV_BULK:
        raise ApiError(413, 10005, f"Too many keys: at most {MAX_KV_BULK} per bulk delete.")
    with st.lock:
        for k in r.body:
            ns["_keys"].pop(k, None)
    return {"successful_key_count": len(r.body), "unsuccessful_keys": []}


@route("POST", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/bulk/delete")
def bulk_delete(st, r):
    return _bulk_delete(st, r)


@route("DELETE", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/bulk")
def bulk_delete_old(st, r):
    return _bulk_delete(st, r)


@route("POST", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/bulk/get")
def bulk_get(st, r):
    ns = st.kv_ns(r.params["account_id"], r.params["namespace_id"])
    body = _json_obj(r)
    keys = body.get("keys") or []
    if len(keys) > 100:
        raise ApiError(400, 10021, "At most 100 keys per bulk get.")
    as_json = body.get("type") == "json"
    values = {}
    for k in keys:
        e = ns["_keys"].get(k)
        if e is None or not st._kv_live(e):
            values[k] = None
            continue
        try:
            v = json.loads(e["value"]) if as_json else e["value"].decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, 10021, f"Value of key {k!r} cannot be returned as {body.get('type', 'text')}") from None
        if body.get("withMetadata"):
            v = {"value": v, "metadata": e.get("metadata")}
            if e.get("expiration"):
                v["expiration"] = e["expiration"]
        values[k] = v
    return {"values": values}


# ---------------------------------------------------------------------------- tunnels
@route("GET", "/accounts/{account_id}/cfd_tunnel")
def list_tunnels(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    q = r.query
    deleted = q.get("is_deleted", "false").lower() == "true"
    items = []
    for t in st.tunnels.values():
        if t["account_tag"] != aid or bool(t["deleted_at"]) != deleted:
            continue
        pub = st.tunnel_public(t)
        if q.get("name") and pub["name"] != q["name"]:
            continue
        if q.get("uuid") and pub["id"] != q["uuid"]:
            continue
        if q.get("status") and pub["status"] != q["status"]:
            continue
        if q.get("include_prefix") and not pub["name"].startswith(q["include_prefix"]):
            continue
        if q.get("exclude_prefix") and pub["name"].startswith(q["exclude_prefix"]):
            continue
        items.append(pub)
    items.sort(key=lambda t: t["created_at"])
    return paginate(items, q, default=20, maximum=1000)


@route("POST", "/accounts/{account_id}/cfd_tunnel")
def create_tunnel(st, r):
    st.account(r.params["account_id"])
    return st.tunnel_public(st.tunnel_create(r.params["account_id"], _json_obj(r)))


@route("GET", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}")
def get_tunnel(st, r):
    return st.tunnel_public(st.tunnel(r.params["account_id"], r.params["tunnel_id"]))


@route("PATCH", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}")
def edit_tunnel(st, r):
    return st.tunnel_public(st.tunnel_edit(r.params["account_id"], r.params["tunnel_id"], _json_obj(r)))


@route("DELETE", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}")
def delete_tunnel(st, r):
    return st.tunnel_public(st.tunnel_delete(r.params["account_id"], r.params["tunnel_id"]))


def _config_result(t, cfg):
    return {"account_id": t["account_tag"], "tunnel_id": t["id"], "version": cfg["version"],
            "config": cfg["config"], "source": "cloudflare", "created_at": cfg["created_at"]}


@route("GET", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/configurations")
def get_tunnel_config(st, r):
    t = st.tunnel(r.params["account_id"], r.params["tunnel_id"])
    cfg = t["_config"] or {"config": {}, "version": 0, "created_at": t["created_at"]}
    return _config_result(t, cfg)


@route("PUT", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/configurations")
def put_tunnel_config(st, r):
    body = _json_obj(r)
    t = st.tunnel(r.params["account_id"], r.params["tunnel_id"])
    config = st.tunnel_put_config(r.params["account_id"], r.params["tunnel_id"], body.get("config") or {})
    return _config_result(t, config)


@route("GET", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/token")
def tunnel_token(st, r):
    t = st.tunnel(r.params["account_id"], r.params["tunnel_id"])
    return st.tunnel_token(t)


@route("GET", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/connections")
def tunnel_connections(st, r):
    t = st.tunnel(r.params["account_id"], r.params["tunnel_id"])
    by_client = {}
    for c in t["_connections"]:
        client = by_client.setdefault(c["client_id"], {
            "id": c["client_id"], "arch": "linux_amd64", "config_version": (t["_config"] or {}).get("version", 0),
            "conns": [], "features": ["ha-origin", "serialized_headers"], "run_at": c["opened_at"],
            "version": c["client_version"]})
        client["conns"].append({k: c[k] for k in ("colo_name", "id", "is_pending_reconnect", "opened_at",
                                                  "origin_ip", "uuid", "client_id", "client_version")})
    return list(by_client.values())


@route("DELETE", "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/connections")
def clean_connections(st, r):
    t = st.tunnel(r.params["account_id"], r.params["tunnel_id"])
    with st.lock:
        client = r.query.get("client_id")
        if t["_connections"] and not t["conns_active_at"]:
            t["conns_active_at"] = min(c["opened_at"] for c in t["_connections"])
        t["_connections"] = [c for c in t["_connections"] if client and c["client_id"] != client]
        if not t["_connections"]:
            t["conns_inactive_at"] = now_iso()
    return {}


# ---------------------------------------------------------------------------- D1 / R2
@route("GET", "/accounts/{account_id}/d1/database")
def list_d1(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    items = [{k: v for k, v in d.items() if k in ("uuid", "name", "created_at", "version")}
             for d in st.d1.values() if d["account_id"] == aid
             and (not r.query.get("name") or r.query["name"] in d["name"])]
    return paginate(items, r.query, default=1000, maximum=10000, minimum=10)


@route("POST", "/accounts/{account_id}/d1/database")
def create_d1(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    body = _json_obj(r)
    with st.lock:
        if any(d["name"] == body.get("name") and d["account_id"] == aid for d in st.d1.values()):
            raise ApiError(400, 7502, "A database with that name already exists")
        import uuid as _uuid
        u = str(_uuid.uuid4())
        st.d1[u] = {"uuid": u, "name": body["name"], "account_id": aid, "created_at": now_iso(),
                    "version": "production", "num_tables": 0, "file_size": 0}
        return _d1_public(st.d1[u])


def _d1_public(d):
    return {k: v for k, v in d.items() if k != "account_id"}


def _d1(st, r):
    d = st.d1.get(r.params["database_id"])
    if d is None or d["account_id"] != r.params["account_id"]:
        raise ApiError(404, 7404, "The database could not be found")
    return d


@route("GET", "/accounts/{account_id}/d1/database/{database_id}")
def get_d1(st, r):
    return _d1_public(_d1(st, r))


@route("DELETE", "/accounts/{account_id}/d1/database/{database_id}")
def delete_d1(st, r):
    d = _d1(st, r)
    with st.lock:
        del st.d1[d["uuid"]]
    return None


R2_CURSOR_PREFIX = "1-"


def _r2_cursor(last_name):
    """An opaque continuation token, shaped like the real one: "1-" + base64(urlencoded JSON)."""
    doc = quote(json.dumps({"v": 1, "startAfter": last_name}, separators=(",", ":")), safe="")
    return R2_CURSOR_PREFIX + base64.b64encode(doc.encode()).decode()


def _r2_uncursor(cursor):
    try:
        if not cursor.startswith(R2_CURSOR_PREFIX):
            raise ValueError(cursor)
        doc = json.loads(unquote(base64.b64decode(cursor[len(R2_CURSOR_PREFIX):], validate=True).decode()))
        if not isinstance(doc, dict) or not isinstance(doc.get("startAfter"), str):
            raise ValueError(cursor)
        return doc["startAfter"]
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, 10039, "The pagination cursor is not valid.") from None


@route("GET", "/accounts/{account_id}/r2/buckets")
def list_r2(st, r):
    """Cursor paging (r2-list-buckets): per_page 1..1000 (default 20), cursor, start_after,
    name_contains, order=name, direction; result_info {cursor, per_page}, cursor only when more remain."""
    aid = r.params["account_id"]
    st.account(aid)
    q = r.query
    try:
        per_page = float(q.get("per_page", 20))
    except ValueError:
        per_page = 0
    if per_page != int(per_page) or not 1 <= per_page <= 1000:
        raise ApiError(400, 10040, "per_page must be a whole number between 1 and 1000.")
    per_page = int(per_page)
    if q.get("order", "name") != "name" or q.get("direction", "asc") not in ("asc", "desc"):
        raise ApiError(400, 10040, "order must be name and direction asc or desc.")
    desc = q.get("direction") == "desc"
    names = sorted((n for (a, n) in st.r2 if a == aid
                    and (not q.get("name_contains") or q["name_contains"] in n)), reverse=desc)
    after = _r2_uncursor(q["cursor"]) if q.get("cursor") else q.get("start_after")
    if after:
        names = [n for n in names if (n < after if desc else n > after)]
    chunk = names[:per_page]
    info = {"per_page": per_page}
    if len(names) > per_page:
        info["cursor"] = _r2_cursor(chunk[-1])
    return Reply(result={"buckets": [st.r2[(aid, n)] for n in chunk]}, result_info=info)


@route("POST", "/accounts/{account_id}/r2/buckets")
def create_r2(st, r):
    aid = r.params["account_id"]
    st.account(aid)
    body = _json_obj(r)
    name = body.get("name") or ""
    if not re.match(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", name):
        raise ApiError(400, 10005, "The specified bucket name is not valid.")
    with st.lock:
        if (aid, name) in st.r2:
            raise ApiError(409, 10004, "The bucket you tried to create already exists, and you own it.")
        st.r2[(aid, name)] = {"name": name, "creation_date": now_iso(),
                              "location": body.get("locationHint", "enam").lower(),
                              "storage_class": body.get("storageClass", "Standard")}
        return st.r2[(aid, name)]


@route("GET", "/accounts/{account_id}/r2/buckets/{bucket_name}")
def get_r2(st, r):
    b = st.r2.get((r.params["account_id"], r.params["bucket_name"]))
    if b is None:
        raise ApiError(404, 10006, "The specified bucket does not exist.")
    return b


@route("DELETE", "/accounts/{account_id}/r2/buckets/{bucket_name}")
def delete_r2(st, r):
    get_r2(st, r)
    with st.lock:
        del st.r2[(r.params["account_id"], r.params["bucket_name"])]
    return {}


# ============================================================================ server
class Emulator:
    """Owns state, contract, faults, recordings and the HTTP server."""

    def __init__(self, tokens, seed=None, state_file=None, contract=None):
        self.tokens = [t for t in tokens if t]
        if not self.tokens:
            raise ValueError("at least one API token is required")
        self.state_file = state_file
        initial = seed
        if state_file and os.path.exists(state_file):
            with open(state_file, encoding="utf-8") as fh:
                initial = json.load(fh)
        self.seed_doc = seed
        self.state = State(initial)
        self.contract = contract or Contract()
        self.lock = threading.Lock()
        self.requests = []
        self.violations = []
        self.faults = []
        self.persist_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def auth_ok(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        given = header[7:].strip().encode()
        return any(hmac.compare_digest(given, t.encode()) for t in self.tokens)

    def take_fault(self, method, path):
        with self.lock:
            for rule in self.faults:
                if rule.get("count", 1) <= 0:
                    continue
                if rule.get("method") and rule["method"].upper() != method:
                    continue
                if rule.get("path_regex") and not re.search(rule["path_regex"], path):
                    continue
                rule["count"] = rule.get("count", 1) - 1
                rule["hits"] = rule.get("hits", 0) + 1
                return dict(rule)
        return None

    def persist(self):
        if not self.state_file:
            return
        with self.persist_lock:
            doc = self.state.dump(include_secrets=True)
            d = os.path.dirname(os.path.abspath(self.state_file))
            fd, tmp = tempfile.mkstemp(prefix=".cf-emulator-", dir=d)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.state_file)  # atomic: a crash never leaves half a file

    def serve(self, host, port):
        if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
            raise ValueError(f"refusing to listen on non-loopback address {host!r}")
        emulator = self

        class Handler(_Handler):
            emu = emulator

        server_cls = ThreadingHTTPServer
        if ":" in host:
            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            server_cls = V6
        httpd = server_cls((host, port), Handler)
        httpd.daemon_threads = True
        return httpd

    def routes(self):
        return [(m, t) for m, t, _rx, _fn in ROUTES]


def _envelope(success, result=None, errors=None, result_info=None):
    body = {"success": success, "errors": errors or [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment: with Nagle on and an unbuffered wfile,
    # keep-alive clients stall ~40 ms per request on delayed ACKs.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server_version = "cloudflare-emulator"
    emu: Emulator

    def log_message(self, fmt, *args):  # quiet: requests are recorded, not logged
        pass

    def _send(self, status, body, content_type="application/json", headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("cf-ray", new_id()[:16] + "-EMU")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drop(self):
        """Close the socket without a response: the client sees a connection error."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _dispatch(self):
        method = self.command if self.command != "HEAD" else "GET"
        url = urlsplit(self.path)
        path = url.path
        multi = parse_qs(url.query, keep_blank_values=True)
        query = {k: v[0] for k, v in multi.items()}
        raw = self._read_body()
        if path.startswith(CONTROL):
            return self._control(method, path[len(CONTROL):], query, raw)
        started = time.monotonic()
        api_path = path[len(PREFIX):] if path.startswith(PREFIX) else path
        rec = {"method": method, "path": api_path, "query": query, "status": None, "ms": 0.0}
        try:
            status, body, ctype, headers, dropped = self._api(method, path, api_path, query, multi, raw)
        except Exception as exc:  # an emulator bug must not kill the connection silently
            status, ctype, headers, dropped = 500, "application/json", {}, False
            body = _envelope(False, errors=[{"code": 10000, "message": f"emulator error: {exc!r}"}])
        rec["status"] = 0 if dropped else status
        rec["ms"] = round((time.monotonic() - started) * 1000, 2)
        if dropped:
            rec["dropped"] = True
        with self.emu.lock:
            self.emu.requests.append(rec)
        if dropped:
            return self._drop()
        self._send(status, body, ctype, headers)

    def _api(self, method, path, api_path, query, multi, raw):
        emu = self.emu
        if not path.startswith(PREFIX + "/"):
            return 404, _envelope(False, errors=[{"code": 7000, "message": "No route for that URI"}]), \
                "application/json", {}, False
        if not emu.auth_ok(self.headers.get("Authorization")):
            return 403, _envelope(False, errors=[{"code": 10000, "message": "Authentication error"}]), \
                "application/json", {}, False
        fault = emu.take_fault(method, path)
        if fault and fault.get("action") == "latency":
            time.sleep(float(fault.get("ms", 0)) / 1000)
            fault = None
        if fault and fault.get("action") == "status":
            st = int(fault.get("status", 500))
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            default_message = ("Rate limited. Please wait and consider throttling your request speed"
                               if st == 429 else "Internal server error (injected)")
            errors = fault.get("errors") or [{"code": 10429 if st == 429 else 10000 + (st % 1000),
                                             "message": fault.get("message") or default_message}]
            return st, _envelope(False, errors=errors), "application/json", headers, False
        if fault and fault.get("action") == "drop" and fault.get("when", "before") == "before":
            return 0, None, None, None, True

        status, body, ctype, headers = self._handle(method, api_path, query, multi, raw)
        if fault and fault.get("action") == "drop":  # when == "after": change applied, reply lost
            return status, body, ctype, headers, True
        return status, body, ctype, headers, False

    def _handle(self, method, api_path, query, multi, raw):
        emu = self.emu
        allowed = False
        for m, template, rx, fn in ROUTES:
            mt = rx.match(api_path)
            if not mt:
                continue
            allowed = True
            if m == method:
                break
        else:
            if allowed:
                return 405, _envelope(False, errors=[{"code": 10405, "message": "Method not allowed"}]), \
                    "application/json", {}
            return 404, _envelope(False, errors=[{"code": 7003, "message": "Could not route to %s, perhaps your "
                                                  "object identifier is invalid?" % api_path}]), "application/json", {}
        params = mt.groupdict()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body = None
        # KV values are opaque bytes even when they look like JSON.
        if raw and ctype in ("application/json", "") and "/values/" not in api_path:
            try:
                body = json.loads(raw)
                ctype = "application/json"
            except ValueError:
                if ctype == "application/json":
                    errors = [{"code": 6007, "message": "Malformed JSON in request body"}]
                    return 400, _envelope(False, errors=errors), "application/json", {}
        problems = emu.contract.check_request(method, template, query, body, ctype, params)
        if problems:
            with emu.lock:
                emu.violations.append({"kind": "request", "method": method, "path": api_path,
                                       "template": template, "source": emu.contract.source(method, template),
                                       "problems": problems})
            errors = [{"code": 9207 if i == 0 else 1004, "message": ("Request body is invalid: " if i == 0 else "")
                       + p} for i, p in enumerate(problems)]
            return 400, _envelope(False, errors=errors), "application/json", {}
        req = Request(method, params, query, multi, body, raw, ctype, self.headers)
        try:
            out = fn(emu.state, req)
        except ApiError as exc:
            return exc.status, _envelope(False, errors=exc.errors), "application/json", {}
        if isinstance(out, Reply) and out.raw is not None:
            status, payload, rctype, headers = out.status, out.raw, out.content_type, out.headers
        elif isinstance(out, Reply):
            status, payload, rctype, headers = out.status, _envelope(True, out.result, result_info=out.result_info), \
                "application/json", out.headers
        else:
            status, payload, rctype, headers = 200, _envelope(True, out), "application/json", {}
        if isinstance(payload, dict):
            # Round-trip through JSON so the check sees exactly what the client will.
            payload = json.loads(json.dumps(payload))
            problems = emu.contract.check_response(method, template, status, payload)
            if problems:
                with emu.lock:
                    emu.violations.append({"kind": "response", "method": method, "path": api_path,
                                           "template": template, "source": emu.contract.source(method, template),
                                           "problems": problems})
        if method != "GET" and 200 <= status < 300:
            emu.persist()
        return status, payload, rctype, headers

    # ------------------------------------------------------------------ control API
    def _control(self, method, sub, query, raw):
        emu = self.emu
        if not emu.auth_ok(self.headers.get("Authorization")):
            return self._send(403, _envelope(False, errors=[{"code": 10000, "message": "Authentication error"}]))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._send(400, _envelope(False, errors=[{"code": 6007, "message": "Malformed JSON"}]))
        ok = _envelope(True)
        try:
            if sub == "/requests" and method == "GET":
                with emu.lock:
                    return self._send(200, _envelope(True, list(emu.requests)))
            if sub == "/requests" and method == "DELETE":
                with emu.lock:
                    emu.requests.clear()
                return self._send(200, ok)
            if sub == "/violations" and method == "GET":
                with emu.lock:
                    return self._send(200, _envelope(True, list(emu.violations)))
            if sub == "/violations" and method == "DELETE":
                with emu.lock:
                    emu.violations.clear()
                return self._send(200, ok)
            if sub == "/faults" and method == "POST":
                rules = body if isinstance(body, list) else [body]
                for rule in rules:
                    if not isinstance(rule, dict) or rule.get("action") not in ("status", "drop", "latency"):
                        raise ValueError("each fault needs action status|drop|latency")
                    if rule.get("path_regex"):
                        re.compile(rule["path_regex"])
                    rule.setdefault("count", 1)
                with emu.lock:
                    emu.faults.extend(rules)
                return self._send(200, _envelope(True, emu.faults))
            if sub == "/faults" and method == "GET":
                return self._send(200, _envelope(True, emu.faults))
            if sub == "/faults" and method == "DELETE":
                with emu.lock:
                    emu.faults.clear()
                return self._send(200, ok)
            if sub == "/state" and method == "GET":
                secrets = query.get("secrets") in ("1", "true")
                return self._send(200, _envelope(True, emu.state.dump(include_secrets=secrets)))
            if sub == "/state" and method == "PUT":
                emu.state.load(body or {})
                emu.persist()
                return self._send(200, ok)
            if sub == "/reset" and method == "POST":
                emu.state.load(emu.seed_doc)
                with emu.lock:
                    emu.requests.clear()
                    emu.violations.clear()
                    emu.faults.clear()
                emu.persist()
                return self._send(200, ok)
            if sub == "/routes" and method == "GET":
                return self._send(200, _envelope(True, [{"method": m, "path": t} for m, t in emu.routes()]))
        except (ValueError, KeyError, TypeError, re.error) as exc:
            return self._send(400, _envelope(False, errors=[{"code": 1004, "message": str(exc)}]))
        return self._send(404, _envelope(False, errors=[{"code": 7000, "message": "No such control endpoint"}]))
