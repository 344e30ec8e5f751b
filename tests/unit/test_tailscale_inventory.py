"""The blackroad.infra.tailscale inventory plugin, driven through the real ansible-inventory CLI.

The control server is FakeControl (test_tailscale_client.py): a real HTTP server
in this process serving the reference payloads of ../shared/reference/tailscale/
and headscale's node list in its 0.27 and 0.28 shapes. The local source runs a
stand-in ``tailscale`` program that prints a ``tailscale status --json`` document.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import stat
import subprocess
import sys
import textwrap

import pytest

from test_tailscale_client import API_KEY, CLIENT_ID, CLIENT_SECRET, HEADSCALE_KEY, FakeControl, free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".cache" / "collections"
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.blackroad.infra.plugins.inventory.tailscale import (  # noqa: E402
    device_from_headscale, device_from_tailscale, devices_from_status)

SECRETS = (API_KEY, CLIENT_SECRET, HEADSCALE_KEY)


def headscale_node_028(node_id, name, tags=(), online=True, user="fleet", ephemeral=False,
                       created="2026-11-27T02:57:26.574833185Z"):
    """A node as headscale 0.28 serves it (captured from a real server, keys shortened)."""
    return {
        "id": str(node_id), "machineKey": "mkey:%064x" % node_id, "nodeKey": "nodekey:%064x" % node_id,
        "discoKey": "discokey:%064x" % 0,
        "ipAddresses": ["100.64.0.%d" % node_id, "fd7a:115c:a1e0::%x" % node_id],
        "name": name,
        "user": ({"id": "2147455555", "name": "tagged-devices", "createdAt": "0001-01-01T00:00:00Z",
                  "displayName": "Tagged Devices", "email": "", "providerId": "", "provider": "",
                  "profilePicUrl": ""} if tags else
                 {"id": "1", "name": user, "createdAt": "2026-11-27T02:57:26.116910215Z", "displayName": "",
                  "email": "", "providerId": "", "provider": "", "profilePicUrl": ""}),
        "lastSeen": "2026-11-27T02:57:26.574624785Z",
        "expiry": "0001-01-01T00:00:00Z",
        "preAuthKey": {"user": None, "id": "3", "key": "", "reusable": False, "ephemeral": ephemeral,
                       "used": True, "expiration": "2026-11-28T00:00:00Z", "createdAt": created,
                       "aclTags": list(tags)} if ephemeral else None,
        "createdAt": created,
        "registerMethod": "REGISTER_METHOD_AUTH_KEY",
        "givenName": name,
        "online": online,
        "approvedRoutes": [], "availableRoutes": [], "subnetRoutes": [],
        "tags": list(tags),
    }


def headscale_node_027(node_id, name, forced=(), valid=(), invalid=(), online=True):
    """The same node as headscale 0.27 serves it: three tag lists and no ``tags``."""
    node = headscale_node_028(node_id, name, online=online)
    del node["tags"]
    node.update(forcedTags=list(forced), validTags=list(valid), invalidTags=list(invalid))
    return node


def local_status():
    """``tailscale status --json`` of a controller tagged tag:controller with two visible peers."""
    return {
        "Version": "1.94.1", "TUN": False, "BackendState": "Running", "AuthURL": "",
        "TailscaleIPs": ["100.64.0.9", "fd7a:115c:a1e0::9"],
        "Self": {"ID": "nSELF1CNTRL", "PublicKey": "nodekey:09", "HostName": "ci-runner",
                 "DNSName": "ci-runner.tailnet.test.", "OS": "linux", "UserID": 2147455555,
                 "TailscaleIPs": ["100.64.0.9", "fd7a:115c:a1e0::9"], "Tags": ["tag:controller"],
                 "Online": True, "Created": "2026-11-27T01:00:00Z", "LastSeen": "0001-01-01T00:00:00Z"},
        "MagicDNSSuffix": "tailnet.test",
        "CurrentTailnet": {"Name": "tailnet.test", "MagicDNSSuffix": "tailnet.test", "MagicDNSEnabled": True},
        "Peer": {
            "nodekey:01": {"ID": "nPEER1CNTRL", "PublicKey": "nodekey:01", "HostName": "pi5-alpha",
                           "DNSName": "pi5-alpha.tailnet.test.", "OS": "linux", "UserID": 2147455555,
                           "TailscaleIPs": ["100.64.0.1", "fd7a:115c:a1e0::1"],
                           "Tags": ["tag:agent-pool", "tag:api-gateway"], "Online": True,
                           "Created": "2026-11-27T00:00:00Z"},
            "nodekey:02": {"ID": "nPEER2CNTRL", "PublicKey": "nodekey:02", "HostName": "pi5-gamma",
                           "DNSName": "pi5-gamma.tailnet.test.", "OS": "linux", "UserID": 2147455555,
                           "TailscaleIPs": ["100.64.0.3", "fd7a:115c:a1e0::3"], "Tags": ["tag:database"],
                           "Online": False, "LastSeen": "2026-11-26T23:00:00Z",
                           "Created": "2026-11-27T00:00:01Z"},
            "nodekey:03": {"ID": "nSHARE1CNTRL", "PublicKey": "nodekey:03", "HostName": "friend",
                           "DNSName": "friend.other.ts.net.", "OS": "windows", "UserID": 77,
                           "TailscaleIPs": ["100.99.0.1"], "Online": True, "ShareeNode": True},
        },
        "User": {"2147455555": {"ID": 2147455555, "LoginName": "tagged-devices", "DisplayName": "Tagged Devices"},
                 "77": {"ID": 77, "LoginName": "friend@example.com", "DisplayName": "Friend"}},
    }


@pytest.fixture
def control():
    server = FakeControl()
    yield server
    server.close()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TAILSCALE_", "HEADSCALE_", "ANSIBLE_"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
               ANSIBLE_INVENTORY_ENABLED="auto", ANSIBLE_NOCOLOR="1")
    env.update(extra)
    return env


def unwrap_unsafe(value):
    """ansible-inventory --list marks values from an inventory plugin as unsafe (never
    templated): {"__ansible_unsafe": "text"}. The tests compare the text."""
    if set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


class Run:
    def __init__(self, result):
        self.rc = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.data = None
        # With -v, the version banner comes first on stdout.
        start = result.stdout.find("\n{") + 1 if not result.stdout.startswith("{") else 0
        if result.returncode == 0 and result.stdout[start:start + 1] == "{":
            self.data = json.loads(result.stdout[start:], object_hook=unwrap_unsafe)

    @property
    def hostvars(self):
        return self.data["_meta"]["hostvars"]

    def hosts(self, group="all"):
        found = set(self.data.get(group, {}).get("hosts", []))
        for child in self.data.get(group, {}).get("children", []):
            found |= self.hosts(child)
        return found

    def groups(self):
        return {name for name in self.data if name != "_meta"}

    @property
    def output(self):
        return self.stdout + self.stderr


def inventory(tmp_path, config, *args, env=None, name="tailscale.yml"):
    path = tmp_path / name
    path.write_text(json.dumps(dict({"plugin": "blackroad.infra.tailscale"}, **config)))
    result = subprocess.run(["ansible-inventory", "-i", str(path), *(args or ("--list",))], cwd=REPO,
                            env=clean_env(**(env or {})), capture_output=True, text=True, timeout=120, check=False)
    return Run(result)


def api(control, **config):
    return dict({"api_base_url": control.url, "request_timeout": 5, "oauth_token_cache": ""}, **config)


KEY_ENV = {"TAILSCALE_API_KEY": API_KEY}
REF_HOSTS = {"rpi5-01.tail1a2b3c.ts.net", "rpi5-02.tail1a2b3c.ts.net", "jetson-orin.tail1a2b3c.ts.net",
             "do-sfo3-01.tail1a2b3c.ts.net", "admin-macbook.tail1a2b3c.ts.net"}


# -- Tailscale API source ------------------------------------------------------------------

def test_reference_devices_become_hosts_groups_and_hostvars(control, tmp_path):
    run = inventory(tmp_path, api(control), env=KEY_ENV)
    assert run.rc == 0, run.stderr
    # The shared-in hello.ts.net device is someone else's: left out by default.
    assert run.hosts() == REF_HOSTS
    assert run.hosts("pi") == {"rpi5-01.tail1a2b3c.ts.net", "rpi5-02.tail1a2b3c.ts.net"}
    assert run.hosts("subnet_router") == {"rpi5-01.tail1a2b3c.ts.net"}
    assert run.hosts("exit_node") == {"do-sfo3-01.tail1a2b3c.ts.net"}
    assert run.hosts("offline") == {"rpi5-02.tail1a2b3c.ts.net"}
    assert run.hosts("online") == REF_HOSTS - {"rpi5-02.tail1a2b3c.ts.net"}
    assert run.hosts("os_macos") == {"admin-macbook.tail1a2b3c.ts.net"}
    assert run.hosts("os_linux") == REF_HOSTS - {"admin-macbook.tail1a2b3c.ts.net"}
    host = run.hostvars["rpi5-02.tail1a2b3c.ts.net"]
    assert host["ansible_host"] == "100.88.201.7"
    assert host["tailnet_id"] == "5081763390565678" and host["tailnet_node_id"] == "nR4tYp9CNTRL"
    assert host["tailnet_ipv6"] == "fd7a:115c:a1e0::2d01:c907"
    assert host["tailnet_dns_name"] == "rpi5-02.tail1a2b3c.ts.net"
    assert host["tailnet_hostname"] == "rpi5-02" and host["tailnet_machine_name"] == "rpi5-02"
    assert host["tailnet_tags"] == ["tag:homelab", "tag:pi"]
    assert host["tailnet_online"] is False and host["tailnet_last_seen"] == "2026-08-20T03:12:44Z"
    assert host["tailnet_os"] == "linux" and host["tailnet_user"] == "admin@example.com"
    assert host["tailnet_ephemeral"] is False and host["tailnet_external"] is False
    assert host["tailnet_client_version"] == "1.102.3-t0a1b2c3d4-g5e6f7a8b9"
    assert host["tailnet_source"] == "tailscale"
    assert run.hostvars["admin-macbook.tail1a2b3c.ts.net"]["tailnet_key_expiry"] == "2026-07-14T20:11:02Z"
    request = control.requests_to("/api/v2/tailnet/-/devices")[0]
    assert request["query"] == "fields=all"
    assert all(secret not in run.output for secret in SECRETS)


def test_filters(control, tmp_path):
    control.devices[0]["isEphemeral"] = True
    run = inventory(tmp_path, api(control, include_external=True, include_offline=False,
                                  include_ephemeral=False), env=KEY_ENV)
    assert run.rc == 0, run.stderr
    assert run.hosts() == {"jetson-orin.tail1a2b3c.ts.net", "do-sfo3-01.tail1a2b3c.ts.net",
                           "admin-macbook.tail1a2b3c.ts.net"}
    # hello.ts.net is external and offline: include_external alone is not enough here.
    run = inventory(tmp_path, api(control, include_external=True), env=KEY_ENV)
    assert "hello.ts.net" in run.hosts() and run.hostvars["hello.ts.net"]["tailnet_external"] is True
    assert run.hostvars["rpi5-01.tail1a2b3c.ts.net"]["tailnet_ephemeral"] is True


def test_tag_groups_are_configurable(control, tmp_path):
    control.devices[0]["tags"] = ["tag:agent-pool", "tag:api.gateway"]
    run = inventory(tmp_path, api(control, tag_group_prefix="tag"), env=KEY_ENV)
    assert run.hosts("tag_agent_pool") == run.hosts("tag_api_gateway") == {"rpi5-01.tail1a2b3c.ts.net"}
    assert "agent_pool" not in run.groups()
    run = inventory(tmp_path, api(control, tag_group_prefix="ts", tag_group_separator="__"), env=KEY_ENV)
    assert run.hosts("ts__agent_pool") == {"rpi5-01.tail1a2b3c.ts.net"}
    run = inventory(tmp_path, api(control, tag_groups=False, status_groups=False, os_groups=False), env=KEY_ENV)
    assert run.groups() == {"all", "ungrouped"}


@pytest.mark.parametrize("source, expected", [
    ("ipv4", "100.101.12.34"),
    ("ipv6", "fd7a:115c:a1e0::8a01:c22"),
    ("magicdns", "rpi5-01.tail1a2b3c.ts.net"),
])
def test_ansible_host_source(control, tmp_path, source, expected):
    control.devices[0]["name"] = "rpi5-01.tail1a2b3c.ts.net."  # a trailing dot never reaches ansible_host
    run = inventory(tmp_path, api(control, ansible_host_source=source, host_key="id"), env=KEY_ENV)
    assert run.hostvars["nQ7bXk2CNTRL"]["ansible_host"] == expected


def test_ipv6_falls_back_to_ipv4_for_a_v4_only_device(control, tmp_path):
    control.devices[0]["addresses"] = ["100.101.12.34"]
    run = inventory(tmp_path, api(control, ansible_host_source="ipv6", host_key="machine_name"), env=KEY_ENV)
    assert run.hostvars["rpi5-01"]["ansible_host"] == "100.101.12.34"
    assert run.hostvars["rpi5-01"]["tailnet_ipv6"] is None


def test_host_key_choices(control, tmp_path):
    by_id = inventory(tmp_path, api(control, host_key="id"), env=KEY_ENV)
    assert "nJ3sWm6CNTRL" in by_id.hosts()
    by_hostname = inventory(tmp_path, api(control, host_key="hostname"), env=KEY_ENV)
    assert "Admins-MacBook-Pro" in by_hostname.hosts()
    by_machine = inventory(tmp_path, api(control, host_key="machine_name"), env=KEY_ENV)
    assert by_machine.hosts() == {"rpi5-01", "rpi5-02", "jetson-orin", "do-sfo3-01", "admin-macbook"}


def test_colliding_devices_are_both_kept_with_a_loud_warning(control, tmp_path):
    twin = copy.deepcopy(control.devices[0])
    twin.update(id="5081763390599999", nodeId="nTWIN99CNTRL", name="rpi5-01-1.tail1a2b3c.ts.net",
                created="2026-06-01T00:00:00Z", addresses=["100.101.99.99"])
    # The newer device comes first in the answer: order must not decide who keeps the name.
    control.devices.insert(0, twin)
    run = inventory(tmp_path, api(control, host_key="hostname"), env=KEY_ENV)
    assert run.rc == 0, run.stderr
    assert {"rpi5-01", "rpi5-01_nTWIN99CNTRL"} <= run.hosts()
    assert run.hostvars["rpi5-01"]["tailnet_node_id"] == "nQ7bXk2CNTRL"
    assert run.hostvars["rpi5-01_nTWIN99CNTRL"]["ansible_host"] == "100.101.99.99"
    warning = " ".join(run.stderr.split())
    assert "[WARNING]" in run.stderr and "nQ7bXk2CNTRL" in warning and "nTWIN99CNTRL" in warning
    assert "'rpi5-01'" in warning
    assert run.hosts("pi") == {"rpi5-01", "rpi5-01_nTWIN99CNTRL", "rpi5-02"}


def test_names_differing_only_in_case_collide(control, tmp_path):
    control.devices[1]["hostname"] = "RPI5-01"
    run = inventory(tmp_path, api(control, host_key="hostname"), env=KEY_ENV)
    assert {"rpi5-01", "RPI5-01_nR4tYp9CNTRL"} <= run.hosts()
    assert "both have the host name" in " ".join(run.stderr.split())


def test_constructable_options(control, tmp_path):
    config = api(control, host_key="machine_name", compose={"ansible_user": "'pi' if 'tag:pi' in tailnet_tags "
                                                                            "else 'admin'",
                                                            "ansible_host": "tailnet_dns_name",
                                                            "container": "'lab-' ~ inventory_hostname"},
                 groups={"needs_update": "tailnet_update_available"},
                 keyed_groups=[{"key": "tailnet_client_version.split('-')[0]", "prefix": "client"}])
    run = inventory(tmp_path, config, env=KEY_ENV)
    assert run.rc == 0, run.stderr
    assert run.hostvars["rpi5-01"]["ansible_user"] == "pi"
    assert run.hostvars["jetson-orin"]["ansible_user"] == "admin"
    assert run.hostvars["jetson-orin"]["ansible_host"] == "jetson-orin.tail1a2b3c.ts.net"
    assert run.hostvars["jetson-orin"]["container"] == "lab-jetson-orin"
    assert run.hosts("needs_update") == {"jetson-orin"}
    assert run.hosts("client_1_100_0") == {"jetson-orin"}


def test_strict_makes_a_bad_compose_fail(control, tmp_path):
    config = api(control, compose={"broken": "tailscale_no_such_var.x"})
    assert inventory(tmp_path, config, env=KEY_ENV).rc == 0
    run = inventory(tmp_path, dict(config, strict=True), env=KEY_ENV)
    assert run.rc != 0 and "broken" in run.stderr


def test_oauth_token_is_cached_between_runs_in_a_private_file(control, tmp_path):
    token_file = tmp_path / "state" / "token.json"
    config = api(control, oauth_client_id=CLIENT_ID, oauth_scope="devices:core:read",
                 oauth_token_cache=str(token_file))
    env = {"TAILSCALE_OAUTH_CLIENT_SECRET": CLIENT_SECRET}
    for _attempt in range(2):
        run = inventory(tmp_path, config, "--list", "-vvv", env=env)
        assert run.rc == 0, run.stderr
        assert run.hosts() == REF_HOSTS
        assert all(secret not in run.output for secret in SECRETS)
        assert all(token not in run.output for token in control.tokens)
    assert len(control.exchanges) == 1 and control.exchanges[0]["scope"] == "devices:core:read"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # An expired token in the file is exchanged again.
    data = json.loads(token_file.read_text())
    data["expires_at"] = 0
    token_file.write_text(json.dumps(data))
    assert inventory(tmp_path, config, env=env).rc == 0
    assert len(control.exchanges) == 2


def test_secret_files(control, tmp_path):
    key_file = tmp_path / "api_key"
    key_file.write_text(API_KEY + "\n")
    run = inventory(tmp_path, api(control, api_key_file=str(key_file)))
    assert run.rc == 0, run.stderr
    secret_file = tmp_path / "secret"
    secret_file.write_text(CLIENT_SECRET)
    run = inventory(tmp_path, api(control, oauth_client_id=CLIENT_ID, oauth_client_secret_file=str(secret_file)))
    assert run.rc == 0, run.stderr and len(control.exchanges) == 1
    run = inventory(tmp_path, api(control, api_key_file=str(tmp_path / "missing")))
    assert run.rc != 0 and "cannot read api_key_file" in run.stderr


@pytest.mark.parametrize("setup, config, words", [
    (lambda c: c.api_keys.clear(), {}, "HTTP 401 (not authenticated: check api_key/oauth credentials"),
    (lambda c: None, {"tailnet": "example.org"}, "HTTP 404 (not found: wrong tailnet? (tailnet 'example.org'"),
    (lambda c: c.fail(500, path="/api/v2/tailnet", count=99), {"max_retries": 2},
     "HTTP 500 (server error) after 3 attempts"),
])
def test_errors_are_clear_and_never_show_the_key(control, tmp_path, setup, config, words):
    setup(control)
    run = inventory(tmp_path, api(control, **config), "--list", "-vvv", env=KEY_ENV)
    assert run.rc != 0
    assert words in " ".join(run.stderr.split())
    assert API_KEY not in run.output


def test_unreachable_server(tmp_path):
    url = "http://127.0.0.1:%d" % free_port()
    run = inventory(tmp_path, {"api_base_url": url, "max_retries": 1, "oauth_token_cache": ""}, env=KEY_ENV)
    assert run.rc != 0 and "cannot reach %s" % url in " ".join(run.stderr.split())


def test_server_errors_are_retried_then_the_inventory_builds(control, tmp_path):
    control.fail(503, path="/api/v2/tailnet", count=2, headers={"Retry-After": "0"})
    run = inventory(tmp_path, api(control), env=KEY_ENV)
    assert run.rc == 0, run.stderr
    assert run.hosts() == REF_HOSTS and len(control.requests) == 3


def test_no_credentials(control, tmp_path):
    run = inventory(tmp_path, api(control))
    assert run.rc != 0 and "no credentials" in run.stderr and control.requests == []


def test_cache_serves_the_second_run_and_flush_refetches(control, tmp_path):
    config = api(control, cache=True, cache_plugin="ansible.builtin.jsonfile",
                 cache_connection=str(tmp_path / "cache"), cache_timeout=600)
    first = inventory(tmp_path, config, env=KEY_ENV)
    assert first.rc == 0, first.stderr
    second = inventory(tmp_path, config, env=KEY_ENV)
    assert second.data == first.data
    assert len(control.requests) == 1
    # A cached inventory does not need the credentials either.
    assert inventory(tmp_path, config).data == first.data
    assert len(control.requests) == 1
    flushed = inventory(tmp_path, config, "--list", "--flush-cache", env=KEY_ENV)
    assert flushed.rc == 0 and len(control.requests) == 2
    # Options apply to cached devices: the cache holds the answer, not the hosts.
    regrouped = inventory(tmp_path, dict(config, tag_group_prefix="tag"), env=KEY_ENV)
    assert "tag_pi" in regrouped.groups() and len(control.requests) == 2


def test_only_files_named_tailscale_yml_are_read(control, tmp_path):
    run = inventory(tmp_path, api(control), env=KEY_ENV, name="devices.yml")
    assert run.rc != 0
    run = inventory(tmp_path, api(control), env=KEY_ENV, name="prod.tailscale.yaml")
    assert run.rc == 0, run.stderr


# -- headscale source ----------------------------------------------------------------------

def headscale_config(control, **config):
    return dict({"source": "headscale", "api_base_url": control.url, "request_timeout": 5}, **config)


HS_ENV = {"HEADSCALE_API_KEY": HEADSCALE_KEY}


def test_headscale_028_tags(control, tmp_path):
    control.nodes = [headscale_node_028(1, "pi5-alpha", ["tag:agent-pool", "tag:api-gateway"]),
                     headscale_node_028(2, "pi5-gamma", ["tag:database"], online=False),
                     headscale_node_028(3, "laptop", user="alice", ephemeral=True)]
    run = inventory(tmp_path, headscale_config(control, base_domain="tailnet.test"), env=HS_ENV)
    assert run.rc == 0, run.stderr
    assert run.hosts() == {"pi5-alpha.tailnet.test", "pi5-gamma.tailnet.test", "laptop.tailnet.test"}
    assert run.hosts("agent_pool") == run.hosts("api_gateway") == {"pi5-alpha.tailnet.test"}
    assert run.hosts("database") == run.hosts("offline") == {"pi5-gamma.tailnet.test"}
    assert run.hosts("online") == {"pi5-alpha.tailnet.test", "laptop.tailnet.test"}
    alpha = run.hostvars["pi5-alpha.tailnet.test"]
    assert alpha["ansible_host"] == "100.64.0.1" and alpha["tailnet_id"] == "1"
    assert alpha["tailnet_dns_name"] == "pi5-alpha.tailnet.test" and alpha["tailnet_os"] is None
    assert alpha["tailnet_user"] == "tagged-devices" and alpha["tailnet_key_expiry"] is None
    assert run.hostvars["laptop.tailnet.test"]["tailnet_ephemeral"] is True
    assert run.hostvars["laptop.tailnet.test"]["tailnet_user"] == "alice"
    assert control.requests[0]["authorization"] == "Bearer " + HEADSCALE_KEY
    assert control.requests[0]["path"] == "/api/v1/node"
    without_ephemeral = inventory(tmp_path, headscale_config(control, include_ephemeral=False,
                                                             host_key="machine_name"), env=HS_ENV)
    assert without_ephemeral.hosts() == {"pi5-alpha", "pi5-gamma"}


def test_headscale_027_tag_fields(control, tmp_path):
    control.nodes = [headscale_node_027(1, "pi5-alpha", forced=["tag:agent-pool"], valid=["tag:api-gateway"],
                                        invalid=["tag:database"]),
                     headscale_node_027(2, "pi5-beta", valid=["tag:agent-pool"])]
    run = inventory(tmp_path, headscale_config(control), env=HS_ENV)
    assert run.rc == 0, run.stderr
    # No base_domain: the MagicDNS name is the bare given name.
    assert run.hosts("agent_pool") == {"pi5-alpha", "pi5-beta"}
    assert run.hosts("api_gateway") == {"pi5-alpha"}
    assert "database" not in run.groups()  # a tag the policy refused is not the node's
    alpha = run.hostvars["pi5-alpha"]
    assert alpha["tailnet_tags"] == ["tag:agent-pool", "tag:api-gateway"]
    assert alpha["tailnet_invalid_tags"] == ["tag:database"]


def test_headscale_needs_its_url_and_a_valid_key(control, tmp_path):
    run = inventory(tmp_path, {"source": "headscale"}, env=HS_ENV)
    assert run.rc != 0 and "needs api_base_url" in run.stderr
    run = inventory(tmp_path, headscale_config(control), env={"HEADSCALE_API_KEY": "hskey-api-wrong"})
    assert run.rc != 0 and "HTTP 401" in run.stderr and "check api_key" in " ".join(run.stderr.split())


def test_headscale_collision_of_hostnames(control, tmp_path):
    control.nodes = [headscale_node_028(1, "raspberrypi", ["tag:health"]),
                     headscale_node_028(2, "raspberrypi", ["tag:health"], created="2026-11-28T00:00:00Z")]
    control.nodes[1]["givenName"] = "raspberrypi-ab12cd"
    run = inventory(tmp_path, headscale_config(control, host_key="hostname"), env=HS_ENV)
    assert run.hosts("health") == {"raspberrypi", "raspberrypi_2"}
    assert "devices 1 and 2" in " ".join(run.stderr.split())


# -- local source --------------------------------------------------------------------------

@pytest.fixture
def fake_tailscale(tmp_path):
    """A ``tailscale`` stand-in: prints status.json, records its arguments."""
    status = tmp_path / "status.json"
    status.write_text(json.dumps(local_status()))
    program = tmp_path / "tailscale"
    program.write_text(textwrap.dedent("""\
        #!%s
        import sys, pathlib
        here = pathlib.Path(__file__).parent
        (here / "argv.json").write_text(__import__("json").dumps(sys.argv[1:]))
        if (here / "fail").exists():
            sys.stderr.write("failed to connect to local tailscaled; it doesn't appear to be running\\n")
            sys.exit(1)
        sys.stdout.write((here / "status.json").read_text())
        """ % sys.executable))
    program.chmod(0o755)
    return program


def test_local_status_self_and_peers(fake_tailscale, tmp_path):
    run = inventory(tmp_path, {"source": "local", "tailscale_binary": str(fake_tailscale),
                               "tailscale_socket": "/run/test/tailscaled.sock", "host_key": "machine_name"})
    assert run.rc == 0, run.stderr
    assert run.hosts() == {"ci-runner", "pi5-alpha", "pi5-gamma"}
    assert run.hosts("controller") == {"ci-runner"} and run.hosts("offline") == {"pi5-gamma"}
    assert run.hosts("agent_pool") == {"pi5-alpha"}
    assert run.hostvars["ci-runner"]["tailnet_self"] is True
    assert run.hostvars["pi5-alpha"]["tailnet_dns_name"] == "pi5-alpha.tailnet.test"
    assert run.hostvars["pi5-alpha"]["tailnet_user"] == "tagged-devices"
    assert run.hostvars["pi5-alpha"]["tailnet_ephemeral"] is None
    assert run.hostvars["pi5-gamma"]["tailnet_last_seen"] == "2026-11-26T23:00:00Z"
    assert run.hostvars["ci-runner"]["tailnet_last_seen"] is None
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["--socket=/run/test/tailscaled.sock", "status", "--json"]
    run = inventory(tmp_path, {"source": "local", "tailscale_binary": str(fake_tailscale), "include_self": False,
                               "include_external": True})
    assert run.hosts() == {"pi5-alpha.tailnet.test", "pi5-gamma.tailnet.test", "friend.other.ts.net"}
    assert run.hostvars["friend.other.ts.net"]["tailnet_user"] == "friend@example.com"


def test_local_errors(fake_tailscale, tmp_path):
    (tmp_path / "fail").write_text("")
    run = inventory(tmp_path, {"source": "local", "tailscale_binary": str(fake_tailscale)})
    assert run.rc != 0 and "doesn't appear to be running" in run.stderr
    run = inventory(tmp_path, {"source": "local", "tailscale_binary": str(tmp_path / "nope")})
    assert run.rc != 0 and "cannot run" in run.stderr


def test_local_not_running_warns(fake_tailscale, tmp_path):
    status = local_status()
    status["BackendState"] = "NeedsLogin"
    (tmp_path / "status.json").write_text(json.dumps(status))
    run = inventory(tmp_path, {"source": "local", "tailscale_binary": str(fake_tailscale)})
    assert run.rc == 0 and "tailscaled is NeedsLogin" in " ".join(run.stderr.split())


# -- record builders (no CLI) --------------------------------------------------------------

def test_headscale_records_agree_across_versions():
    new = device_from_headscale(headscale_node_028(1, "n", ["tag:a", "tag:b"]), "Tail.Test.")
    old = device_from_headscale(headscale_node_027(1, "n", forced=["tag:a"], valid=["tag:a", "tag:b"]), "Tail.Test.")
    assert new["tags"] == old["tags"] == ["tag:a", "tag:b"]
    assert new["dns_name"] == "n.tail.test"
    assert old["user"] == "fleet" and new["user"] == "tagged-devices"


def test_tailscale_record_without_connection_field_is_neither_online_nor_offline():
    raw = {"id": "1", "addresses": ["100.64.0.1"], "name": "a.ts.net.", "hostname": "a"}
    device = device_from_tailscale(raw)
    assert device["online"] is None and device["dns_name"] == "a.ts.net" and device["ipv6"] is None


def test_status_without_peers():
    devices = devices_from_status({"Self": local_status()["Self"], "Peer": None, "User": None})
    assert [d["machine_name"] for d in devices] == ["ci-runner"]


def test_device_data_is_never_templated(control, tmp_path):
    control.devices[0]["hostname"] = "{{ 6 * 7 }}"
    control.devices[0]["tags"] = ["tag:{{ lookup('env', 'HOME') }}"]
    run = inventory(tmp_path, api(control, host_key="id", compose={"label": "tailnet_hostname ~ '!'"}), env=KEY_ENV)
    assert run.rc == 0, run.stderr
    host = run.hostvars["nQ7bXk2CNTRL"]
    assert host["tailnet_hostname"] == "{{ 6 * 7 }}" and host["label"] == "{{ 6 * 7 }}!"
    assert host["tailnet_tags"] == ["tag:{{ lookup('env', 'HOME') }}"]


def test_each_source_prefers_its_own_key_variable(control, tmp_path):
    control.nodes = [headscale_node_028(1, "pi5-alpha", ["tag:agent-pool"])]
    both = {"HEADSCALE_API_KEY": HEADSCALE_KEY, "TAILSCALE_API_KEY": API_KEY}
    assert inventory(tmp_path, headscale_config(control), env=both).hosts() == {"pi5-alpha"}
    assert inventory(tmp_path, api(control), env=both).hosts() == REF_HOSTS
    # A headscale key is never sent to a Tailscale API.
    run = inventory(tmp_path, api(control), env={"HEADSCALE_API_KEY": HEADSCALE_KEY})
    assert run.rc != 0 and "no credentials" in run.stderr
    assert all(HEADSCALE_KEY not in (r["authorization"] or "") for r in control.requests_to("/api/v2"))
