#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cloudflare_tunnel
short_description: Manage a remotely managed Cloudflare Tunnel and its ingress configuration
version_added: 0.2.0
description:
  - Creates or deletes a Cloudflare Tunnel (C(cfd_tunnel)) whose configuration is managed by Cloudflare
    (C(config_src=cloudflare)), found by its name among the account's tunnels that are not deleted.
  - When O(ingress) is given, the whole configuration document (ingress rules, top-level origin request
    defaults, WARP routing) is replaced in one PUT, and only when it differs from the current one.
    When O(ingress) is omitted, the configuration is left as it is.
  - Optionally rotates the tunnel secret, writes the tunnel token (what C(cloudflared tunnel run --token)
    needs) to a file, and reports the tunnel's status and connections.
  - The ingress rules are checked before any API call with the collection's ingress validator (the checks
    C(cloudflared) and the API apply), so a bad rule fails the task with zero calls.
author: BlackRoad infrastructure team (@blackroad)
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
options:
  name:
    description:
      - The tunnel's name, unique among the account's tunnels that are not deleted.
      - If several live tunnels have this name the task fails and lists their ids.
    type: str
    required: true
  state:
    description:
      - V(present) creates the tunnel if no live tunnel has O(name).
      - V(absent) cleans up the tunnel's connections and deletes it.
    type: str
    choices: [present, absent]
    default: present
  ingress:
    description:
      - The ingress rules, in order. The last rule must be the only catch-all (no O(ingress[].hostname),
        no O(ingress[].path)), usually O(ingress[].service=http_status:404).
      - When given, the whole configuration document is managed, so omitting O(origin_request) means no
        top-level defaults.
      - When omitted, the tunnel's configuration is left as it is (and still reported).
    type: list
    elements: dict
    suboptions:
      hostname:
        description:
          - Public hostname the rule matches; a wildcard only as a leading C(*.). No port.
          - Omit it (and O(ingress[].path)) for the final catch-all rule.
        type: str
      path:
        description: A Go regular expression the request path must match.
        type: str
      service:
        description:
          - Where matching requests go, for example V(http://localhost:8080), V(ssh://localhost:22),
            V(unix:/run/app.sock) or V(http_status:404). An http(s) service must not have a path.
        type: str
        required: true
      origin_request:
        description:
          - Origin request settings for this rule only, such as C(connectTimeout) or C(noTLSVerify).
          - Keys may be written in Cloudflare's spelling (C(noTLSVerify)) or in snake_case (C(no_tls_verify));
            they are sent in Cloudflare's spelling. Durations are integer seconds.
        type: dict
  origin_request:
    description:
      - Origin request settings that apply to every rule (the document's top-level C(originRequest)).
      - Same keys as O(ingress[].origin_request). Only used with O(ingress).
    type: dict
  warp_routing:
    description:
      - Whether WARP clients may reach private networks routed through this tunnel (the document's
        C(warp-routing.enabled)). Only used with O(ingress).
      - When omitted, the current setting is kept.
    type: bool
  rotate_secret:
    description:
      - Set a new random 32-byte tunnel secret. Always reports a change. Connectors running with the
        old token keep their connections but cannot reconnect; give them the new token.
      - Ignored when the task creates the tunnel (its secret is new anyway) and with O(state=absent).
    type: bool
    default: false
  token_dest:
    description:
      - Path of a file (on the host the task runs on) to write the tunnel token to, with mode C(0600).
      - Written atomically and only when its content or mode differs. The token is never logged or
        shown in a diff.
      - With O(state=absent) the file is removed.
    type: path
  return_token:
    description:
      - Include the tunnel token in the result as RV(token).
      - The token lets anyone run a connector for the tunnel. A task that sets this must also set
        C(no_log=true), or the token ends up in the output and logs.
    type: bool
    default: false
attributes:
  check_mode:
    description: Makes the same reads and no writes; RV(ignore:changed) predicts the real run.
  diff_mode:
    description: Shows the tunnel (name, state, secret rotation), the token file's state and the configuration document before and after.
notes:
  - "API token permissions: Account - Cloudflare Tunnel - Edit (Cloudflare Tunnel - Read is enough
    for check mode without changes). Resolving O(account) by name also needs Account Settings - Read."
  - "A run makes two reads: list the tunnels by name and read the configuration. It writes only what
    differs: POST to create, PUT the configuration, PATCH to rotate the secret, DELETE connections and
    tunnel. Reading the token (for O(token_dest) or O(return_token)) is one more call."
seealso:
  - name: Cloudflare Tunnel API
    description: Cloudflare's reference for cfd_tunnel.
    link: https://developers.cloudflare.com/api/resources/zero_trust/subresources/tunnels/
"""

EXAMPLES = r"""
- name: Publish two services through one tunnel
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ vault_cloudflare_token }}"
      account: BlackRoad
  tasks:
    - name: Tunnel with its ingress rules; token saved for cloudflared
      blackroad.infra.cloudflare_tunnel:
        name: lab-edge
        ingress:
          - hostname: app.blackroad.io
            service: http://localhost:8080
          - hostname: api.blackroad.io
            path: ^/v1/
            service: http://localhost:9000
            origin_request:
              connectTimeout: 10
          - service: http_status:404
        origin_request:
          noTLSVerify: false
        token_dest: /etc/cloudflared/lab-edge.token
      register: tunnel

    - name: Show its health
      ansible.builtin.debug:
        msg: "{{ tunnel.status }}, {{ tunnel.tunnel.connections.count }} connections in {{ tunnel.tunnel.connections.colos }}"

    - name: Rotate the secret and hand the new token to a later task
      blackroad.infra.cloudflare_tunnel:
        name: lab-edge
        rotate_secret: true
        return_token: true
      no_log: true
      register: rotated
      when: rotate_tunnel_secret | default(false) | bool   # always a change: run on demand only

    - name: Remove the tunnel
      blackroad.infra.cloudflare_tunnel:
        name: old-tunnel
        state: absent
"""

RETURN = r"""
tunnel:
  description: The tunnel as it is after the task (as predicted in check mode); null when absent.
  returned: always
  type: dict
  contains:
    id:
      description: The tunnel's UUID (null in check mode before it is created).
      type: str
    name:
      description: The tunnel's name.
      type: str
    status:
      description: V(inactive), V(degraded), V(healthy) or V(down), as the API reports.
      type: str
    created_at:
      description: When the tunnel was created (ISO 8601).
      type: str
    remote_config:
      description: Whether the configuration is managed by Cloudflare.
      type: bool
    connections:
      description: Summary of the connector connections.
      type: dict
      contains:
        count:
          description: Number of connections.
          type: int
        active:
          description: Connections not waiting to reconnect.
          type: int
        colos:
          description: Cloudflare data centres the connections go to, sorted.
          type: list
          elements: str
  sample:
    id: 8d2b1c7e-3f0a-4c55-9e61-0b7d2a4f6e10
    name: lab-edge
    status: healthy
    created_at: "2024-08-06T10:00:00.000000Z"
    remote_config: true
    connections: {count: 2, active: 2, colos: [dfw01, iad08]}
status:
  description: The tunnel's status as the API reports it; null when absent or not yet created.
  returned: always
  type: str
  sample: healthy
connections:
  description: The tunnel's connections as the API lists them.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 1f0c3e2a-5b6d-4e7f-8a9b-0c1d2e3f4a5b
      client_id: 1bedc50d-42b3-473c-b108-ff3d10c0d925
      client_version: 2024.8.2
      colo_name: dfw01
      is_pending_reconnect: false
      opened_at: "2024-08-06T10:01:00.000000Z"
      origin_ip: 198.51.100.10
config:
  description:
    - The configuration document (Cloudflare's key names C(ingress), C(originRequest), C(warp-routing)) as
      it is after the task; null when the tunnel is absent or has no configuration.
  returned: always
  type: dict
  sample:
    ingress:
      - {hostname: app.blackroad.io, service: "http://localhost:8080"}
      - {service: "http_status:404"}
token:
  description: The tunnel token. Only with O(return_token); the task must set C(no_log=true).
  returned: when O(return_token=true) and the tunnel exists (not in check mode before creation)
  type: str
token_changed:
  description: Whether O(token_dest) was (or would be) written.
  returned: when O(token_dest) is set
  type: bool
api_calls:
  description: Number of HTTP requests the task made to the API.
  returned: always
  type: int
  sample: 2
"""

import base64
import errno
import os
import tempfile

from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import CloudflareModule, dict_diff
from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare_ingress import validate_ingress

PER_PAGE = 1000

# originRequest keys in snake_case -> Cloudflare's spelling (the API's own keys pass through as given).
ORIGIN_REQUEST_KEYS = {
    "access": "access",
    "ca_pool": "caPool",
    "connect_timeout": "connectTimeout",
    "disable_chunked_encoding": "disableChunkedEncoding",
    "http2_origin": "http2Origin",
    "http_host_header": "httpHostHeader",
    "keep_alive_connections": "keepAliveConnections",
    "keep_alive_timeout": "keepAliveTimeout",
    "match_sni_to_host": "matchSNItoHost",
    "no_happy_eyeballs": "noHappyEyeballs",
    "no_tls_verify": "noTLSVerify",
    "origin_server_name": "originServerName",
    "proxy_type": "proxyType",
    "tcp_keep_alive": "tcpKeepAlive",
    "tls_timeout": "tlsTimeout",
}
ACCESS_KEYS = {"aud_tag": "audTag", "team_name": "teamName", "required": "required"}


class InputError(ValueError):
    pass


def _camel_keys(value, mapping, where):
    if not isinstance(value, dict):
        raise InputError("%s must be a dictionary" % where)
    out = {}
    for key, item in value.items():
        api_key = mapping.get(key, key)
        if api_key in out:
            raise InputError("%s sets %s twice (as %s and as another spelling)" % (where, api_key, key))
        if api_key == "access" and isinstance(item, dict):
            item = _camel_keys(item, ACCESS_KEYS, where + ".access")
        out[api_key] = item
    return out


def build_document(params):
    """Our snake_case options -> Cloudflare's configuration document (the one place that maps them)."""
    rules = []
    for index, rule in enumerate(params["ingress"] or []):
        api_rule = {}
        for key in ("hostname", "path", "service"):
            if rule.get(key) not in (None, ""):
                api_rule[key] = rule[key]
        if rule.get("origin_request"):
            api_rule["originRequest"] = _camel_keys(rule["origin_request"], ORIGIN_REQUEST_KEYS,
                                                    "ingress[%d].origin_request" % index)
        rules.append(api_rule)
    doc = {"ingress": rules}
    if params["origin_request"]:
        doc["originRequest"] = _camel_keys(params["origin_request"], ORIGIN_REQUEST_KEYS, "origin_request")
    if params["warp_routing"] is not None:
        doc["warp-routing"] = {"enabled": params["warp_routing"]}
    return doc


def _clean(value):
    """Drop what the API treats as unset (None, "", {}) so equal documents compare equal."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _clean(item)
            if item is None or item == "" or item == {}:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def normalise(doc):
    """A configuration document in a canonical form; None when there is none."""
    if not doc:
        return None
    doc = _clean(doc)
    warp = doc.get("warp-routing")
    if isinstance(warp, dict) and not warp.get("enabled"):
        # Disabled is the default: {"enabled": false} and no key at all mean the same.
        warp = {k: v for k, v in warp.items() if k != "enabled"}
        if warp:
            doc["warp-routing"] = warp
        else:
            doc.pop("warp-routing")
    return doc or None


def _to_dict(model):
    if model is None:
        return None
    if hasattr(model, "to_dict"):
        return model.to_dict(mode="json")
    return dict(model)


def _connections(tunnel):
    return [_to_dict(c) for c in (getattr(tunnel, "connections", None) or [])]


def tunnel_summary(tunnel, connections):
    if tunnel is None:
        return None
    created = getattr(tunnel, "created_at", None)
    return {
        "id": tunnel.id,
        "name": tunnel.name,
        "status": getattr(tunnel, "status", None),
        "created_at": created.isoformat().replace("+00:00", "Z") if hasattr(created, "isoformat") else created,
        "remote_config": getattr(tunnel, "remote_config", None),
        "connections": {
            "count": len(connections),
            "active": len([c for c in connections if not c.get("is_pending_reconnect")]),
            "colos": sorted(set(c["colo_name"] for c in connections if c.get("colo_name"))),
        },
    }


class TokenFile:
    """The token file: compare, write atomically with mode 0600, remove."""

    def __init__(self, path):
        self.path = path
        self.b_path = to_bytes(path, errors="surrogate_or_strict")

    def check_dir(self):
        directory = os.path.dirname(self.b_path) or b"."
        if not os.path.isdir(directory):
            raise InputError("token_dest %s: directory %s does not exist" % (self.path, to_native(directory)))

    def differs(self, token):
        try:
            with open(self.b_path, "rb") as handle:
                content = handle.read()
            mode = os.stat(self.b_path).st_mode & 0o7777
        except (IOError, OSError) as error:
            if error.errno == errno.ENOENT:
                return True
            raise
        return content != to_bytes(token) or mode != 0o600

    def write(self, token):
        directory = os.path.dirname(self.b_path) or b"."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=b"." + os.path.basename(self.b_path) + b".")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(to_bytes(token))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.b_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def exists(self):
        return os.path.lexists(self.b_path)

    def remove(self):
        os.unlink(self.b_path)


class TunnelManager:

    def __init__(self, cf):
        self.cf = cf
        self.params = cf.params
        self.name = self.params["name"]
        self.changed = False
        self.token_file = TokenFile(self.params["token_dest"]) if self.params["token_dest"] else None

    # ---------------------------------------------------------------- input
    def validate(self):
        """Everything that can be checked without the API; returns the wanted document (or None)."""
        if not self.name.strip():
            raise InputError("name must not be empty")
        # In check mode the directory may be made by an earlier task of the
        # same play; the token file then counts as one to write.
        if self.token_file is not None and not self.cf.check_mode:
            self.token_file.check_dir()
        if self.params["state"] == "absent" or self.params["ingress"] is None:
            for option in ("origin_request", "warp_routing"):
                if self.params[option] is not None and self.params["state"] == "present":
                    raise InputError("%s is part of the configuration document: give it together with ingress" % option)
            return None
        wanted = build_document(self.params)
        errors = validate_ingress(wanted)
        if errors:
            raise InputError("invalid ingress configuration: %s" % "; ".join(errors))
        return wanted

    # ---------------------------------------------------------------- API
    @property
    def api(self):
        return self.cf.sdk.zero_trust.tunnels.cloudflared

    def find(self):
        """The live tunnels called ``name`` (one list call, more only past 1,000 tunnels)."""
        found, page = [], 1
        while True:
            result = self.cf.call(self.api.list, account_id=self.account_id, name=self.name, is_deleted=False,
                                  per_page=PER_PAGE, page=page)
            items = list(result.result or [])
            found.extend(t for t in items if t.name == self.name and not getattr(t, "deleted_at", None))
            if len(items) < PER_PAGE:
                return found
            page += 1

    def find_one(self):
        found = self.find()
        if len(found) > 1:
            self.cf.fail("%d live tunnels are named %r (ids %s); this module needs the name to be unique: delete or "
                         "rename all but one" % (len(found), self.name, ", ".join(sorted(t.id for t in found))))
        return found[0] if found else None

    def read_config(self, tunnel_id):
        envelope = self.cf.request("GET", "/accounts/%s/cfd_tunnel/%s/configurations" % (self.account_id, tunnel_id))
        result = (envelope or {}).get("result") or {}
        return result.get("config")

    def read_token(self, tunnel_id):
        token = self.cf.call(self.api.token.get, tunnel_id, account_id=self.account_id)
        if token and not self.params["return_token"]:
            # Masked wherever it might show up; with return_token the task's no_log hides the result.
            self.cf.module.no_log_values.add(token)
        return token

    # ---------------------------------------------------------------- run
    def run(self):
        try:
            wanted = self.validate()
        except InputError as error:
            self.cf.fail(str(error), api_calls=0)
        self.account_id = self.cf.account_id
        if self.params["state"] == "absent":
            self.absent()
        else:
            self.present(wanted)

    def absent(self):
        tunnel = self.find_one()
        result = {"tunnel": None, "status": None, "connections": [], "config": None}
        before_config = None
        if tunnel is not None:
            self.changed = True
            if self.cf.diff_mode:
                before_config = normalise(self.read_config(tunnel.id))
            if not self.cf.check_mode:
                self.cf.call(self.api.connections.delete, tunnel.id, account_id=self.account_id)
                self.cf.call(self.api.delete, tunnel.id, account_id=self.account_id)
        if self.token_file is not None and self.token_file.exists():
            self.changed = True
            result["token_changed"] = True
            if not self.cf.check_mode:
                self.token_file.remove()
        elif self.token_file is not None:
            result["token_changed"] = False
        if self.cf.diff_mode:
            before = {"tunnel": {"name": self.name, "state": "present" if tunnel else "absent"}}
            if tunnel is not None:
                before["tunnel"]["id"] = tunnel.id
                before["configuration"] = before_config
            after = {"tunnel": {"name": self.name, "state": "absent"}}
            if tunnel is not None:
                after["configuration"] = None
            result["diff"] = dict_diff(before, after, header="cloudflare tunnel %s" % self.name)
        self.cf.exit(self.changed, **result)

    def present(self, wanted):
        params = self.params
        check = self.cf.check_mode
        tunnel = self.find_one()
        created = rotated = False
        current_doc = None
        if tunnel is None:
            created = self.changed = True
            if not check:
                secret = base64.b64encode(os.urandom(32)).decode("ascii")
                self.cf.module.no_log_values.add(secret)
                tunnel = self.cf.create(self.api.create, account_id=self.account_id, name=self.name,
                                        config_src="cloudflare", tunnel_secret=secret, find=self.find_one)
        else:
            current_doc = self.read_config(tunnel.id)

        # The configuration document: only managed when ingress is given.
        after_doc = current_doc
        if wanted is not None:
            desired = dict(wanted)
            for key, value in (current_doc or {}).items():
                # Keep what the options do not manage (warp-routing when omitted, keys newer than this module).
                if key not in ("ingress", "originRequest") and key not in desired:
                    desired[key] = value
            if normalise(desired) != normalise(current_doc):
                self.changed = True
                after_doc = desired
                if not check:
                    self.cf.call(self.api.configurations.update, tunnel.id, account_id=self.account_id, config=desired)

        if params["rotate_secret"] and not created:
            rotated = self.changed = True
            if not check:
                secret = base64.b64encode(os.urandom(32)).decode("ascii")
                self.cf.module.no_log_values.add(secret)
                tunnel = self.cf.call(self.api.edit, tunnel.id, account_id=self.account_id, tunnel_secret=secret) or tunnel

        connections = _connections(tunnel) if tunnel is not None else []
        result = {
            "tunnel": tunnel_summary(tunnel, connections) if tunnel is not None else {
                "id": None, "name": self.name, "status": None, "created_at": None, "remote_config": True,
                "connections": {"count": 0, "active": 0, "colos": []}},
            "status": getattr(tunnel, "status", None) if tunnel is not None else None,
            "connections": connections,
            "config": normalise(after_doc),
        }

        # The token: read it only when something needs it.
        token = None
        if (self.token_file is not None or params["return_token"]) and tunnel is not None \
                and not (check and rotated):
            token = self.read_token(tunnel.id)
        token_before = None
        if self.token_file is not None:
            if token is None:
                token_changed = True  # check mode: a new tunnel or a new secret means a new token
            else:
                token_changed = self.token_file.differs(token)
            token_before = "differs" if self.token_file.exists() else "missing"
            if not token_changed:
                token_before = "up to date"
            if token is not None and token_changed and not check:
                self.token_file.write(token)
            result["token_changed"] = token_changed
            self.changed = self.changed or token_changed
        if params["return_token"] and token is not None:
            result["token"] = token

        if self.cf.diff_mode:
            before = {"tunnel": {"name": self.name, "state": "absent" if created else "present"}}
            after = {"tunnel": {"name": self.name, "state": "present"}}
            if not created:
                before["tunnel"]["id"] = after["tunnel"]["id"] = tunnel.id
            if rotated:
                before["tunnel"]["secret"] = "(current, hidden)"
                after["tunnel"]["secret"] = "(rotated, hidden)"
            if self.token_file is not None:
                before["token_dest"] = "%s (%s)" % (self.token_file.path, token_before)
                after["token_dest"] = "%s (up to date, mode 0600)" % self.token_file.path
            if wanted is not None or not created:
                before["configuration"] = normalise(current_doc)
                after["configuration"] = normalise(after_doc)
            result["diff"] = dict_diff(before, after, header="cloudflare tunnel %s" % self.name)
        self.cf.exit(self.changed, **result)


def main():
    cf = CloudflareModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            ingress=dict(type="list", elements="dict", options=dict(
                hostname=dict(type="str"),
                path=dict(type="str"),
                service=dict(type="str", required=True),
                origin_request=dict(type="dict"),
            )),
            origin_request=dict(type="dict"),
            warp_routing=dict(type="bool"),
            rotate_secret=dict(type="bool", default=False, no_log=False),
            token_dest=dict(type="path", no_log=False),
            return_token=dict(type="bool", default=False, no_log=False),
        ),
    )
    TunnelManager(cf).run()


if __name__ == "__main__":
    main()
