"""In-memory, lock-protected model of the Cloudflare resources the emulator serves.

Everything here is plain dicts so the state can be dumped to JSON, persisted and
re-seeded.  Errors are raised as :class:`ApiError` carrying the HTTP status and
the Cloudflare error code the real API would answer with.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import hashlib
import ipaddress
import json
import re
import threading
import time
import uuid

DEFAULT_SEED = {
    "accounts": [{"id": "0b1ac6d2c3f84e8f9a7d5e1c2b3a4f50", "name": "BlackRoad"}],
    "zones": [
        {"id": "5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60", "name": "blackroad.io", "account": "BlackRoad"},
        {"id": "7a6b5c4d3e2f4a1b8c9d0e1f2a3b4c5d", "name": "lucidia.earth", "account": "BlackRoad"},
    ],
}

PROXIABLE_TYPES = {"A", "AAAA", "CNAME"}
RECORD_TYPES = {
    "A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR",
    "NS", "OPENPGPKEY", "PTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI",
}
HOSTNAME_RE = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?$",
                         re.IGNORECASE)
MAX_BATCH_CHANGES = 200
MAX_KV_BULK = 10000


class ApiError(Exception):
    """An error the API answers with: HTTP status plus Cloudflare error code(s)."""

    def __init__(self, status, code, message, extra_errors=None):
        super().__init__(message)
        self.status = status
        self.errors = [{"code": code, "message": message}] + list(extra_errors or [])


def now_iso():
    """ISO-8601 UTC with microseconds and a Z, the way Cloudflare writes timestamps."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id():
    return uuid.uuid4().hex


def _not_found(what, code=7003):
    return ApiError(404, code, f"{what} not found")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class State:
    """All emulated resources.  Public methods take the lock; callers never do."""

    def __init__(self, seed=None):
        self.lock = threading.RLock()
        self.load(seed if seed is not None else DEFAULT_SEED)

    # ------------------------------------------------------------------ seed/dump
    def _clear(self):
        self.accounts = {}          # id -> account
        self.zones = {}             # id -> zone
        self.dns = {}               # zone_id -> {record_id: record}
        self.workers = {}           # (account_id, name) -> script
        self.routes = {}            # zone_id -> {route_id: route}
        self.domains = {}           # account_id -> {domain_id: domain}
        self.kv = {}                # namespace_id -> namespace (with "_keys")
        self.tunnels = {}           # tunnel_id -> tunnel (with "_secret", "_config")
        self.d1 = {}                # uuid -> database
        self.r2 = {}                # (account_id, name) -> bucket

    def load(self, doc):
        """Replace the whole state from a seed (or a dump, which is a superset)."""
        with self.lock:
            self._clear()
            doc = doc or {}
            for acc in doc.get("accounts") or []:
                aid = acc.get("id") or new_id()
                self.accounts[aid] = {
                    "id": aid, "name": acc["name"], "type": acc.get("type", "standard"),
                    "settings": acc.get("settings") or {"enforce_twofactor": False,
                                                        "use_account_custom_ns_by_default": False},
                    "created_on": acc.get("created_on") or now_iso(),
                }
            default_acc = next(iter(self.accounts), None)
            for z in doc.get("zones") or []:
                self._seed_zone(z, default_acc)
            for rec in doc.get("dns_records") or []:
                rec = dict(rec)
                zone = self._zone_ref(rec.pop("zone", None) or rec.pop("zone_id", None) or rec.get("zone_name"))
                body = {k: v for k, v in rec.items() if k not in ("zone_name",)}
                r = self._build_record(zone, body, rec.get("id"))
                for k in ("created_on", "modified_on"):
                    if rec.get(k):
                        r[k] = rec[k]
                self._check_conflicts(self.dns[zone["id"]], r)
                self.dns[zone["id"]][r["id"]] = r
            for w in doc.get("workers") or []:
                self._seed_worker(w, default_acc)
            for r in doc.get("routes") or []:
                zone = self._zone_ref(r.get("zone") or r.get("zone_id"))
                rid = r.get("id") or new_id()
                self.routes.setdefault(zone["id"], {})[rid] = {"id": rid, "pattern": r["pattern"],
                                                               "script": r.get("script")}
            for d in doc.get("worker_domains") or []:
                aid = d.get("account_id") or default_acc
                self.put_domain(aid, dict(d), domain_id=d.get("id"))
            for ns in doc.get("kv_namespaces") or []:
                self._seed_kv(ns, default_acc)
            for db in doc.get("d1_databases") or []:
                u = db.get("uuid") or str(uuid.uuid4())
                self.d1[u] = {
                    "uuid": u, "name": db["name"], "account_id": db.get("account_id") or default_acc,
                    "created_at": db.get("created_at") or now_iso(), "version": db.get("version", "production"),
                    "num_tables": db.get("num_tables", 0), "file_size": db.get("file_size", 0),
                }
            for b in doc.get("r2_buckets") or []:
                aid = b.get("account_id") or default_acc
                self.r2[(aid, b["name"])] = {
                    "name": b["name"], "creation_date": b.get("creation_date") or now_iso(),
                    "location": b.get("location", "enam"), "storage_class": b.get("storage_class", "Standard"),
                }
            for t in doc.get("tunnels") or []:
                self._seed_tunnel(t, default_acc)

    def _seed_zone(self, z, default_acc):
        acc_ref = z.get("account_id") or z.get("account") or default_acc
        if isinstance(acc_ref, dict):
            acc_ref = acc_ref.get("id") or acc_ref.get("name")
        aid = self._account_ref(acc_ref)
        zid = z.get("id") or new_id()
        ts = z.get("created_on") or now_iso()
        self.zones[zid] = {
            "id": zid, "name": z["name"].lower().rstrip("."), "status": z.get("status", "active"),
            "paused": False, "type": z.get("type", "full"), "development_mode": 0,
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
            "original_name_servers": [], "original_registrar": None, "original_dnshost": None,
            "created_on": ts, "modified_on": ts, "activated_on": ts,
            "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3,
                     "phishing_detected": False},
            "owner": {"id": aid, "type": "organization", "name": self.accounts[aid]["name"]},
            "account": {"id": aid, "name": self.accounts[aid]["name"]},
            "permissions": ["#zone:read", "#zone:edit", "#dns_records:edit"],
            "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0,
                     "currency": "USD", "frequency": "", "is_subscribed": True, "can_subscribe": False,
                     "legacy_id": "free", "legacy_discount": False, "externally_managed": False},
            "vanity_name_servers": [],
        }
        self.dns.setdefault(zid, {})
        self.routes.setdefault(zid, {})

    def _seed_worker(self, w, default_acc):
        aid = w.get("account_id") or default_acc
        files = []
        for fname, content in (w.get("files") or {}).items():
            if isinstance(content, dict):
                if "content_b64" in content:
                    data = base64.b64decode(content["content_b64"])
                else:
                    data = content["content"].encode()
                ctype = content.get("content_type")
            else:
                data = content.encode() if isinstance(content, str) else bytes(content)
                ctype = None
            if not ctype:
                ctype = ("application/javascript+module" if fname.endswith((".js", ".mjs"))
                         else "application/octet-stream")
            files.append((fname, ctype, data))
        main = w.get("main_module") or (files[0][0] if files else "index.js")
        metadata = {
            "main_module": main, "bindings": w.get("bindings") or [],
            "compatibility_date": w.get("compatibility_date", "2024-09-23"),
            "compatibility_flags": w.get("compatibility_flags") or [],
        }
        self.put_script(aid, w["name"], metadata, files)
        script = self.workers[(aid, w["name"])]
        for k in ("created_on", "modified_on"):
            if w.get(k):
                script[k] = w[k]

    def _seed_kv(self, ns, default_acc):
        aid = ns.get("account_id") or default_acc
        nid = ns.get("id") or new_id()
        self.kv[nid] = {"id": nid, "title": ns["title"], "account_id": aid, "supports_url_encoding": True, "_keys": {}}
        for key, val in (ns.get("entries") or {}).items():
            if isinstance(val, dict) and ("value" in val or "value_b64" in val):
                data = base64.b64decode(val["value_b64"]) if "value_b64" in val else _to_bytes(val["value"])
                self.kv[nid]["_keys"][key] = {"value": data, "metadata": val.get("metadata"),
                                              "expiration": val.get("expiration")}
            else:
                self.kv[nid]["_keys"][key] = {"value": _to_bytes(val), "metadata": None, "expiration": None}

    def _seed_tunnel(self, t, default_acc):
        aid = t.get("account_id") or t.get("account_tag") or default_acc
        tid = t.get("id") or str(uuid.uuid4())
        secret = t.get("tunnel_secret") or _b64(uuid.uuid4().bytes + uuid.uuid4().bytes)
        tun = self._new_tunnel(aid, tid, t["name"], secret, t.get("config_src", "cloudflare"))
        for k in ("created_at", "deleted_at", "conns_active_at", "conns_inactive_at"):
            if t.get(k):
                tun[k] = t[k]
        tun["_connections"] = [self._norm_conn(c) for c in t.get("connections") or []]
        if t.get("status"):
            tun["_status"] = t["status"]
        if t.get("config") is not None:
            tun["_config"] = {"config": t["config"], "version": t.get("config_version", 1), "created_at": now_iso()}
        self.tunnels[tid] = tun

    def dump(self, include_secrets=True):
        """A JSON-able document that :meth:`load` accepts back (round trip)."""
        with self.lock:
            out = {"accounts": [], "zones": [], "dns_records": [], "workers": [], "routes": [],
                   "worker_domains": [], "kv_namespaces": [], "d1_databases": [], "r2_buckets": [],
                   "tunnels": []}
            out["accounts"] = [copy.deepcopy(a) for a in self.accounts.values()]
            for z in self.zones.values():
                out["zones"].append({"id": z["id"], "name": z["name"], "account_id": z["account"]["id"],
                                     "status": z["status"], "created_on": z["created_on"]})
            for zid, recs in self.dns.items():
                for r in recs.values():
                    d = copy.deepcopy(r)
                    d["zone"] = d.pop("zone_id")
                    out["dns_records"].append(d)
            for (aid, name), s in self.workers.items():
                bindings = copy.deepcopy(s["bindings"])
                if not include_secrets:
                    bindings = [_redact(b) for b in bindings]
                out["workers"].append({
                    "account_id": aid, "name": name, "main_module": s["main_module"],
                    "files": {f["name"]: {"content_b64": _b64(f["data"]), "content_type": f["content_type"],
                                          "sha256": f["sha256"]} for f in s["files"]},
                    "bindings": bindings, "compatibility_date": s["compatibility_date"],
                    "compatibility_flags": s["compatibility_flags"], "etag": s["etag"],
                    "created_on": s["created_on"], "modified_on": s["modified_on"]})
            for zid, routes in self.routes.items():
                for r in routes.values():
                    out["routes"].append(dict(r, zone_id=zid))
            for aid, doms in self.domains.items():
                for d in doms.values():
                    out["worker_domains"].append(dict(d, account_id=aid))
            for ns in self.kv.values():
                entries = {}
                for k, v in ns["_keys"].items():
                    try:
                        e = {"value": v["value"].decode("utf-8")}
                    except UnicodeDecodeError:
                        e = {"value_b64": _b64(v["value"])}
                    if v.get("metadata") is not None:
                        e["metadata"] = v["metadata"]
                    if v.get("expiration"):
                        e["expiration"] = v["expiration"]
                    entries[k] = e
                out["kv_namespaces"].append({"id": ns["id"], "title": ns["title"], "account_id": ns["account_id"],
                                             "entries": entries})
            out["d1_databases"] = [copy.deepcopy(d) for d in self.d1.values()]
            for (aid, _name), b in self.r2.items():
                out["r2_buckets"].append(dict(b, account_id=aid))
            for t in self.tunnels.values():
                d = {k: copy.deepcopy(v) for k, v in t.items() if not k.startswith("_")}
                d["connections"] = copy.deepcopy(t["_connections"])
                d.pop("status", None)
                if "_status" in t:
                    d["status"] = t["_status"]
                if include_secrets:
                    d["tunnel_secret"] = t["_secret"]
                if t.get("_config"):
                    d["config"] = t["_config"]["config"]
                    d["config_version"] = t["_config"]["version"]
                out["tunnels"].append(d)
            return out

    # ------------------------------------------------------------------ lookups
    def _account_ref(self, ref):
        if ref in self.accounts:
            return ref
        for a in self.accounts.values():
            if a["name"] == ref:
                return a["id"]
        raise ValueError(f"seed refers to unknown account {ref!r}")

    def _zone_ref(self, ref):
        if ref in self.zones:
            return self.zones[ref]
        for z in self.zones.values():
            if z["name"] == str(ref).lower():
                return z
        raise ValueError(f"seed refers to unknown zone {ref!r}")

    def account(self, aid):
        a = self.accounts.get(aid)
        if a is None:
            # The real API answers 403 for accounts the token cannot see; an emulator
            # only has "unknown" accounts, which is the same thing to a client.
            raise ApiError(404, 7003, f"Could not route to /accounts/{aid}, "
                                      "perhaps your object identifier is invalid?")
        return a

    def zone(self, zid):
        z = self.zones.get(zid)
        if z is None:
            raise ApiError(404, 7003, "Could not route to /zones/%s, perhaps your object identifier is invalid?" % zid)
        return z

    # ------------------------------------------------------------------ DNS
    def _fqdn(self, zone, name):
        name = (name or "@").strip().lower().rstrip(".")
        zname = zone["name"]
        if name in ("@", ""):
            return zname
        if name == zname or name.endswith("." + zname):
            return name
        return f"{name}.{zname}"

    def _build_record(self, zone, body, rid=None, old=None):
        """Validate a record body and return the stored record (not yet inserted)."""
        rtype = str(body.get("type") or "").upper()
        if rtype not in RECORD_TYPES:
            raise ApiError(400, 9000, f"DNS record type '{body.get('type')}' is invalid.")
        name = self._fqdn(zone, body.get("name"))
        if not HOSTNAME_RE.match(name) or len(name) > 255:
            raise ApiError(400, 9005 if rtype == "A" else 1004, f"DNS name is invalid: {name}")
        data = body.get("data")
        content = body.get("content")
        priority = body.get("priority")
        if rtype == "SRV" and isinstance(data, dict):
            content = f"{data.get('weight', 0)} {data.get('port', 0)} {data.get('target', '')}"
            priority = data.get("priority", priority)
        elif rtype == "CAA" and isinstance(data, dict):
            content = f'{data.get("flags", 0)} {data.get("tag", "")} "{data.get("value", "")}"'
        elif isinstance(data, dict) and content is None:
            content = " ".join(str(v) for v in data.values())
        if content is None or content == "":
            raise ApiError(400, 9007 if rtype == "CNAME" else 1004,
                           f"Content for {rtype} record is invalid. Must not be empty.")
        content = str(content)
        if rtype == "A":
            try:
                ipaddress.IPv4Address(content)
            except ValueError:
                raise ApiError(400, 9005, "Content for A record is invalid. Must be a valid IPv4 address") from None
        elif rtype == "AAAA":
            try:
                content = str(ipaddress.IPv6Address(content))
            except ValueError:
                raise ApiError(400, 9006, "Content for AAAA record is invalid. Must be a valid IPv6 address") from None
        elif rtype in ("CNAME", "NS", "PTR"):
            content = content.lower().rstrip(".")
            if not HOSTNAME_RE.match(content):
                raise ApiError(400, 9007, f"Content for {rtype} record is invalid. Must be a valid hostname")
        elif rtype == "MX":
            content = content.lower().rstrip(".")
            if priority is None:
                raise ApiError(400, 9101, "MX records require a priority (0-65535).")
            if not HOSTNAME_RE.match(content):
                raise ApiError(400, 9007, "Content for MX record is invalid. Must be a valid hostname")
        if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 65535):
            raise ApiError(400, 9101, "Priority must be an integer between 0 and 65535.")
        ttl = body.get("ttl", 1)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise ApiError(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
        proxied = bool(body.get("proxied", False))
        proxiable = rtype in PROXIABLE_TYPES
        if proxied and not proxiable:
            raise ApiError(400, 9004, f"This record type cannot be proxied. {rtype} records are not proxiable.")
        if proxied and ttl != 1:
            # Proxied records always have automatic TTL on the real API.
            ttl = 1
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ApiError(400, 9100, "Tags must be a list of strings in the form name:value")
        comment = body.get("comment")
        ts = now_iso()
        rec = {
            "id": rid or new_id(), "zone_id": zone["id"], "zone_name": zone["name"], "name": name,
            "type": rtype, "content": content, "proxiable": proxiable, "proxied": proxied, "ttl": ttl,
            "settings": body.get("settings") or {}, "meta": {}, "tags": tags,
            "created_on": old["created_on"] if old else ts, "modified_on": ts,
        }
        # The current API returns "comment": null when unset (clients such as
        # community.general.cloudflare_dns read the key unconditionally).
        rec["comment"] = comment
        if rtype in ("MX", "SRV", "URI") and priority is not None:
            rec["priority"] = priority
        if data is not None:
            rec["data"] = data
        if comment is not None:
            unchanged = old and old.get("comment") == comment
            rec["comment_modified_on"] = old.get("comment_modified_on", ts) if unchanged else ts
        if tags:
            rec["tags_modified_on"] = ts if not old or old.get("tags") != tags else old.get("tags_modified_on", ts)
        return rec

    @staticmethod
    def _check_conflicts(records, rec):
        """CNAME exclusivity and identical-duplicate checks against a record table."""
        for other in records.values():
            if other["id"] == rec["id"] or other["name"] != rec["name"]:
                continue
            if rec["type"] == "CNAME" or other["type"] == "CNAME":
                if rec["type"] == "CNAME" and other["type"] == "CNAME":
                    raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
                raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists. "
                                           "For more details, refer to <https://developers.cloudflare.com/dns/"
                                           "manage-dns-records/troubleshooting/records-with-same-name/>.")
            if other["type"] == rec["type"] and other["content"] == rec["content"] \
                    and other.get("priority") == rec.get("priority"):
                raise ApiError(400, 81058, "An identical record already exists.")

    def _dns_table(self, zid):
        self.zone(zid)
        return self.dns.setdefault(zid, {})

    def dns_list(self, zid):
        with self.lock:
            return list(self._dns_table(zid).values())

    def dns_get(self, zid, rid):
        with self.lock:
            r = self._dns_table(zid).get(rid)
            if r is None:
                raise ApiError(404, 81044, "Record does not exist.")
            return r

    def _dns_create(self, table, zone, body):
        rec = self._build_record(zone, body)
        self._check_conflicts(table, rec)
        table[rec["id"]] = rec
        return rec

    def _dns_update(self, table, zone, rid, body, merge):
        old = table.get(rid)
        if old is None:
            raise ApiError(404, 81044, "Record does not exist.")
        if merge:
            merged = {k: v for k, v in old.items() if k in ("name", "type", "content", "ttl", "proxied", "comment",
                                                            "tags", "settings", "priority", "data")}
            if "data" in body and "content" in merged:
                merged.pop("content")
            merged.update(body)
            body = merged
        else:
            body = dict(body)
            body.setdefault("type", old["type"])
        rec = self._build_record(zone, body, rid=rid, old=old)
        self._check_conflicts(table, rec)
        table[rid] = rec
        return rec

    def dns_create(self, zid, body):
        with self.lock:
            return self._dns_create(self._dns_table(zid), self.zones[zid], body)

    def dns_update(self, zid, rid, body, merge=False):
        with self.lock:
            return self._dns_update(self._dns_table(zid), self.zones[zid], rid, body, merge)

    def dns_delete(self, zid, rid):
        with self.lock:
            table = self._dns_table(zid)
            if rid not in table:
                raise ApiError(404, 81044, "Record does not exist.")
            del table[rid]
            return {"id": rid}

    def dns_batch(self, zid, body):
        """deletes → patches → puts → posts on a copy; swap it in only if all succeed."""
        with self.lock:
            table = self._dns_table(zid)
            zone = self.zones[zid]
            ops = {}
            for k in ("deletes", "patches", "puts", "posts"):
                items = body.get(k) or []
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise ApiError(400, 9207, f"Request body is invalid: {k} must be a list of objects.")
                ops[k] = items
            total = sum(len(v) for v in ops.values())
            if total > MAX_BATCH_CHANGES:
                raise ApiError(400, 81063, f"Batch exceeds the limit of {MAX_BATCH_CHANGES} changes per request "
                                           f"for this zone's plan (got {total}).")
            work = dict(table)  # records are replaced, never mutated, so a shallow copy is a snapshot
            out = {"deletes": [], "patches": [], "puts": [], "posts": []}
            for kind in ("deletes", "patches", "puts", "posts"):
                for i, item in enumerate(ops[kind]):
                    try:
                        if kind == "deletes":
                            rid = item.get("id")
                            if rid not in work:
                                raise ApiError(404, 81044, "Record does not exist.")
                            out[kind].append(work.pop(rid))
                        elif kind == "posts":
                            out[kind].append(self._dns_create(work, zone, item))
                        else:
                            item = dict(item)
                            rid = item.pop("id", None)
                            out[kind].append(self._dns_update(work, zone, rid, item, merge=(kind == "patches")))
                    except ApiError as exc:
                        for e in exc.errors:
                            e["message"] = f"{kind}[{i}]: {e['message']}"
                        raise
            self.dns[zid] = work
            return out

    # ------------------------------------------------------------------ workers
    def put_script(self, aid, name, metadata, files):
        with self.lock:
            if not re.match(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$", name):
                raise ApiError(400, 10016, "Invalid Worker name: must be lower-case letters, digits, - and _.")
            main = metadata.get("main_module") or metadata.get("body_part")
            names = [f[0] for f in files]
            if not main or main not in names:
                raise ApiError(400, 10021, f"No such module \"{main}\" - main_module must name an uploaded part.")
            old = self.workers.get((aid, name))
            bindings = list(metadata.get("bindings") or [])
            keep = set(metadata.get("keep_bindings") or [])
            if old and keep:
                present = {b.get("name") for b in bindings}
                bindings += [b for b in old["bindings"] if b.get("type") in keep and b.get("name") not in present]
            for b in bindings:
                if not isinstance(b, dict) or "name" not in b or "type" not in b:
                    raise ApiError(400, 10021, "Each binding needs a name and a type.")
            stored = [{"name": n, "content_type": ct, "data": data, "sha256": hashlib.sha256(data).hexdigest()}
                      for n, ct, data in files]
            etag = hashlib.sha256(b"".join(f["sha256"].encode() + f["name"].encode() for f in stored)
                                  + json.dumps(metadata.get("compatibility_date")).encode()).hexdigest()
            ts = now_iso()
            main_src = next((f["data"] for f in stored if f["name"] == main), b"")
            handlers = [h for h in ("fetch", "scheduled", "queue", "email", "tail")
                        if re.search(rb"\b" + h.encode() + rb"\s*[(:]", main_src)] or ["fetch"]
            script = {
                "id": name, "name": name, "main_module": main, "files": stored, "bindings": bindings,
                "compatibility_date": metadata.get("compatibility_date") or "2024-09-23",
                "compatibility_flags": list(metadata.get("compatibility_flags") or []),
                "etag": etag, "handlers": handlers, "created_on": old["created_on"] if old else ts,
                "modified_on": ts, "usage_model": metadata.get("usage_model", "standard"),
                "logpush": bool(metadata.get("logpush", False)),
                "tags": list(metadata.get("tags") or []),
            }
            self.workers[(aid, name)] = script
            return script

    def script(self, aid, name):
        s = self.workers.get((aid, name))
        if s is None:
            raise ApiError(404, 10007, "This Worker does not exist on your account.")
        return s

    def script_public(self, s, full=False):
        out = {
            "id": s["id"], "etag": s["etag"], "handlers": s["handlers"], "created_on": s["created_on"],
            "modified_on": s["modified_on"], "compatibility_date": s["compatibility_date"],
            "compatibility_flags": s["compatibility_flags"], "usage_model": s["usage_model"],
            "logpush": s["logpush"], "has_modules": True, "has_assets": False,
            "startup_time_ms": 7,
        }
        if s["tags"]:
            out["tags"] = s["tags"]
        return out

    def delete_script(self, aid, name):
        with self.lock:
            self.script(aid, name)
            del self.workers[(aid, name)]

    # ------------------------------------------------------------------ routes / domains
    def put_domain(self, aid, body, domain_id=None):
        with self.lock:
            hostname = str(body.get("hostname") or "").lower().rstrip(".")
            zone = None
            for z in self.zones.values():
                if z["account"]["id"] == aid and (hostname == z["name"] or hostname.endswith("." + z["name"])):
                    if body.get("zone_id") in (None, z["id"]):
                        zone = z
            if zone is None:
                raise ApiError(400, 100117, f"Hostname '{hostname}' is not in a zone of this account.")
            doms = self.domains.setdefault(aid, {})
            existing = next((d for d in doms.values() if d["hostname"] == hostname), None)
            did = domain_id or (existing["id"] if existing else new_id())
            dom = {"id": did, "hostname": hostname, "service": body.get("service"),
                   "environment": body.get("environment", "production"), "zone_id": zone["id"],
                   "zone_name": zone["name"], "cert_id": existing["cert_id"] if existing else new_id()}
            if existing and existing["id"] != did:
                del doms[existing["id"]]
            doms[did] = dom
            return dom

    # ------------------------------------------------------------------ KV
    def kv_ns(self, aid, nid):
        ns = self.kv.get(nid)
        if ns is None or ns["account_id"] != aid:
            raise ApiError(404, 10013, "list keys: 'namespace not found'")
        return ns

    def kv_create(self, aid, title):
        with self.lock:
            if not title:
                raise ApiError(400, 10019, "create namespace: 'title is required'")
            if any(n["title"] == title and n["account_id"] == aid for n in self.kv.values()):
                raise ApiError(409, 10014, "create namespace: 'A namespace with this account ID and title already exists.'")
            nid = new_id()
            self.kv[nid] = {"id": nid, "title": title, "account_id": aid, "supports_url_encoding": True, "_keys": {}}
            return self.kv[nid]

    def kv_rename(self, aid, nid, title):
        with self.lock:
            ns = self.kv_ns(aid, nid)
            if any(n["title"] == title and n["account_id"] == aid and n["id"] != nid for n in self.kv.values()):
                raise ApiError(409, 10014, "rename namespace: 'A namespace with this account ID and title already exists.'")
            ns["title"] = title
            return ns

    @staticmethod
    def _kv_live(entry):
        exp = entry.get("expiration")
        return not exp or exp > time.time()

    def kv_keys(self, ns, prefix=""):
        with self.lock:
            dead = [k for k, e in ns["_keys"].items() if not self._kv_live(e)]
            for k in dead:
                del ns["_keys"][k]
            return sorted(k for k in ns["_keys"] if k.startswith(prefix or ""))

    @staticmethod
    def kv_entry(key, value, metadata=None, expiration=None, expiration_ttl=None):
        if len(key.encode()) > 512 or key in ("", ".", ".."):
            raise ApiError(400, 10020, f"Invalid key name {key!r}: 1-512 bytes, not '.' or '..'.")
        if expiration_ttl is not None:
            if int(expiration_ttl) < 60:
                raise ApiError(400, 10033, "Invalid expiration_ttl of %s. Expiration TTL must be at least 60." % expiration_ttl)
            expiration = int(time.time()) + int(expiration_ttl)
        elif expiration is not None:
            if int(expiration) < time.time() + 60:
                raise ApiError(400, 10033, "Invalid expiration of %s. Expiration times must be at least 60 seconds "
                                           "in the future." % expiration)
            expiration = int(expiration)
        if metadata is not None and len(json.dumps(metadata)) > 1024:
            raise ApiError(413, 10028, "Metadata length exceeds the limit of 1024 bytes.")
        if len(value) > 25 * 1024 * 1024:
            raise ApiError(413, 10006, "Value length exceeds the limit of 25 MiB.")
        return {"value": value, "metadata": metadata, "expiration": expiration}


def _to_bytes(v):
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    return json.dumps(v).encode("utf-8")


def _redact(binding):
    if binding.get("type") in ("secret_text", "secret_key"):
        return {"type": binding["type"], "name": binding["name"]}
    return binding


def _tunnel_methods():
    """Tunnel helpers live here to keep the State class above readable."""

    def _new_tunnel(self, aid, tid, name, secret, config_src):
        return {
            "id": tid, "account_tag": aid, "name": name, "created_at": now_iso(), "deleted_at": None,
            "conns_active_at": None, "conns_inactive_at": None, "tun_type": "cfd_tunnel",
            "remote_config": config_src == "cloudflare", "config_src": config_src, "metadata": {},
            "_secret": secret, "_connections": [], "_config": None,
        }

    def _norm_conn(self, c):
        return {
            "id": c.get("id") or str(uuid.uuid4()), "client_id": c.get("client_id") or "1bedc50d-42b3-473c-b108-ff3d10c0d925",
            "client_version": c.get("client_version", "2024.8.2"), "colo_name": c.get("colo_name", "dfw01"),
            "is_pending_reconnect": bool(c.get("is_pending_reconnect", False)),
            "opened_at": c.get("opened_at") or now_iso(), "origin_ip": c.get("origin_ip", "198.51.100.10"),
            "uuid": c.get("uuid") or c.get("id") or str(uuid.uuid4()),
        }

    def tunnel_public(self, t):
        out = {k: v for k, v in t.items() if not k.startswith("_")}
        conns = [dict(c) for c in t["_connections"]]
        out["connections"] = conns
        if "_status" in t:
            status = t["_status"]
        elif not conns:
            status = "down" if t["conns_active_at"] else "inactive"
        elif all(c["is_pending_reconnect"] for c in conns):
            status = "down"
        elif any(c["is_pending_reconnect"] for c in conns):
            status = "degraded"
        else:
            status = "healthy"
        out["status"] = status
        if conns and not out["conns_active_at"]:
            out["conns_active_at"] = min(c["opened_at"] for c in conns)
        # Unset timestamps are left out rather than null: the schema types them as strings.
        return {k: v for k, v in out.items() if v is not None}

    def tunnel(self, aid, tid):
        t = self.tunnels.get(tid)
        if t is None or t["account_tag"] != aid:
            raise ApiError(404, 1003, "Tunnel not found")
        return t

    def tunnel_create(self, aid, body):
        with self.lock:
            name = body.get("name")
            if not name:
                raise ApiError(400, 1001, "tunnel name is required")
            if any(t["name"] == name and t["account_tag"] == aid and not t["deleted_at"] for t in self.tunnels.values()):
                raise ApiError(409, 1013, "You already have a tunnel with this name.")
            secret = body.get("tunnel_secret")
            if secret is not None:
                _check_secret(secret)
            else:
                secret = _b64(uuid.uuid4().bytes + uuid.uuid4().bytes)
            tid = str(uuid.uuid4())
            t = self._new_tunnel(aid, tid, name, secret, body.get("config_src", "local"))
            self.tunnels[tid] = t
            return t

    def tunnel_edit(self, aid, tid, body):
        with self.lock:
            t = self.tunnel(aid, tid)
            if t["deleted_at"]:
                raise ApiError(400, 1006, "Tunnel has been deleted")
            name = body.get("name")
            if name and name != t["name"]:
                if any(o["name"] == name and o["account_tag"] == aid and not o["deleted_at"] for o in self.tunnels.values()):
                    raise ApiError(409, 1013, "You already have a tunnel with this name.")
                t["name"] = name
            if body.get("tunnel_secret"):
                _check_secret(body["tunnel_secret"])
                t["_secret"] = body["tunnel_secret"]
            return t

    def tunnel_delete(self, aid, tid):
        with self.lock:
            t = self.tunnel(aid, tid)
            if t["deleted_at"]:
                raise ApiError(400, 1006, "Tunnel has already been deleted")
            if any(not c["is_pending_reconnect"] for c in t["_connections"]):
                raise ApiError(400, 1022, "Cannot delete tunnel because it has active connections. "
                                          "Clean up connections first.")
            t["deleted_at"] = now_iso()
            return t

    def tunnel_put_config(self, aid, tid, config):
        with self.lock:
            t = self.tunnel(aid, tid)
            _check_ingress(config)
            version = (t["_config"]["version"] if t["_config"] else 0) + 1
            t["_config"] = {"config": config, "version": version, "created_at": now_iso()}
            t["remote_config"] = True
            t["config_src"] = "cloudflare"
            return t["_config"]

    def tunnel_token(self, t):
        doc = {"a": t["account_tag"], "t": t["id"], "s": t["_secret"]}
        return _b64(json.dumps(doc, separators=(",", ":")).encode())

    for _f in (_new_tunnel, _norm_conn, tunnel_public, tunnel, tunnel_create, tunnel_edit, tunnel_delete,
               tunnel_put_config, tunnel_token):
        setattr(State, _f.__name__, _f)


def _check_secret(secret):
    try:
        raw = base64.b64decode(secret, validate=True)
    except (ValueError, TypeError):
        raise ApiError(400, 1001, "tunnel_secret must be base64") from None
    if len(raw) < 32:
        raise ApiError(400, 1001, "tunnel_secret must be at least 32 bytes")


def _check_ingress(config):
    """The checks cloudflared/the API apply to remotely-managed ingress rules."""
    ingress = (config or {}).get("ingress")
    if not ingress:
        return
    for i, rule in enumerate(ingress):
        host = rule.get("hostname")
        last = i == len(ingress) - 1
        catch_all = not host or host == "*"
        catch_all = catch_all and not rule.get("path")
        if catch_all and not last:
            raise ApiError(400, 1056, f"Rule #{i + 1} is a catch-all rule but is not the last rule.")
        if last and not catch_all:
            raise ApiError(400, 1056, "The last ingress rule must match all URLs (i.e. it should not have a "
                                      "hostname or path filter)")
        if host and "*" in host and not (host.startswith("*.") and "*" not in host[2:]) and host != "*":
            raise ApiError(400, 1056, f"Hostname {host!r} uses a wildcard other than a leading '*.'.")
        if rule.get("path"):
            try:
                re.compile(rule["path"])
            except re.error as exc:
                raise ApiError(400, 1056, f"Rule #{i + 1} path is not a valid regular expression: {exc}") from None
        if "service" not in rule:
            raise ApiError(400, 1056, f"Rule #{i + 1} has no service.")
    for scope in [config.get("originRequest") or {}] + [r.get("originRequest") or {} for r in ingress]:
        for key in ("connectTimeout", "tlsTimeout", "tcpKeepAlive", "keepAliveTimeout"):
            if key in scope and not (isinstance(scope[key], int) and not isinstance(scope[key], bool)):
                raise ApiError(400, 1056, f"originRequest.{key} must be an integer number of seconds.")


_tunnel_methods()
