# -*- coding: utf-8 -*-
# Copyright: BlackRoad infrastructure team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tailscale_node
short_description: Join this host to a tailnet once, then keep its settings with C(tailscale set)
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Runs on the managed host and talks to its running C(tailscaled) through the C(tailscale) CLI.
  - Reads the node's state (C(tailscale status --json)) and preferences (C(tailscale debug prefs)) first
    and only acts on what differs, so a node that is already logged in to the right control server
    with the right tags reports C(ok) and needs no auth key.
  - Logs in with C(tailscale up) only when the node is not logged in to O(login_server), or when its
    tags must change and an auth key is given (one re-authentication). The key reaches C(tailscale)
    through a private 0600 file (C(--auth-key=file:...)), never through the command line.
  - Every other setting (SSH, advertised routes, exit node, hostname, accept-routes, accept-dns,
    operator, shields-up) is reconciled with C(tailscale set), which keeps existing connections,
    including the SSH session Ansible is using.
  - O(state=absent) logs the node out; with O(control_api_key) it is also deleted from the control
    server, which otherwise keeps listing it as expired.
  - Returns facts for later roles - the node's tailnet addresses and MagicDNS name.
options:
  state:
    description:
      - V(present) logs in if needed and reconciles settings; V(absent) logs out.
    type: str
    choices: [present, absent]
    default: present
  login_server:
    description:
      - Control server URL. The Tailscale SaaS default, or a headscale server's C(server_url).
    type: str
    default: https://controlplane.tailscale.com
  auth_key:
    description:
      - A pre-auth key (C(tskey-auth-...), or a headscale key) or an OAuth client secret
        (C(tskey-client-...)). Only needed to log in or to change tags; omit it on re-runs.
      - An OAuth client secret makes C(tailscaled) mint a key itself; O(ephemeral) and
        O(preauthorized) are passed with it and O(tags) are then required.
    type: str
  auth_key_file:
    description:
      - Path on the managed host of a file holding the key. Used as is (never copied or logged).
      - Mutually exclusive with O(auth_key).
    type: path
  tags:
    description:
      - Tags the node must carry, for example C(tag:agent-pool). Compared with the tags the
        control server reports for the node, not with what was requested.
    type: list
    elements: str
    default: []
  request_tags:
    description:
      - Send O(tags) with the login (C(--advertise-tags)), as Tailscale SaaS expects.
      - Set to V(false) for headscale 0.28 and later with tagged pre-auth keys - there the key carries
        the tags and headscale refuses a login that also requests tags. O(tags) is still what the
        node's tags are checked against.
    type: bool
    default: true
  tag_change:
    description:
      - What to do when the node carries other tags than O(tags).
      - V(reauthenticate) logs in once more with the auth key and the new tags (fails with a clear
        message when no key is given). Tailscale SaaS applies the new tags; headscale 0.28 and later
        keeps the tags a node registered with, and the module then fails saying so.
      - V(api) sets the tags through the control server's API (O(control_api), O(control_api_url),
        O(control_api_key)) and waits until the node sees them; no re-login, no key.
      - V(fail) always stops with the difference.
    type: str
    choices: [reauthenticate, api, fail]
    default: reauthenticate
  control_api:
    description: Which API O(control_api_url) speaks, for O(tag_change=api).
    type: str
    choices: [tailscale, headscale]
    default: tailscale
  control_api_url:
    description:
      - Base URL of the control server's API, for O(tag_change=api) - C(https://api.tailscale.com)
        or the headscale server's URL.
    type: str
  control_api_key:
    description:
      - API key allowed to change device tags (O(tag_change=api)) and to delete the node
        (O(state=absent)). Sent from the managed host to the API; never written on the host.
    type: str
  ephemeral:
    description: Passed with an OAuth client secret. Fleet servers are not ephemeral.
    type: bool
    default: false
  preauthorized:
    description: Passed with an OAuth client secret.
    type: bool
    default: true
  hostname:
    description: Name the node registers with. Unset keeps the OS hostname.
    type: str
  ssh:
    description: Run Tailscale SSH (access still decided by the tailnet policy).
    type: bool
    default: false
  advertise_routes:
    description: Subnet routes to offer, as CIDRs.
    type: list
    elements: str
    default: []
  advertise_exit_node:
    description: Offer this node as an exit node.
    type: bool
    default: false
  accept_routes:
    description: Use subnet routes other nodes advertise.
    type: bool
    default: false
  accept_dns:
    description: Use the tailnet's DNS settings (MagicDNS).
    type: bool
    default: true
  shields_up:
    description: Refuse all incoming tailnet connections.
    type: bool
    default: false
  operator:
    description: Unix user allowed to operate C(tailscaled) without root. Empty for none.
    type: str
    default: ""
  timeout:
    description: Seconds C(tailscale up) may wait for the control server.
    type: int
    default: 120
  binary:
    description: Path of the C(tailscale) CLI.
    type: path
    default: tailscale
  socket:
    description: Path of C(tailscaled)'s socket, when not the default.
    type: path
notes:
  - Supports check mode - it predicts the change from the node's state and runs nothing that writes.
  - Supports diff mode - shows the settings before and after (never the key).
attributes:
  check_mode:
    description: Predicts the change from the node's state; runs nothing that writes.
    support: full
  diff_mode:
    description: Shows the node's settings, login server and tags before and after.
    support: full
"""

EXAMPLES = r"""
- name: Join the tailnet (the key is only needed the first time)
  blackroad.infra.tailscale_node:
    login_server: https://headscale.example.net
    auth_key: "{{ tailscale_authkey | default(omit) }}"
    tags: [tag:agent-pool]
    ssh: true

- name: Offer the home LAN to the tailnet without a re-login
  blackroad.infra.tailscale_node:
    tags: [tag:agent-pool]
    advertise_routes: [192.168.1.0/24]

- name: Leave the tailnet
  blackroad.infra.tailscale_node:
    state: absent
"""

RETURN = r"""
action:
  description: What was done - V(none), V(login), V(reauthenticate), V(retag) (tags set through the API), V(set) or V(logout).
  returned: always
  type: str
  sample: set
settings_changed:
  description: Settings that differed and were (or would be) changed with C(tailscale set).
  returned: always
  type: list
  elements: str
  sample: [ssh, hostname]
ansible_facts:
  description: Facts about the node, for later roles.
  returned: when O(state=present)
  type: dict
  contains:
    tailscale_ipv4:
      description: The node's tailnet IPv4 address.
      type: str
      sample: 100.64.0.1
    tailscale_ipv6:
      description: The node's tailnet IPv6 address.
      type: str
      sample: fd7a:115c:a1e0::1
    tailscale_dns_name:
      description: The node's MagicDNS name, without the trailing dot.
      type: str
      sample: pi5-alpha.tailnet.example
    tailscale_node_id:
      description: The node's stable id.
      type: str
    tailscale_tags:
      description: Tags the control server reports for the node.
      type: list
      elements: str
    tailscale_backend_state:
      description: C(tailscaled)'s state, C(Running) when joined.
      type: str
"""

import json
import os
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.blackroad.infra.plugins.module_utils.tailscale import ControlClient, TailscaleError

SAAS_CONTROL = "https://controlplane.tailscale.com"
# Older clients report the SaaS control server under its previous name.
SAAS_ALIASES = {SAAS_CONTROL, "https://login.tailscale.com"}

# option -> (prefs key, `tailscale set`/`up` flag)
SETTINGS = {
    "hostname": ("Hostname", "--hostname"),
    "ssh": ("RunSSH", "--ssh"),
    "accept_routes": ("RouteAll", "--accept-routes"),
    "accept_dns": ("CorpDNS", "--accept-dns"),
    "shields_up": ("ShieldsUp", "--shields-up"),
    "operator": ("OperatorUser", "--operator"),
    "advertise_routes": (None, "--advertise-routes"),
    "advertise_exit_node": (None, "--advertise-exit-node"),
}
EXIT_ROUTES = {"0.0.0.0/0", "::/0"}


def control_url(url):
    url = (url or "").rstrip("/")
    return SAAS_CONTROL if url in SAAS_ALIASES or not url else url


class Node:
    """The node as tailscaled reports it, and the CLI calls that change it."""

    def __init__(self, module):
        self.module = module
        self.binary = module.get_bin_path(module.params["binary"])
        if not self.binary:
            self.unavailable("the tailscale CLI (%s) is not installed" % module.params["binary"])

    def unavailable(self, why):
        """In --check on a host the role has not installed yet, predict the join instead of failing."""
        if self.module.check_mode and self.module.params["state"] == "present":
            self.module.exit_json(changed=True, action="login", settings_changed=[], msg=why + "; a run would join")
        if self.module.params["state"] == "absent":
            self.module.exit_json(changed=False, action="none", settings_changed=[], msg=why)
        self.module.fail_json(msg=why)

    def cli(self, *args, check=True):
        argv = [self.binary]
        if self.module.params["socket"]:
            argv.append("--socket=" + self.module.params["socket"])
        argv.extend(args)
        rc, out, err = self.module.run_command(argv)
        if check and rc != 0:
            # argv never holds a secret (keys go through a file), so it is safe to show.
            self.module.fail_json(msg="'%s' failed: %s" % (" ".join(argv[1:]), (err or out).strip()),
                                  rc=rc)
        return rc, out, err

    def read_json(self, *args):
        # tailscaled opens its socket a moment after systemd reports it started.
        for _attempt in range(20):
            rc, out, err = self.cli(*args, check=False)
            if rc == 0 or out.strip().startswith("{"):
                break
            time.sleep(0.5)
        else:
            self.unavailable("cannot read tailscaled's state with 'tailscale %s': %s; is tailscaled running?"
                             % (" ".join(args), (err or out).strip()))
        try:
            return json.loads(out)
        except ValueError:
            self.module.fail_json(msg="'tailscale %s' did not print JSON: %s" % (" ".join(args), out[:200]))
        return None

    def wait_for_tags(self, tags, seconds=30):
        """The node learns its new tags from its next netmap; wait for it so facts are right."""
        for _attempt in range(seconds * 2):
            if node_facts(self.read_json("status", "--json"))["tailscale_tags"] == tags:
                return
            time.sleep(0.5)
        self.module.fail_json(msg="the control server took the new tags %s, but the node has not seen them "
                                  "after %d s" % (tags, seconds), changed=True)

    def state(self):
        status = self.read_json("status", "--json")
        prefs = self.read_json("debug", "prefs")
        return status, prefs


def current_settings(prefs):
    routes = set(prefs.get("AdvertiseRoutes") or [])
    current = {opt: prefs.get(key) for opt, (key, _flag) in SETTINGS.items() if key}
    current["hostname"] = current["hostname"] or ""
    current["operator"] = current["operator"] or ""
    for opt in ("ssh", "accept_routes", "accept_dns", "shields_up"):
        current[opt] = bool(current[opt])
    current["advertise_routes"] = sorted(routes - EXIT_ROUTES)
    current["advertise_exit_node"] = EXIT_ROUTES <= routes
    return current


def desired_settings(params, current):
    desired = {opt: params[opt] for opt in SETTINGS}
    desired["advertise_routes"] = sorted(params["advertise_routes"])
    # No hostname given: keep whatever the node uses now.
    if params["hostname"] is None:
        desired["hostname"] = current["hostname"]
    return desired


def flags(settings, names):
    out = []
    for name in names:
        value = settings[name]
        flag = SETTINGS[name][1]
        if isinstance(value, bool):
            out.append("%s=%s" % (flag, str(value).lower()))
        elif isinstance(value, list):
            out.append("%s=%s" % (flag, ",".join(value)))
        else:
            out.append("%s=%s" % (flag, value))
    return out


def node_facts(status):
    me = status.get("Self") or {}
    addrs = me.get("TailscaleIPs") or status.get("TailscaleIPs") or []
    return {
        "tailscale_ipv4": next((a for a in addrs if ":" not in a), ""),
        "tailscale_ipv6": next((a for a in addrs if ":" in a), ""),
        "tailscale_dns_name": (me.get("DNSName") or "").rstrip("."),
        "tailscale_node_id": me.get("ID") or "",
        "tailscale_tags": sorted(me.get("Tags") or []),
        "tailscale_backend_state": status.get("BackendState") or "",
    }


class KeyFile:
    """The auth key in a private 0600 file for `--auth-key=file:`, removed afterwards."""

    def __init__(self, module):
        self.module = module
        self.dir = None

    def path(self):
        params = self.module.params
        if params["auth_key_file"]:
            try:
                with open(params["auth_key_file"]) as handle:
                    key = handle.read().strip()
            except OSError as exc:
                self.module.fail_json(msg="cannot read auth_key_file %s: %s" % (params["auth_key_file"], exc.strerror))
            if not key.startswith("tskey-client-") or "?" in key:
                return params["auth_key_file"]
        else:
            key = params["auth_key"].strip()
        if key.startswith("tskey-client-") and "?" not in key:
            # tailscaled mints the node key from a client secret; ephemeral defaults to
            # true there, which would make a server vanish when it goes offline.
            key += "?ephemeral=%s&preauthorized=%s" % (str(params["ephemeral"]).lower(),
                                                       str(params["preauthorized"]).lower())
        self.dir = tempfile.mkdtemp(prefix="tailscale-key-")
        path = os.path.join(self.dir, "key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return path

    def remove(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def set_tags_through_api(module, node_id, tags):
    params = module.params
    try:
        client = ControlClient(params["control_api_url"], api_key=params["control_api_key"],
                               api=params["control_api"], timeout=30)
        if params["control_api"] == "headscale":
            client.request("POST", "/node/%s/tags" % node_id, body={"tags": tags})
        else:
            client.request("POST", "/device/%s/tags" % node_id, body={"tags": tags})
    except TailscaleError as error:
        module.fail_json(msg="setting tags %s on node %s through %s failed: %s"
                             % (tags, node_id, params["control_api_url"], error))


def delete_through_api(module, node_id):
    params = module.params
    try:
        client = ControlClient(params["control_api_url"], api_key=params["control_api_key"],
                               api=params["control_api"], timeout=30)
        path = ("/node/%s" if params["control_api"] == "headscale" else "/device/%s") % node_id
        client.request("DELETE", path, expect=(200, 204, 404))
    except TailscaleError as error:
        module.fail_json(msg="logged out, but deleting node %s through %s failed: %s"
                             % (node_id, params["control_api_url"], error), changed=True)


def has_key(params):
    return bool(params["auth_key"]) or bool(params["auth_key_file"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            login_server=dict(type="str", default=SAAS_CONTROL),
            auth_key=dict(type="str", no_log=True),
            auth_key_file=dict(type="path"),
            tags=dict(type="list", elements="str", default=[]),
            request_tags=dict(type="bool", default=True),
            tag_change=dict(type="str", choices=["reauthenticate", "api", "fail"], default="reauthenticate"),
            control_api=dict(type="str", choices=["tailscale", "headscale"], default="tailscale"),
            control_api_url=dict(type="str"),
            control_api_key=dict(type="str", no_log=True),
            ephemeral=dict(type="bool", default=False),
            preauthorized=dict(type="bool", default=True),
            hostname=dict(type="str"),
            ssh=dict(type="bool", default=False),
            advertise_routes=dict(type="list", elements="str", default=[]),
            advertise_exit_node=dict(type="bool", default=False),
            accept_routes=dict(type="bool", default=False),
            accept_dns=dict(type="bool", default=True),
            shields_up=dict(type="bool", default=False),
            operator=dict(type="str", default=""),
            timeout=dict(type="int", default=120),
            binary=dict(type="path", default="tailscale"),
            socket=dict(type="path"),
        ),
        mutually_exclusive=[("auth_key", "auth_key_file")],
        required_if=[("tag_change", "api", ("control_api_url", "control_api_key"))],
        supports_check_mode=True,
    )
    params = module.params
    for tag in params["tags"]:
        if not tag.startswith("tag:") or tag == "tag:":
            module.fail_json(msg="tag %r must look like tag:<name>" % tag)
    if params["auth_key"] and params["auth_key"].strip().startswith("tskey-client-") and not params["tags"]:
        module.fail_json(msg="an OAuth client secret can only join tagged nodes: set tags")

    node = Node(module)
    status, prefs = node.state()
    backend = status.get("BackendState")
    logged_in = backend in ("Running", "Starting") and not prefs.get("LoggedOut")
    facts_before = node_facts(status)

    if params["state"] == "absent":
        if not logged_in and backend != "Stopped":
            module.exit_json(changed=False, action="none", settings_changed=[])
        if not module.check_mode:
            node.cli("logout")
            # A logged-out node stays listed (expired) until someone deletes it.
            if params["control_api_url"] and params["control_api_key"] and facts_before["tailscale_node_id"]:
                delete_through_api(module, facts_before["tailscale_node_id"])
        module.exit_json(changed=True, action="logout", settings_changed=[],
                         diff=dict(before={"backend_state": backend}, after={"backend_state": "NeedsLogin"}))

    want_control = control_url(params["login_server"])
    have_control = control_url(prefs.get("ControlURL"))
    want_tags = sorted(set(params["tags"]))
    have_tags = facts_before["tailscale_tags"]
    current = current_settings(prefs)
    desired = desired_settings(params, current)
    before = dict(current, login_server=have_control if logged_in else "", tags=have_tags)
    after = dict(desired, login_server=want_control, tags=want_tags)

    action = "none"
    if not logged_in or have_control != want_control:
        action = "login"
    elif have_tags != want_tags:
        action = "reauthenticate"

    retag = action == "reauthenticate" and params["tag_change"] == "api"
    if retag:
        action = "retag"
    if action in ("login", "reauthenticate") and not has_key(params):
        if action == "login":
            module.fail_json(msg="this node is not logged in to %s (state %s, control %s); give auth_key "
                                 "(or auth_key_file) to join" % (want_control, backend, have_control or "none"))
        module.fail_json(msg="the control server gives this node tags %s, not %s; changing tags needs one "
                             "re-authentication with auth_key, or the control plane's own API"
                             % (have_tags, want_tags))
    if action == "reauthenticate" and params["tag_change"] == "fail":
        module.fail_json(msg="the control server gives this node tags %s, not %s (tag_change=fail): change "
                             "them through the control plane's API" % (have_tags, want_tags))

    changed_settings = [name for name in SETTINGS if current[name] != desired[name]]
    diff = dict(before=json.dumps(before, indent=2, sort_keys=True) + "\n",
                after=json.dumps(after, indent=2, sort_keys=True) + "\n")

    if action == "none" and not changed_settings:
        module.exit_json(changed=False, action="none", settings_changed=[], ansible_facts=facts_before)
    if module.check_mode:
        module.exit_json(changed=True, action=action if action != "none" else "set",
                         settings_changed=changed_settings, diff=diff, ansible_facts=facts_before)

    if retag:
        set_tags_through_api(module, facts_before["tailscale_node_id"], want_tags)
        node.wait_for_tags(want_tags)
    if changed_settings and action in ("none", "retag"):
        node.cli("set", *flags(desired, changed_settings))
    elif action in ("login", "reauthenticate"):
        keyfile = KeyFile(module)
        try:
            args = ["up", "--login-server=" + want_control, "--auth-key=file:" + keyfile.path(),
                    "--advertise-tags=" + (",".join(want_tags) if params["request_tags"] else ""),
                    "--timeout=%ds" % params["timeout"],
                    # --reset: the flags below are the whole desired configuration, so `up`
                    # does not refuse because an earlier `set` changed something.
                    "--reset"]
            if action == "reauthenticate":
                args.append("--force-reauth")
            args += flags(desired, list(SETTINGS))
            node.cli(*args)
        finally:
            keyfile.remove()

    status, prefs = node.state()
    facts = node_facts(status)
    if facts["tailscale_tags"] != want_tags:
        module.fail_json(msg="logged in, but the control server gave this node tags %s instead of %s; "
                             "check the key's tags and the policy's tagOwners" % (facts["tailscale_tags"], want_tags),
                         changed=True, ansible_facts=facts)
    module.exit_json(changed=True, action=action if action != "none" else "set",
                     settings_changed=changed_settings, diff=diff, ansible_facts=facts)


if __name__ == "__main__":
    main()
