#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cloudflare_info
short_description: List what a Cloudflare account holds, for audits, drift checks and cleanup
version_added: 0.2.0
description:
  - Reads the Workers, KV namespaces, D1 databases, R2 buckets, Cloudflare Tunnels, zones, DNS records,
    Worker routes and Worker custom domains of one Cloudflare account, and returns a small summary of each.
  - Read only. It never changes anything, so it always reports RV(ignore:changed=false), and check mode
    behaves exactly like a normal run.
  - One list call per account resource type (more only when a type has more items than one page holds,
    at the largest page size the API allows); zone resources (DNS records, Worker routes) cost one call
    per zone plus one call to list the zones.
author: BlackRoad infrastructure team (@blackroad)
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
options:
  gather:
    description:
      - The resource types to list.
      - V(dns_records) is left out of the default because it costs one call per zone and can return
        many records; ask for it explicitly.
      - V(dns_records) and V(worker_routes) are listed per zone and need one call to list the zones,
        which is the same call that V(zones) makes.
    type: list
    elements: str
    choices:
      - workers
      - kv_namespaces
      - d1_databases
      - r2_buckets
      - tunnels
      - zones
      - dns_records
      - worker_routes
      - worker_domains
    default:
      - workers
      - kv_namespaces
      - d1_databases
      - r2_buckets
      - tunnels
      - zones
      - worker_routes
      - worker_domains
  zones:
    description:
      - Names or ids of the zones whose DNS records and Worker routes are listed, when V(dns_records) or
        V(worker_routes) is gathered.
      - Each must be a zone of the account; the task fails, naming it, if it is not.
      - If not set, every zone of the account is read.
      - Does not filter the RV(zones) list itself.
    type: list
    elements: str
  worker_details:
    description:
      - Also return the bindings of each Worker.
      - Costs one more call per Worker script, so it is off by default.
    type: bool
    default: false
attributes:
  check_mode:
    description: Read only, so check mode makes exactly the same calls and returns the same result.
  diff_mode:
    description: Nothing changes, so there is never a diff.
    support: none
notes:
  - >-
    Token permissions (all read): Account Settings Read (only to resolve O(account) by name or find the
    token's only account), Workers Scripts Read, Workers KV Storage Read, D1 Read, Workers R2 Storage
    Read, Cloudflare Tunnel Read, Zone Read, DNS Read, Workers Routes Read; only those for the gathered
    types are needed.
  - Deleted tunnels are not listed.
  - Binding values of secret bindings are never returned (the API does not return them either).
seealso:
  - module: blackroad.infra.cloudflare_d1_database
"""

EXAMPLES = r"""
- name: Audit the account
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ lookup('env', 'CLOUDFLARE_API_TOKEN') }}"
      account: BlackRoad
  tasks:
    - name: List everything but DNS records
      blackroad.infra.cloudflare_info:
      register: cf

    - name: Show the counts
      ansible.builtin.debug:
        var: cf.summary

    - name: Tunnels that no connector is running
      ansible.builtin.debug:
        msg: "{{ cf.tunnels | selectattr('connections', 'equalto', 0) | map(attribute='name') | list }}"

    - name: DNS records of one zone, and the Workers with their bindings
      blackroad.infra.cloudflare_info:
        gather: [dns_records, workers]
        zones: [blackroad.io]
        worker_details: true
      register: cf_dns

    - name: Fail when a Worker exists that the inventory does not know
      ansible.builtin.assert:
        that: cf.workers | map(attribute='name') | difference(expected_workers) | length == 0
      vars:
        expected_workers: [api, edge-router]
"""

RETURN = r"""
account_id:
  description: Id of the account that was read.
  returned: always
  type: str
  sample: 0b1ac6d2c3f84e8f9a7d5e1c2b3a4f50
workers:
  description: Worker scripts, sorted by name.
  returned: when V(workers) is gathered
  type: list
  elements: dict
  contains:
    name:
      description: Script name.
      type: str
    created_on:
      description: When the script was first uploaded.
      type: str
    modified_on:
      description: When the script was last changed.
      type: str
    bindings:
      description:
        - The script's bindings (name, type and target ids; never a secret's value).
        - Only with O(worker_details=true).
      type: list
      elements: dict
      returned: when O(worker_details=true)
  sample: [{name: api, created_on: "2024-09-01T10:00:00.000000Z", modified_on: "2024-09-02T10:00:00.000000Z"}]
kv_namespaces:
  description: KV namespaces, sorted by title.
  returned: when V(kv_namespaces) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Namespace id.
      type: str
    title:
      description: Namespace title.
      type: str
  sample: [{id: 0f2ac74b498b48028cb68387c421e279, title: sessions}]
d1_databases:
  description: D1 databases, sorted by name.
  returned: when V(d1_databases) is gathered
  type: list
  elements: dict
  contains:
    uuid:
      description: Database id.
      type: str
    name:
      description: Database name.
      type: str
    created_at:
      description: When it was created.
      type: str
    version:
      description: Database version (V(production), V(beta), V(alpha)).
      type: str
  sample: [{uuid: 1f3c5a44-8a65-4d36-bd5c-1c26a0d1f6bb, name: app, created_at: "2024-09-01T10:00:00.000Z", version: production}]
r2_buckets:
  description: R2 buckets, sorted by name.
  returned: when V(r2_buckets) is gathered
  type: list
  elements: dict
  contains:
    name:
      description: Bucket name.
      type: str
    creation_date:
      description: When it was created.
      type: str
    location:
      description: Location hint of the bucket, if the API gives one.
      type: str
  sample: [{name: assets, creation_date: "2024-09-01T10:00:00.000Z", location: ENAM}]
tunnels:
  description: Cloudflare Tunnels that are not deleted, sorted by name.
  returned: when V(tunnels) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Tunnel id.
      type: str
    name:
      description: Tunnel name.
      type: str
    status:
      description: V(inactive) (never run), V(down), V(degraded) or V(healthy).
      type: str
    connections:
      description: Number of connections the tunnel has to the Cloudflare edge.
      type: int
    created_at:
      description: When it was created.
      type: str
    remote_config:
      description: Whether its ingress configuration is managed through the API (rather than a local file).
      type: bool
  sample: [{id: c1744f8b-faa1-48a4-9e5c-02ac921467fa, name: lab, status: healthy, connections: 4,
            created_at: "2024-09-01T10:00:00.000Z", remote_config: true}]
zones:
  description: Zones of the account, sorted by name.
  returned: when V(zones) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Zone id.
      type: str
    name:
      description: Zone name.
      type: str
    status:
      description: Zone status (V(active), V(pending), ...).
      type: str
  sample: [{id: 5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60, name: blackroad.io, status: active}]
dns_records:
  description: DNS records of the selected zones, sorted by zone, name and type.
  returned: when V(dns_records) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Record id.
      type: str
    zone:
      description: Zone name.
      type: str
    zone_id:
      description: Zone id.
      type: str
    type:
      description: Record type.
      type: str
    name:
      description: Fully qualified record name.
      type: str
    content:
      description: Record content.
      type: str
    proxied:
      description: Whether traffic goes through Cloudflare.
      type: bool
    ttl:
      description: TTL in seconds (1 means automatic).
      type: int
  sample: [{id: 372e67954025e0ba6aaa6d586b9e0b59, zone: blackroad.io, zone_id: 5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60,
            type: A, name: www.blackroad.io, content: 192.0.2.10, proxied: true, ttl: 1}]
worker_routes:
  description: Worker routes of the selected zones, sorted by zone and pattern.
  returned: when V(worker_routes) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Route id.
      type: str
    zone:
      description: Zone name.
      type: str
    zone_id:
      description: Zone id.
      type: str
    pattern:
      description: Route pattern.
      type: str
    script:
      description: Worker the route runs (empty when the route disables Workers).
      type: str
  sample: [{id: 9a7806061c88ada191ed06f989cc3dac, zone: blackroad.io, zone_id: 5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60,
            pattern: "blackroad.io/api/*", script: api}]
worker_domains:
  description: Worker custom domains, sorted by hostname.
  returned: when V(worker_domains) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Domain id.
      type: str
    hostname:
      description: Hostname.
      type: str
    service:
      description: Worker that serves it.
      type: str
    environment:
      description: Worker environment.
      type: str
    zone_id:
      description: Zone id.
      type: str
    zone_name:
      description: Zone name.
      type: str
  sample: [{id: dbe10b4bc17c295377eabd600e1787fd, hostname: api.blackroad.io, service: api, environment: production,
            zone_id: 5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60, zone_name: blackroad.io}]
summary:
  description: Number of items of each gathered type.
  returned: always
  type: dict
  sample: {workers: 3, kv_namespaces: 2, d1_databases: 1, r2_buckets: 2, tunnels: 2, zones: 2, worker_routes: 3, worker_domains: 1}
api_calls:
  description: Number of HTTP requests the task made.
  returned: always
  type: int
  sample: 9
changed:
  description: Always false; this module changes nothing.
  returned: always
  type: bool
  sample: false
"""

import re

from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import CloudflareModule

ALL_TYPES = ["workers", "kv_namespaces", "d1_databases", "r2_buckets", "tunnels", "zones", "dns_records",
             "worker_routes", "worker_domains"]
DEFAULT_TYPES = [t for t in ALL_TYPES if t != "dns_records"]
ZONE_TYPES = ("dns_records", "worker_routes")
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

# The largest page size each list endpoint accepts (OpenAPI schema 2024-08-06).
PER_PAGE = {
    "accounts": 50,
    "kv_namespaces": 100,
    "d1_databases": 10000,
    "r2_buckets": 1000,
    "tunnels": 1000,
    "zones": 50,
    "dns_records": 5000000,
}
SECRET_BINDING_TYPES = ("secret_text", "secret_key")


def plain(obj):
    """An SDK model (or a plain value) as JSON-able data."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict(mode="json")
    return obj


def stamp(value):
    """A timestamp as a string, the way the API wrote it where possible."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


class Gatherer:
    def __init__(self, cf):
        self.cf = cf
        self.params = cf.params

    # ------------------------------------------------------------------ paging
    def pages(self, func, per_page, **kwargs):
        """All items of a page-numbered SDK list, asking for the next page only when there is one.

        (The SDK's own auto-pagination always asks for one empty page more.)
        """
        items, page = [], 1
        while True:
            resp = self.cf.call(func, page=page, per_page=per_page, **kwargs)
            batch = list(resp.result or [])
            items.extend(batch)
            if not self._more(getattr(resp, "result_info", None), page, per_page, len(batch), len(items)):
                return items
            page += 1

    def raw_pages(self, path, per_page, params=None):
        """All items of a page-numbered endpoint read through the raw client."""
        items, page = [], 1
        while True:
            query = dict(params or {}, page=page, per_page=per_page)
            envelope = self.cf.request("GET", path, params=query) or {}
            batch = list(envelope.get("result") or [])
            items.extend(batch)
            if not self._more(envelope.get("result_info"), page, per_page, len(batch), len(items)):
                return items
            page += 1

    @staticmethod
    def _more(info, page, per_page, got, total_so_far):
        if not got:
            return False
        if info is not None and not isinstance(info, dict):
            info = plain(info)
        info = info or {}
        if info.get("total_pages") is not None:
            return page < int(info["total_pages"])
        if info.get("total_count") is not None:
            return total_so_far < int(info["total_count"])
        return got >= per_page

    # ------------------------------------------------------------------ account
    @property
    def account_id(self):
        return self.cf.account_id

    # ------------------------------------------------------------------ types
    def workers(self, aid):
        cf = self.cf
        scripts = list(cf.call(cf.sdk.workers.scripts.list, account_id=aid).result or [])
        out = []
        for script in sorted(scripts, key=lambda s: s.id or ""):
            item = dict(name=script.id, created_on=stamp(script.created_on), modified_on=stamp(script.modified_on))
            if self.params["worker_details"]:
                path = "/accounts/%s/workers/scripts/%s/settings" % (aid, script.id)
                settings = (cf.request("GET", path) or {}).get("result") or {}
                item["bindings"] = [self._binding(b) for b in settings.get("bindings") or []]
            out.append(item)
        return out

    @staticmethod
    def _binding(binding):
        binding = dict(binding)
        if binding.get("type") in SECRET_BINDING_TYPES:
            return dict(name=binding.get("name"), type=binding.get("type"))
        return binding

    def kv_namespaces(self, aid):
        items = self.pages(self.cf.sdk.kv.namespaces.list, PER_PAGE["kv_namespaces"], account_id=aid)
        return sorted((dict(id=n.id, title=n.title) for n in items), key=lambda n: (n["title"] or "", n["id"]))

    def d1_databases(self, aid):
        items = self.pages(self.cf.sdk.d1.database.list, PER_PAGE["d1_databases"], account_id=aid)
        return sorted((dict(uuid=d.uuid, name=d.name, created_at=stamp(d.created_at), version=d.version) for d in items),
                      key=lambda d: (d["name"] or "", d["uuid"] or ""))

    def r2_buckets(self, aid):
        # Raw call: the SDK drops result_info, which carries the paging cursor.
        path, per_page = "/accounts/%s/r2/buckets" % aid, PER_PAGE["r2_buckets"]
        buckets, cursor = [], None
        while True:
            params = dict(per_page=per_page)
            if cursor:
                params["cursor"] = cursor
            envelope = self.cf.request("GET", path, params=params) or {}
            batch = list((envelope.get("result") or {}).get("buckets") or [])
            buckets.extend(batch)
            cursor = (envelope.get("result_info") or {}).get("cursor")
            if not cursor or len(batch) < per_page:
                break
        return sorted((dict(name=b.get("name"), creation_date=b.get("creation_date"), location=b.get("location"))
                       for b in buckets), key=lambda b: b["name"] or "")

    def tunnels(self, aid):
        # Raw call: touching the SDK's zero_trust.tunnels costs about a second of import time.
        items = self.raw_pages("/accounts/%s/cfd_tunnel" % aid, PER_PAGE["tunnels"], params={"is_deleted": "false"})
        out = []
        for t in items:
            if t.get("deleted_at"):
                continue
            out.append(dict(id=t.get("id"), name=t.get("name"), status=t.get("status"),
                            connections=len(t.get("connections") or []), created_at=t.get("created_at"),
                            remote_config=t.get("remote_config")))
        return sorted(out, key=lambda t: (t["name"] or "", t["id"] or ""))

    def zone_list(self, aid):
        items = self.pages(self.cf.sdk.zones.list, PER_PAGE["zones"], account={"id": aid})
        return sorted((dict(id=z.id, name=z.name, status=z.status) for z in items), key=lambda z: z["name"])

    def selected_zones(self, zones):
        wanted = self.params.get("zones")
        if not wanted:
            return zones
        by_id = dict((z["id"], z) for z in zones)
        by_name = dict((z["name"], z) for z in zones)
        selected, missing = [], []
        for ref in wanted:
            zone = by_id.get(ref) or by_name.get(ref.strip().rstrip(".").lower())
            if zone is None:
                missing.append(ref)
            elif zone not in selected:
                selected.append(zone)
        if missing:
            self.cf.fail("zones: %s not a zone of account %s (or the API token cannot see %s)"
                         % (", ".join(repr(m) for m in missing), self.account_id, "them" if len(missing) > 1 else "it"))
        return selected

    def dns_records(self, zones):
        out = []
        for zone in zones:
            records = self.pages(self.cf.sdk.dns.records.list, PER_PAGE["dns_records"], zone_id=zone["id"])
            for r in records:
                out.append(dict(id=r.id, zone=zone["name"], zone_id=zone["id"], type=r.type, name=r.name,
                                content=getattr(r, "content", None), proxied=getattr(r, "proxied", None),
                                ttl=int(r.ttl) if getattr(r, "ttl", None) is not None else None))
        return sorted(out, key=lambda r: (r["zone"], r["name"] or "", r["type"] or "", str(r["content"]), r["id"]))

    def worker_routes(self, zones):
        out = []
        for zone in zones:
            routes = self.cf.call(self.cf.sdk.workers.routes.list, zone_id=zone["id"]).result or []
            for r in routes:
                out.append(dict(id=r.id, zone=zone["name"], zone_id=zone["id"], pattern=r.pattern, script=r.script))
        return sorted(out, key=lambda r: (r["zone"], r["pattern"] or "", r["id"]))

    def worker_domains(self, aid):
        items = self.cf.call(self.cf.sdk.workers.domains.list, account_id=aid).result or []
        return sorted((dict(id=d.id, hostname=d.hostname, service=d.service, environment=d.environment,
                            zone_id=d.zone_id, zone_name=d.zone_name) for d in items),
                      key=lambda d: (d["hostname"] or "", d["id"] or ""))


def validate(cf):
    params = cf.params
    gather = params["gather"]
    if not gather:
        cf.fail("gather must name at least one resource type (choices: %s)" % ", ".join(ALL_TYPES))
    for ref in params.get("zones") or []:
        if not isinstance(ref, str) or not ref.strip():
            cf.fail("zones: each item must be a zone name or id, got %r" % (ref,))
    if params.get("zones") and not any(t in gather for t in ZONE_TYPES):
        cf.module.warn("zones has no effect unless gather includes dns_records or worker_routes")


def main():
    cf = CloudflareModule(
        argument_spec=dict(
            gather=dict(type="list", elements="str", choices=ALL_TYPES, default=list(DEFAULT_TYPES)),
            zones=dict(type="list", elements="str"),
            worker_details=dict(type="bool", default=False),
        ),
    )
    validate(cf)
    gather = [t for t in ALL_TYPES if t in cf.params["gather"]]

    g = Gatherer(cf)
    aid = g.account_id
    result = dict(account_id=aid)

    zones = None
    if "zones" in gather or any(t in gather for t in ZONE_TYPES):
        zones = g.zone_list(aid)
    scoped = g.selected_zones(zones) if any(t in gather for t in ZONE_TYPES) else []

    for kind in gather:
        if kind == "zones":
            result[kind] = zones
        elif kind in ZONE_TYPES:
            result[kind] = getattr(g, kind)(scoped)
        else:
            result[kind] = getattr(g, kind)(aid)

    result["summary"] = dict((kind, len(result[kind])) for kind in gather)
    cf.exit(False, **result)


if __name__ == "__main__":
    main()
