# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: edge_plan
short_description: Turn the domain map into DNS records, tunnel ingress, routing entries and Worker routes
version_added: 0.4.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - The domain map (C(blackroad_routes)) is the one table that says which public hostname goes where.
    This filter checks every entry and derives from it everything the edge needs, so that nothing
    else repeats the table.
  - An entry reached by V(tunnel) gives a proxied C(CNAME) to the tunnel, an ingress rule from the
    hostname (and path) to the backend, and a path in the edge gateway's routing entry for the
    hostname (KV key C(route:<hostname>)).
  - An entry reached by V(worker) is served by that Worker at the edge. It gives a Worker route
    C(<hostname><path>*) for the Worker and, when no tunnel entry has the same hostname, a proxied
    C(AAAA 100::) record (the address Cloudflare documents for hostnames only a Worker answers).
  - The edge gateway is attached to every zone of the map with the routes C(<zone>/*) and
    C(*.<zone>/*). More specific routes (the V(worker) entries) win over them. Adding a hostname
    in a zone that already has one therefore changes its DNS record, its ingress rule and its
    routing entry, and nothing else.
  - All errors of the map are reported together, before anything is written.
options:
  _input:
    description:
      - The domain map, a list of entries with the keys C(hostname) (required), C(via) (V(tunnel), the
        default, or V(worker)), C(backend) (inventory host) and C(port) (required with V(tunnel)),
        C(scheme) (V(http), the default, or V(https)), C(path) (a prefix starting and ending with C(/),
        default C(/)), C(auth) (V(none), the default, V(api_key) or V(session)), C(rate_limit) (bool,
        default false) and C(worker) (required with V(worker)).
    type: list
    elements: dict
    required: true
  zones:
    description: The zones of the account that the hostnames belong to.
    type: list
    elements: str
    required: true
  tunnel:
    description:
      - Name of the tunnel, which is the inventory name of the host that runs its C(cloudflared)
        (the connector). Its own backends are reached on C(localhost).
    type: str
    required: true
  tunnel_target:
    description: Content of the tunnel's C(CNAME) records, C(<tunnel id>.cfargotunnel.com).
    type: str
    required: true
  gateway:
    description: Name of the edge gateway Worker.
    type: str
    default: blackroad-edge-gateway
  workers:
    description: Workers a V(worker) entry may name (the ones the edge deploys).
    type: list
    elements: str
    default: []
  origin:
    description:
      - The URL the gateway forwards a hostname's requests to, with C({hostname}) replaced.
      - The default sends them to the hostname itself, which from a Worker reaches the origin, the tunnel.
    type: str
    default: "https://{hostname}"
  hostvars:
    description:
      - The inventory's host variables. A backend's address, as the connector reaches it, is its
        C(edge_backend_address), else its C(tailnet_ipv4) (from the tailnet inventory), else
        C(<backend>.<tailnet_domain>) when O(tailnet_domain) is set, else its inventory name.
    type: dict
  tailnet_domain:
    description: The tailnet's MagicDNS suffix, for backends the inventory has no address for.
    type: str
  api_keys:
    description:
      - The API keys the auth Worker accepts, each with C(id) (unique, letters, digits, C(.), C(_), C(@), C(-)),
        C(user) (sent to backends as C(X-User-ID)), C(sha256) (the lower-case hex SHA-256 of the key; never
        the key itself) and C(revoked) (bool, default false; a revoked key is refused with 403).
    type: list
    elements: dict
    default: []
  comment:
    description: Comment put on every DNS record (shows who manages it).
    type: str
    default: managed by blackroad.infra edge
"""

EXAMPLES = r"""
- name: Plan the edge from the domain map
  ansible.builtin.set_fact:
    edge: >-
      {{ blackroad_routes | blackroad.infra.edge_plan(zones=blackroad_zones, tunnel='pi5-alpha',
         tunnel_target=tunnel_id ~ '.cfargotunnel.com', hostvars=hostvars,
         workers=['blackroad-billing', 'blackroad-telemetry']) }}
"""

RETURN = r"""
_value:
  description:
    - C(errors), every problem of the map (the other keys are empty when there is one).
    - C(dns), zone name to the list of records for M(blackroad.infra.cloudflare_dns_records).
    - C(ingress), the tunnel's rules for M(blackroad.infra.cloudflare_tunnel), the catch-all last.
    - C(routing), KV key C(route:<hostname>) to its JSON value, for M(blackroad.infra.cloudflare_kv_entries).
    - C(worker_routes), Worker name to its list of routes for M(blackroad.infra.cloudflare_worker).
    - C(api_keys), KV key C(apikey:<sha256>) to its JSON record (id, user, revoked), for the AUTH namespace.
    - C(hostnames), every public hostname of the map, sorted.
  type: dict
"""

import json
import re

from ansible.errors import AnsibleFilterError

ENTRY_KEYS = {"hostname", "via", "backend", "port", "scheme", "path", "auth", "rate_limit", "worker"}
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
PATH = re.compile(r"^/([A-Za-z0-9._~!$&'()+,;=:@%-]+/)*$")
AUTH_MODES = ("none", "api_key", "session")
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Cloudflare's documented "originless" address for a proxied name only a Worker serves.
WORKER_ONLY_ADDRESS = "100::"


def _zone_of(hostname, zones):
    matches = [z for z in zones if hostname == z or hostname.endswith("." + z)]
    return max(matches, key=len) if matches else None


def _path_regex(prefix):
    # cloudflared matches a Go regexp against the path; "/v2/" must take "/v2" and "/v2/...".
    if prefix == "/":
        return None
    return "^" + re.escape(prefix[:-1]).replace("\\/", "/") + "(/.*)?$"


def _address(backend, tunnel, hostvars, tailnet_domain):
    if backend == tunnel:
        return "localhost"
    hv = (hostvars or {}).get(backend) or {}
    for key in ("edge_backend_address", "tailnet_ipv4"):
        if hv.get(key):
            return str(hv[key])
    return backend + "." + tailnet_domain.strip(".") if tailnet_domain else backend


def _check(i, entry, zones, workers, hostvars):
    where = "entry %d" % (i + 1)
    if not isinstance(entry, dict):
        return ["%s: must be a mapping, not %s" % (where, type(entry).__name__)]
    errors = []
    host = entry.get("hostname")
    if isinstance(host, str):
        where = "%s (%s)" % (where, host)
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        errors.append("%s: unknown key(s) %s; known: %s" % (where, ", ".join(unknown), ", ".join(sorted(ENTRY_KEYS))))
    if not isinstance(host, str) or not HOSTNAME.match(host):
        errors.append("%s: hostname must be a lower-case DNS name such as api.example.com" % where)
    elif _zone_of(host, zones) is None:
        errors.append("%s: hostname is in none of the zones %s" % (where, ", ".join(zones)))
    via = entry.get("via", "tunnel")
    if via not in ("tunnel", "worker"):
        errors.append("%s: via must be tunnel or worker, not %r" % (where, via))
    path = entry.get("path", "/")
    if not isinstance(path, str) or not PATH.match(path):
        errors.append("%s: path must be a prefix that starts and ends with / (such as /v2/), not %r" % (where, path))
    if via == "tunnel":
        backend, port = entry.get("backend"), entry.get("port")
        if not isinstance(backend, str) or not backend:
            errors.append("%s: backend (the inventory host that serves it) is required with via: tunnel" % where)
        elif hostvars is not None and backend not in hostvars:
            errors.append("%s: backend %s is not a host of the inventory" % (where, backend))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            errors.append("%s: port must be a number from 1 to 65535, not %r" % (where, port))
        if entry.get("scheme", "http") not in ("http", "https"):
            errors.append("%s: scheme must be http or https" % where)
        if "worker" in entry:
            errors.append("%s: worker is only for via: worker" % where)
        if entry.get("auth", "none") not in AUTH_MODES:
            errors.append("%s: auth must be one of %s" % (where, ", ".join(AUTH_MODES)))
        if not isinstance(entry.get("rate_limit", False), bool):
            errors.append("%s: rate_limit must be true or false" % where)
    elif via == "worker":
        worker = entry.get("worker")
        if not worker:
            errors.append("%s: worker (the Worker that serves it) is required with via: worker" % where)
        elif workers and worker not in workers:
            errors.append("%s: worker %s is not deployed by the edge (%s)" % (where, worker, ", ".join(workers)))
        extra = sorted(k for k in ("backend", "port", "scheme", "auth", "rate_limit") if k in entry)
        if extra:
            errors.append("%s: %s only apply to via: tunnel (the Worker does its own)" % (where, ", ".join(extra)))
    return errors


def _api_keys(keys, errors):
    if not isinstance(keys, list):
        errors.append("api_keys must be a list")
        return {}
    out, ids = {}, set()
    for i, key in enumerate(keys):
        where = "api key %d" % (i + 1)
        if not isinstance(key, dict):
            errors.append("%s: must be a mapping with id, user and sha256" % where)
            continue
        unknown = sorted(set(key) - {"id", "user", "sha256", "revoked"})
        if unknown:
            errors.append("%s: unknown key(s) %s (a raw key is never given here, only its sha256)" % (where, ", ".join(unknown)))
        kid, user, digest = key.get("id"), key.get("user"), key.get("sha256")
        if not isinstance(kid, str) or not KEY_ID.match(kid):
            errors.append("%s: id must be 1-64 letters, digits, '.', '_', '@' or '-'" % where)
        elif kid in ids:
            errors.append("%s: id %s is used twice" % (where, kid))
        ids.add(kid)
        if not isinstance(user, str) or not user:
            errors.append("%s: user is required" % where)
        if not isinstance(digest, str) or not SHA256.match(digest):
            errors.append("%s: sha256 must be the 64 lower-case hex digits of the key's SHA-256" % where)
        elif "apikey:" + digest in out:
            errors.append("%s: the same key (sha256) is listed twice" % where)
        if not isinstance(key.get("revoked", False), bool):
            errors.append("%s: revoked must be true or false" % where)
        if isinstance(digest, str):
            out["apikey:" + digest] = json.dumps({"id": kid, "user": user, "revoked": key.get("revoked", False)},
                                                 sort_keys=True, separators=(",", ":"))
    return out


def edge_plan(routes, zones, tunnel, tunnel_target, gateway="blackroad-edge-gateway", workers=None, origin="https://{hostname}",
              hostvars=None, tailnet_domain=None, api_keys=None, comment="managed by blackroad.infra edge"):
    if not isinstance(routes, list):
        raise AnsibleFilterError("edge_plan: the domain map must be a list of entries, not %s" % type(routes).__name__)
    if not zones or not all(isinstance(z, str) for z in zones):
        raise AnsibleFilterError("edge_plan: zones must be a non-empty list of zone names")
    workers = list(workers or [])
    errors = []
    auth_entries = _api_keys(api_keys or [], errors)
    for i, entry in enumerate(routes):
        errors += _check(i, entry, zones, workers, hostvars)
    seen = {}
    for i, entry in enumerate(routes):
        if isinstance(entry, dict) and isinstance(entry.get("hostname"), str):
            key = (entry["hostname"], entry.get("path", "/"))
            if key in seen:
                errors.append("entries %d and %d: both route %s%s" % (seen[key] + 1, i + 1, key[0], key[1]))
            seen.setdefault(key, i)
    if errors:
        return {"errors": errors, "dns": {}, "ingress": [], "routing": {}, "worker_routes": {}, "api_keys": {}, "hostnames": []}

    tunnel_hosts = {e["hostname"] for e in routes if e.get("via", "tunnel") == "tunnel"}
    dns = {z: [] for z in zones}
    named = set()
    ingress, paths = [], {}
    worker_routes = {gateway: []}
    for e in routes:
        host, prefix = e["hostname"], e.get("path", "/")
        zone = _zone_of(host, zones)
        if host not in named:
            named.add(host)
            if host in tunnel_hosts:
                record = {"name": host, "type": "CNAME", "content": tunnel_target}
            else:
                record = {"name": host, "type": "AAAA", "content": WORKER_ONLY_ADDRESS}
            record.update(proxied=True, ttl=1, comment=comment)
            dns[zone].append(record)
        if e.get("via", "tunnel") == "worker":
            worker_routes.setdefault(e["worker"], []).append({"pattern": host + prefix + "*", "zone": zone})
            continue
        service = "%s://%s:%d" % (e.get("scheme", "http"), _address(e["backend"], tunnel, hostvars, tailnet_domain), e["port"])
        rule = {"hostname": host, "service": service}
        regex = _path_regex(prefix)
        if regex:
            rule["path"] = regex
        ingress.append((host, -len(prefix), rule))
        paths.setdefault(host, []).append({
            "prefix": prefix,
            "origin": origin.replace("{hostname}", host),
            "backend": "%s:%d" % (e["backend"], e["port"]),
            "auth": e.get("auth", "none"),
            "rate_limit": bool(e.get("rate_limit", False)),
        })
    # cloudflared takes the first rule that matches: longer paths of a hostname first.
    rules = [item[2] for item in sorted(ingress, key=lambda r: (r[0], r[1]))]
    rules.append({"service": "http_status:404"})
    routing = {}
    for host in sorted(paths):
        ordered = sorted(paths[host], key=lambda p: (-len(p["prefix"]), p["prefix"]))
        routing["route:" + host] = json.dumps({"hostname": host, "paths": ordered}, sort_keys=True, separators=(",", ":"))
    zones_used = sorted({_zone_of(e["hostname"], zones) for e in routes})
    for zone in zones_used:
        worker_routes[gateway] += [{"pattern": zone + "/*", "zone": zone}, {"pattern": "*." + zone + "/*", "zone": zone}]
    for name in worker_routes:
        worker_routes[name].sort(key=lambda r: r["pattern"])
    for zone in dns:
        dns[zone].sort(key=lambda r: r["name"])
    return {"errors": [], "dns": dns, "ingress": rules, "routing": routing, "worker_routes": worker_routes,
            "api_keys": auth_entries, "hostnames": sorted(named)}


class FilterModule(object):
    def filters(self):
        return {"edge_plan": edge_plan}
