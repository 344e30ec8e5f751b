# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: tailscale
short_description: Hosts and groups from a tailnet (Tailscale API, headscale or the local tailscale client)
version_added: 0.2.0
description:
  - Builds the inventory from the devices of a tailnet, read from one of three sources (O(source)).
  - V(tailscale) reads the Tailscale API v2 (C(GET /api/v2/tailnet/{tailnet}/devices?fields=all)) with an
    API access token or an OAuth client. An OAuth client's access token is kept in a private file and
    reused until five minutes before it expires.
  - V(headscale) reads headscale's REST API v1 (C(GET /api/v1/node)) with a headscale API key. Both the tag
    fields of headscale 0.27 and earlier (C(forcedTags), C(validTags), C(invalidTags)) and the C(tags) field
    of 0.28 and later are understood.
  - V(local) runs C(tailscale status --json) on the controller and needs no credentials. It only sees the
    controller itself and the peers the tailnet policy lets the controller see, so it is the policy's view
    of the fleet, not the whole tailnet.
  - Every host gets its tag groups (C(tag:agent-pool) becomes group C(agent_pool)), an C(online) or
    C(offline) group from the control plane's own field (C(connectedToControl) for Tailscale, C(online) for
    headscale and the local client; never guessed from latency) and an OS group (C(os_linux)).
  - Two devices that would get the same inventory name are never merged. The plugin warns, naming both
    device ids, and adds the second one (the one created later) under its name with C(_<id>) appended.
  - The configuration file name must end with C(tailscale.yml) or C(tailscale.yaml).
author: BlackRoad infrastructure team (@blackroad)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a configuration of this plugin.
    type: str
    required: true
    choices: [blackroad.infra.tailscale]
  source:
    description:
      - Where the devices come from. See the description above.
    type: str
    choices: [tailscale, headscale, local]
    default: tailscale
    env:
      - name: TAILSCALE_INVENTORY_SOURCE
  api_base_url:
    description:
      - Base URL of the control server, without the API path.
      - Must be set to the headscale server's URL for O(source=headscale).
    type: str
    default: https://api.tailscale.com
    env:
      - name: TAILSCALE_API_BASE_URL
  api_key:
    description:
      - A Tailscale API access token (C(tskey-api-...)) or, for O(source=headscale), a headscale API key
        (C(headscale apikeys create)).
      - May be a template or vaulted. Never printed.
      - If not set, the E(TAILSCALE_API_KEY) environment variable is used; for O(source=headscale),
        E(HEADSCALE_API_KEY) first, then E(TAILSCALE_API_KEY).
      - Mutually exclusive with the OAuth client options.
    type: str
  api_key_file:
    description:
      - A file that holds the API key (surrounding white space is ignored). Takes precedence over O(api_key),
        which keeps the key out of the configuration and of the environment.
    type: path
    env:
      - name: TAILSCALE_API_KEY_FILE
  oauth_client_id:
    description:
      - Id of a Tailscale OAuth client with the C(devices:core:read) scope.
    type: str
    env:
      - name: TAILSCALE_OAUTH_CLIENT_ID
  oauth_client_secret:
    description:
      - Secret of the OAuth client (C(tskey-client-...)). May be a template or vaulted. Never printed.
    type: str
    env:
      - name: TAILSCALE_OAUTH_CLIENT_SECRET
  oauth_client_secret_file:
    description:
      - A file that holds the OAuth client secret. Takes precedence over O(oauth_client_secret).
    type: path
    env:
      - name: TAILSCALE_OAUTH_CLIENT_SECRET_FILE
  oauth_scope:
    description:
      - Scopes to ask for in the token exchange, separated by spaces. They can only narrow the scopes the
        client was created with. If not set, the token gets all of the client's scopes.
    type: str
  oauth_token_cache:
    description:
      - File in which the OAuth access token is kept (mode 0600) between runs, so that a token is exchanged
        about once an hour rather than on every run. The token is reused for the same server, client and
        scope only, and not within five minutes of its expiry.
      - Set to an empty string to keep the token in memory only.
    type: str
    default: ~/.ansible/tmp/blackroad_tailscale_oauth_token.json
  tailnet:
    description:
      - The tailnet to list, for O(source=tailscale). V(-) is the tailnet of the credentials.
    type: str
    default: '-'
    env:
      - name: TAILSCALE_TAILNET
  request_timeout:
    description: Seconds to wait for the control server (or for C(tailscale status)).
    type: int
    default: 10
  max_retries:
    description:
      - How many times the read is retried after HTTP 429 (honouring C(Retry-After) up to 30 seconds), a
        server error or a connection failure, with a growing delay.
    type: int
    default: 3
  tailscale_binary:
    description: The C(tailscale) command for O(source=local), a name on E(PATH) or a path.
    type: str
    default: tailscale
  tailscale_socket:
    description:
      - The tailscaled socket for O(source=local), passed as C(--socket); for a tailscaled that does not
        use the default socket (userspace networking, a test daemon).
    type: path
  base_domain:
    description:
      - The MagicDNS base domain of a headscale server (its C(dns.base_domain) setting). Headscale's API does
        not return it, so without it a headscale device's MagicDNS name is its bare given name.
      - Not used by the other sources, whose answers hold the full name.
    type: str
  host_key:
    description:
      - What names each host in the inventory.
      - V(magicdns) is the MagicDNS name without the trailing dot (C(rpi5-01.tail1a2b3c.ts.net)); for
        headscale the given name plus O(base_domain), or the given name alone.
      - V(machine_name) is the first label of the MagicDNS name (the headscale given name), which the
        control server keeps unique within the tailnet.
      - V(hostname) is the OS host name the device reported, which two devices can share.
      - V(id) is the stable node id (C(nodeId); headscale's numeric id).
    type: str
    choices: [magicdns, machine_name, hostname, id]
    default: magicdns
  ansible_host_source:
    description:
      - What C(ansible_host) is set to. V(ipv4) and V(ipv6) are the device's tailnet addresses; a device
        without the chosen family gets the other one. V(magicdns) is the MagicDNS name without the trailing
        dot. C(compose) can still override it.
    type: str
    choices: [ipv4, ipv6, magicdns]
    default: ipv4
  include_external:
    description:
      - Include devices shared into the tailnet from another tailnet. They are someone else's machines, so
        they are left out unless asked for.
    type: bool
    default: false
  include_ephemeral:
    description: Include ephemeral devices (which the control server removes soon after they go offline).
    type: bool
    default: true
  include_offline:
    description:
      - Include devices that are not connected to the control server. They are kept by default, in the
        C(offline) group, so that a missing host shows rather than silently drops out of a play.
    type: bool
    default: true
  include_self:
    description: For O(source=local), include the controller's own device.
    type: bool
    default: true
  tag_groups:
    description: Add each host to a group per tag.
    type: bool
    default: true
  tag_group_prefix:
    description:
      - Prefix of the tag group names; with a prefix, O(tag_group_separator) joins it to the tag.
      - The group name is the tag without C(tag:), any character not allowed in a group name replaced by
        C(_) (C(tag:agent-pool) becomes C(agent_pool), or C(tag_agent_pool) with prefix V(tag)).
    type: str
    default: ''
  tag_group_separator:
    description: Joins O(tag_group_prefix) and the tag in a group name.
    type: str
    default: _
  status_groups:
    description:
      - Add each host to the C(online) or C(offline) group, by the control plane's own connection field.
      - A device whose connection state the source does not report goes in neither.
    type: bool
    default: true
  os_groups:
    description: Add each host to a group per operating system (C(os_linux), C(os_macos), ...).
    type: bool
    default: true
notes:
  - Host variables are prefixed C(tailnet_), among them C(tailnet_id), C(tailnet_node_id),
    C(tailnet_ipv4), C(tailnet_ipv6), C(tailnet_addresses), C(tailnet_dns_name),
    C(tailnet_machine_name), C(tailnet_hostname), C(tailnet_tags), C(tailnet_online),
    C(tailnet_os), C(tailnet_user), C(tailnet_last_seen), C(tailnet_ephemeral),
    C(tailnet_external), C(tailnet_client_version) and C(tailnet_source). The prefix is not C(tailscale_) on purpose - the
    tailscale role takes C(tailscale_tags) and C(tailscale_hostname) as input, and inventory variables
    would override the values a user sets in group_vars. A field the source does not
    report is null (headscale reports no OS or client version; the local client does not say which
    devices are ephemeral).
  - Failures are phrased for the user. A bad key reports HTTP 401, a wrong tailnet HTTP 404, an unreachable
    server C(cannot reach <url>). Reads are retried O(max_retries) times. Keys, secrets and tokens never
    appear in a message.
  - >-
    With O(cache) on, the devices are read from the cache plugin until O(cache_timeout) expires;
    C(ansible-inventory --flush-cache) or C(meta: refresh_inventory) reads the source again.
seealso:
  - name: Tailscale inventory plugin guide
    description: Sources, groups, collisions and caching, with examples.
    link: https://github.com/blackroad/infra/blob/main/docs/inventory/tailscale.md
"""

EXAMPLES = r"""
# tailscale.yml: the Tailscale tailnet of an OAuth client (TAILSCALE_OAUTH_CLIENT_ID and
# TAILSCALE_OAUTH_CLIENT_SECRET in the environment), cached for ten minutes.
plugin: blackroad.infra.tailscale
source: tailscale
oauth_scope: devices:core:read
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/blackroad/inventory
cache_timeout: 600

---
# headscale.tailscale.yml: a headscale server; hosts named by their given names.
plugin: blackroad.infra.tailscale
source: headscale
api_base_url: https://headscale.example.com
api_key_file: ~/.config/headscale/api_key
base_domain: tail.example.com
host_key: machine_name
keyed_groups:
  - key: tailnet_user
    prefix: user

---
# local.tailscale.yml: what the controller's own tailscale client sees (no credentials).
plugin: blackroad.infra.tailscale
source: local
include_offline: false
ansible_host_source: magicdns
compose:
  ansible_user: "'pi' if 'pi' in tailnet_tags | map('replace', 'tag:', '') else 'admin'"
groups:
  raspberry_pis: "'tag:pi' in tailnet_tags"
"""

import json
import os
import re
import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.blackroad.infra.plugins.module_utils.tailscale import (
    DEFAULT_BASE_URL, ControlClient, TailscaleError)

INVALID_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")
# Go's zero time: the Tailscale API and the local client use it for "never".
ZERO_TIMES = ("", "0001-01-01T00:00:00Z")
SECRET_OPTIONS = ("api_key", "oauth_client_secret")


def _group_name(name):
    return INVALID_GROUP_CHARS.sub("_", name)


def _time(value):
    if not value or value in ZERO_TIMES:
        return None
    return value


def _split_addresses(addresses):
    ipv4 = next((a for a in addresses if ":" not in a), None)
    ipv6 = next((a for a in addresses if ":" in a), None)
    return ipv4, ipv6


def _tag_list(*lists):
    tags = []
    for values in lists:
        for tag in values or []:
            if tag not in tags:
                tags.append(tag)
    return tags


def _age(device):
    """Sort key: creation time to the second, then the id (numerically where it is a number)."""
    ident = device["id"]
    return ((device["created"] or "~")[:19], ident.zfill(24) if ident.isdigit() else ident)


def device_from_tailscale(raw):
    """A device record from one entry of the Tailscale API's device list."""
    addresses = list(raw.get("addresses") or [])
    ipv4, ipv6 = _split_addresses(addresses)
    dns_name = (raw.get("name") or "").rstrip(".") or None
    online = raw.get("connectedToControl")
    return {
        "id": to_text(raw.get("id") or ""),
        "node_id": raw.get("nodeId") or None,
        "hostname": raw.get("hostname") or None,
        "dns_name": dns_name,
        "machine_name": dns_name.split(".", 1)[0] if dns_name else None,
        "addresses": addresses,
        "ipv4": ipv4,
        "ipv6": ipv6,
        "tags": list(raw.get("tags") or []),
        "online": online if isinstance(online, bool) else None,
        "os": raw.get("os") or None,
        "user": raw.get("user") or None,
        "last_seen": _time(raw.get("lastSeen")),
        "created": _time(raw.get("created")),
        "ephemeral": bool(raw.get("isEphemeral")),
        "external": bool(raw.get("isExternal")),
        "client_version": raw.get("clientVersion") or None,
        "authorized": raw.get("authorized"),
        "key_expiry": None if raw.get("keyExpiryDisabled") else _time(raw.get("expires")),
        "update_available": raw.get("updateAvailable"),
        "advertised_routes": list(raw.get("advertisedRoutes") or []),
        "enabled_routes": list(raw.get("enabledRoutes") or []),
    }


def device_from_headscale(raw, base_domain=None):
    """A device record from one node of headscale's API v1 (0.27 or 0.28 field names)."""
    addresses = list(raw.get("ipAddresses") or [])
    ipv4, ipv6 = _split_addresses(addresses)
    given = raw.get("givenName") or raw.get("name") or None
    if "tags" in raw:
        # 0.28 and later: one list, the tags the node has.
        tags = list(raw.get("tags") or [])
        invalid = []
    else:
        # 0.27 and earlier: forced tags (set by an admin) plus the requested tags
        # the policy allows; the requested ones it refuses are not the node's.
        tags = _tag_list(raw.get("forcedTags"), raw.get("validTags"))
        invalid = list(raw.get("invalidTags") or [])
    user = raw.get("user") or {}
    auth_key = raw.get("preAuthKey") or {}
    dns_name = given
    if given and base_domain:
        dns_name = "%s.%s" % (given, base_domain.strip(".").lower())
    online = raw.get("online")
    return {
        "id": to_text(raw.get("id") or ""),
        "node_id": to_text(raw.get("id") or "") or None,
        "hostname": raw.get("name") or None,
        "dns_name": dns_name,
        "machine_name": given,
        "addresses": addresses,
        "ipv4": ipv4,
        "ipv6": ipv6,
        "tags": tags,
        "invalid_tags": invalid,
        "online": online if isinstance(online, bool) else None,
        "os": None,
        "user": user.get("name") or user.get("email") or None,
        "last_seen": _time(raw.get("lastSeen")),
        "created": _time(raw.get("createdAt")),
        "ephemeral": bool(auth_key.get("ephemeral")),
        "external": False,
        "client_version": None,
        "key_expiry": _time(raw.get("expiry")),
        "advertised_routes": list(raw.get("availableRoutes") or []),
        "enabled_routes": list(raw.get("approvedRoutes") or []),
    }


def devices_from_status(status, include_self=True):
    """Device records from ``tailscale status --json``: Self and every Peer."""
    users = status.get("User") or {}
    entries = []
    if include_self and status.get("Self"):
        entries.append((status["Self"], True))
    entries.extend((peer, False) for peer in (status.get("Peer") or {}).values())
    devices = []
    for peer, is_self in entries:
        addresses = list(peer.get("TailscaleIPs") or [])
        ipv4, ipv6 = _split_addresses(addresses)
        dns_name = (peer.get("DNSName") or "").rstrip(".") or None
        profile = users.get(to_text(peer.get("UserID"))) or {}
        online = peer.get("Online")
        devices.append({
            "id": to_text(peer.get("ID") or ""),
            "node_id": to_text(peer.get("ID") or "") or None,
            "hostname": peer.get("HostName") or None,
            "dns_name": dns_name,
            "machine_name": dns_name.split(".", 1)[0] if dns_name else None,
            "addresses": addresses,
            "ipv4": ipv4,
            "ipv6": ipv6,
            "tags": list(peer.get("Tags") or []),
            "online": online if isinstance(online, bool) else None,
            "os": peer.get("OS") or None,
            "user": profile.get("LoginName") or None,
            "last_seen": _time(peer.get("LastSeen")),
            "created": _time(peer.get("Created")),
            "ephemeral": None,
            "external": bool(peer.get("ShareeNode")),
            "client_version": None,
            "key_expiry": _time(peer.get("KeyExpiry")),
            "self": is_self,
        })
    return devices


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = "blackroad.infra.tailscale"

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        return path.endswith(("tailscale.yml", "tailscale.yaml"))

    # -- options -------------------------------------------------------------------------
    def _secret(self, name, env=()):
        """A secret option's value: its file option, else the option (templated), else the environment."""
        path = self.get_option(name + "_file")
        if path:
            try:
                with open(os.path.expanduser(path)) as handle:
                    value = handle.read().strip()
            except (IOError, OSError) as error:
                raise AnsibleParserError("cannot read %s_file %s: %s" % (name, path, error.strerror or error))
            if not value:
                raise AnsibleParserError("%s_file %s is empty" % (name, path))
            return value
        value = self.get_option(name)
        if value and self.templar.is_template(value):
            value = self.templar.template(value)
        for variable in env:
            # Looked up here, not declared as the option's env: Ansible lets the
            # last variable listed win, and which one should win depends on the source.
            value = value or os.environ.get(variable)
        return to_text(value) if value else None

    def _client(self, source):
        base_url = self.get_option("api_base_url") or DEFAULT_BASE_URL
        if source == "headscale" and base_url.rstrip("/") == DEFAULT_BASE_URL:
            raise AnsibleParserError("source=headscale needs api_base_url: the URL of the headscale server")
        if self.get_option("request_timeout") <= 0:
            raise AnsibleParserError("request_timeout must be a positive number of seconds")
        oauth_id = oauth_secret = None
        api_key = self._secret("api_key", env=("HEADSCALE_API_KEY", "TAILSCALE_API_KEY") if source == "headscale"
                               else ("TAILSCALE_API_KEY",))
        if source == "tailscale":
            oauth_id = self.get_option("oauth_client_id") or None
            oauth_secret = self._secret("oauth_client_secret")
            if oauth_id and oauth_secret and api_key:
                # Both may come from the environment; an explicit OAuth client is
                # the narrower credential, so it wins, and the user is told.
                self.display.warning("tailscale inventory: both an API key and an OAuth client are set; "
                                     "using the OAuth client")
                api_key = None
        token_cache = self.get_option("oauth_token_cache") or None
        if token_cache:
            token_cache = os.path.expanduser(token_cache)
        try:
            return ControlClient(
                base_url, api_key=api_key, oauth_client_id=oauth_id, oauth_client_secret=oauth_secret,
                tailnet=self.get_option("tailnet") or "-", api=source, timeout=self.get_option("request_timeout"),
                retries=self.get_option("max_retries"), oauth_scope=self.get_option("oauth_scope") or None,
                token_cache_path=token_cache)
        except TailscaleError as error:
            raise AnsibleParserError("tailscale inventory: %s" % error)

    # -- reading the source --------------------------------------------------------------
    def _fetch(self, source):
        """The source's raw answer: what is cached, so that option changes need no refetch."""
        if source == "local":
            return self._local_status()
        client = self._client(source)
        try:
            if source == "headscale":
                data = client.request("GET", "/node").json()
                key = "nodes"
            else:
                data = client.request("GET", client.tailnet_path("/devices?fields=all")).json()
                key = "devices"
        except TailscaleError as error:
            raise AnsibleParserError("tailscale inventory (%s): %s" % (source, error))
        if not isinstance(data, dict) or not isinstance(data.get(key, []), list):
            raise AnsibleParserError("tailscale inventory (%s): the answer has no %r list" % (source, key))
        self.display.vvv("tailscale inventory: %d devices from %s in %d request(s)"
                         % (len(data.get(key) or []), client.base_url, client.calls))
        return {key: data.get(key) or []}

    def _local_status(self):
        command = [self.get_option("tailscale_binary")]
        if self.get_option("tailscale_socket"):
            command.append("--socket=%s" % self.get_option("tailscale_socket"))
        command += ["status", "--json"]
        timeout = self.get_option("request_timeout")
        try:
            run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                                 check=False)
        except OSError as error:
            raise AnsibleParserError("tailscale inventory (local): cannot run %s: %s"
                                     % (command[0], error.strerror or error))
        except subprocess.TimeoutExpired:
            raise AnsibleParserError("tailscale inventory (local): %s did not answer within %ss"
                                     % (" ".join(command), timeout))
        if run.returncode != 0:
            raise AnsibleParserError("tailscale inventory (local): %s failed (exit %d): %s"
                                     % (" ".join(command), run.returncode, to_text(run.stderr).strip()[:300]))
        try:
            status = json.loads(to_text(run.stdout))
        except ValueError:
            raise AnsibleParserError("tailscale inventory (local): %s printed no JSON" % " ".join(command))
        state = status.get("BackendState")
        if state and state != "Running":
            self.display.warning("tailscale inventory (local): tailscaled is %s, not Running; the peer list may "
                                 "be empty or stale" % state)
        return status

    def _devices(self, source, raw):
        if source == "local":
            return devices_from_status(raw, include_self=self.get_option("include_self"))
        if source == "headscale":
            return [device_from_headscale(node, self.get_option("base_domain")) for node in raw.get("nodes") or []]
        return [device_from_tailscale(device) for device in raw.get("devices") or []]

    # -- building the inventory ------------------------------------------------------------
    def _wanted(self, device):
        if device["external"] and not self.get_option("include_external"):
            return False
        if device["ephemeral"] and not self.get_option("include_ephemeral"):
            return False
        if device["online"] is False and not self.get_option("include_offline"):
            return False
        return True

    def _key(self, device):
        choice = self.get_option("host_key")
        if choice == "id":
            key = device["node_id"] or device["id"]
        elif choice == "hostname":
            key = device["hostname"]
        elif choice == "machine_name":
            key = device["machine_name"]
        else:
            key = device["dns_name"]
        # A device without the chosen name still needs one, and its id is the
        # one name that cannot collide.
        return key or device["node_id"] or device["id"]

    def _ansible_host(self, device):
        choice = self.get_option("ansible_host_source")
        if choice == "magicdns":
            return device["dns_name"] or device["ipv4"] or device["ipv6"]
        if choice == "ipv6":
            return device["ipv6"] or device["ipv4"]
        return device["ipv4"] or device["ipv6"]

    def _hostvars(self, device, source):
        hostvars = dict(("tailnet_" + name, device.get(name)) for name in (
            "id", "node_id", "hostname", "dns_name", "machine_name", "addresses", "ipv4", "ipv6", "tags",
            "online", "os", "user", "last_seen", "created", "ephemeral", "external", "client_version",
            "key_expiry"))
        for name in ("authorized", "update_available", "advertised_routes", "enabled_routes", "invalid_tags",
                     "self"):
            if name in device:
                hostvars["tailnet_" + name] = device[name]
        hostvars["tailnet_source"] = source
        ansible_host = self._ansible_host(device)
        if ansible_host:
            hostvars["ansible_host"] = ansible_host
        return hostvars

    def _groups(self, device):
        groups = []
        if self.get_option("tag_groups"):
            prefix = self.get_option("tag_group_prefix") or ""
            separator = self.get_option("tag_group_separator") if prefix else ""
            for tag in device["tags"]:
                name = tag[len("tag:"):] if tag.startswith("tag:") else tag
                groups.append(_group_name(prefix + separator + name))
        if self.get_option("status_groups") and device["online"] is not None:
            groups.append("online" if device["online"] else "offline")
        if self.get_option("os_groups") and device["os"]:
            groups.append(_group_name("os_" + device["os"].lower()))
        return groups

    def _populate(self, source, devices):
        strict = self.get_option("strict")
        # The device created first keeps its name, so a new device with a taken
        # name never renames a host that plays and host_vars already use.
        devices = sorted((d for d in devices if self._wanted(d)), key=_age)
        owners = {}
        for device in devices:
            name = self._key(device)
            folded = name.lower()
            if folded in owners:
                first = owners[folded]
                renamed = "%s_%s" % (name, device["node_id"] or device["id"])
                self.display.warning(
                    "tailscale inventory: devices %s and %s both have the host name %r (host_key=%s); the first "
                    "keeps it and the second is added as %r. Rename one of them, or use host_key=id."
                    % (first["node_id"] or first["id"], device["node_id"] or device["id"], name,
                       self.get_option("host_key"), renamed))
                name = renamed
                folded = name.lower()
            owners[folded] = device
            host = self.inventory.add_host(name)
            hostvars = self._hostvars(device, source)
            for variable, value in hostvars.items():
                self.inventory.set_variable(host, variable, value)
            for group in self._groups(device):
                group = self.inventory.add_group(group)
                self.inventory.add_child(group, host)
            # The host's own variables add inventory_hostname and friends, which
            # compose expressions commonly use.
            variables = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        source = self.get_option("source")
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        refresh_cache = self.get_option("cache") and not cache
        raw = None
        if use_cache:
            try:
                raw = self._cache[cache_key]
            except KeyError:
                refresh_cache = True
            else:
                if not isinstance(raw, dict) or raw.get("source") != source:
                    raw, refresh_cache = None, True
        if raw is None:
            raw = dict(self._fetch(source), source=source)
        if refresh_cache:
            self._cache[cache_key] = raw
        try:
            self._populate(source, self._devices(source, raw))
        except (KeyError, TypeError, AttributeError) as error:
            raise AnsibleParserError("tailscale inventory (%s): unexpected device data: %s"
                                     % (source, to_native(error)))
