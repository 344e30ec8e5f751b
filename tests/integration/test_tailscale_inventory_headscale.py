"""The tailscale inventory plugin against a real headscale 0.28 and a real tailscaled.

The fleet of the design is registered as headscale nodes with its tags (no
client behind them, so offline), plus one real tailscaled 1.94.1 in userspace
networking mode, tagged tag:controller, which the control plane reports online.
The plugin is run through ansible-inventory with source=headscale, and with
source=local against that tailscaled.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".cache" / "collections"

# The lab's hosts with their tags, and the groups the design expects of them, plus a
# controller tagged tag:controller (joined below).
FLEET = {name: variables["tailscale_tags"] for name, variables in yaml.safe_load(
    (REPO / "inventory/lab/hosts.yml").read_text())["all"]["children"]["lab_fleet"]["hosts"].items()}
EXPECTED_GROUPS = {group: set(hosts) for group, hosts in yaml.safe_load(
    (REPO / "tests/fixtures/fleet_groups.yml").read_text()).items() if group != "docker_hosts"}
EXPECTED_GROUPS["controller"] = {"ci-runner"}


def go_binary(name, version="1.94.1"):
    out = subprocess.run(["bash", str(REPO / "scripts" / "go-build.sh"), name, version], capture_output=True,
                         text=True, check=False, timeout=1800)
    if out.returncode != 0:
        pytest.fail("building %s %s failed: %s" % (name, version, out.stderr[-2000:]), pytrace=False)
    return out.stdout.strip().splitlines()[-1]


class Tailscaled:
    """A tailscaled in userspace networking mode with its own state dir and socket."""

    def __init__(self, headscale, hostname, tags):
        self.tailscaled = go_binary("tailscaled")
        self.tailscale = go_binary("tailscale")
        # Short: the socket path must stay under 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="tsd-")
        self.socket = os.path.join(self.dir, "tailscaled.sock")
        self.log = open(os.path.join(self.dir, "tailscaled.log"), "w")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [self.tailscaled, "--tun=userspace-networking", "--statedir=" + self.dir, "--socket=" + self.socket,
             "--port=0"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail("tailscaled did not start", pytrace=False)
            time.sleep(0.1)
        key = headscale.preauth_key(tags=tags)
        # The key goes on stdin, never on the command line.
        up = subprocess.run([self.tailscale, "--socket=" + self.socket, "up", "--login-server=" + headscale.url,
                             "--auth-key=file:/dev/stdin", "--hostname=" + hostname, "--timeout=60s"],
                            input=key, capture_output=True, text=True, timeout=90, check=False)
        if up.returncode != 0:
            self.stop()
            pytest.fail("tailscale up failed: %s" % up.stderr[-2000:], pytrace=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def fleet(headscale):
    headscale.reset_policy()
    headscale.delete_all_nodes()
    nodes = {name: headscale.create_node(name, headscale.user, tags=tags) for name, tags in FLEET.items()}
    client = Tailscaled(headscale, "ci-runner", ["tag:controller"])
    try:
        yield nodes, client
    finally:
        client.stop()
        headscale.delete_all_nodes()


def run_inventory(tmp_path, config, *args, env=None):
    path = tmp_path / "lab.tailscale.yml"
    path.write_text(json.dumps(dict({"plugin": "blackroad.infra.tailscale"}, **config)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TAILSCALE_", "HEADSCALE_", "ANSIBLE_"))}
    environ.update(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
                   ANSIBLE_INVENTORY_ENABLED="auto", ANSIBLE_NOCOLOR="1", **(env or {}))
    return subprocess.run(["ansible-inventory", "-i", str(path), *(args or ("--list",))], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=120, check=False)


def unwrap(value):
    return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else value


def listed(result):
    assert result.returncode == 0, result.stderr
    start = 0 if result.stdout.startswith("{") else result.stdout.find("\n{") + 1
    return json.loads(result.stdout[start:], object_hook=unwrap)


def members(data, group):
    found = set(data.get(group, {}).get("hosts", []))
    for child in data.get(group, {}).get("children", []):
        found |= members(data, child)
    return found


def headscale_config(headscale, **config):
    return dict({"source": "headscale", "api_base_url": headscale.url, "host_key": "machine_name"}, **config)


def test_fleet_groups_from_headscale_tags(fleet, headscale, tmp_path):
    data = listed(run_inventory(tmp_path, headscale_config(headscale), env={"HEADSCALE_API_KEY": headscale.api_key}))
    assert members(data, "all") == set(FLEET) | {"ci-runner"}
    for group, hosts in EXPECTED_GROUPS.items():
        assert members(data, group) == hosts, group
    # Online comes from headscale's own field: only the real client is connected.
    assert members(data, "online") == {"ci-runner"}
    assert members(data, "offline") == set(FLEET)


def test_fleet_hostvars(fleet, headscale, tmp_path):
    nodes, _client = fleet
    from headscale import BASE_DOMAIN  # pylint: disable=import-outside-toplevel
    data = listed(run_inventory(tmp_path, headscale_config(headscale, host_key="magicdns", base_domain=BASE_DOMAIN),
                                env={"HEADSCALE_API_KEY": headscale.api_key}))
    host = data["_meta"]["hostvars"]["pi5-alpha." + BASE_DOMAIN]
    node = nodes["pi5-alpha"]
    ipv4 = next(a for a in node["ipAddresses"] if ":" not in a)
    assert host["ansible_host"] == host["tailnet_ipv4"] == ipv4
    assert host["tailnet_id"] == str(node["id"])
    assert host["tailnet_dns_name"] == "pi5-alpha." + BASE_DOMAIN
    assert sorted(host["tailnet_tags"]) == ["tag:agent-pool", "tag:api-gateway"]
    assert host["tailnet_online"] is False and host["tailnet_source"] == "headscale"
    assert host["tailnet_user"] == "tagged-devices"
    runner = data["_meta"]["hostvars"]["ci-runner." + BASE_DOMAIN]
    assert runner["tailnet_online"] is True and runner["tailnet_tags"] == ["tag:controller"]
    assert runner["tailnet_ipv6"].startswith("fd7a:115c:a1e0:")


def test_graph_and_the_key_stays_secret(fleet, headscale, tmp_path):
    result = run_inventory(tmp_path, headscale_config(headscale), "--graph", "-vvv",
                           env={"HEADSCALE_API_KEY": headscale.api_key})
    assert result.returncode == 0, result.stderr
    assert "@agent_pool:" in result.stdout and "|--pi5-beta" in result.stdout
    assert headscale.api_key not in result.stdout + result.stderr


def test_same_hostname_twice_is_kept_twice_with_a_warning(fleet, headscale, tmp_path):
    first = headscale.create_node("twin", headscale.user, tags=["tag:health"])
    second = headscale.create_node("twin", headscale.user, tags=["tag:health"])
    try:
        result = run_inventory(tmp_path, headscale_config(headscale, host_key="hostname"),
                               env={"HEADSCALE_API_KEY": headscale.api_key})
        data = listed(result)
        assert members(data, "health") == {"pi0-epsilon", "twin", "twin_%s" % second["id"]}
        warning = " ".join(result.stderr.split())
        assert "devices %s and %s both have the host name 'twin'" % (first["id"], second["id"]) in warning
        # headscale itself keeps given names unique, so machine_name needs no rescue.
        data = listed(run_inventory(tmp_path, headscale_config(headscale),
                                    env={"HEADSCALE_API_KEY": headscale.api_key}))
        assert {"twin", second["givenName"]} <= members(data, "health")
    finally:
        headscale.delete_node(first["id"])
        headscale.delete_node(second["id"])


def test_bad_key_is_a_clear_error(fleet, headscale, tmp_path):
    result = run_inventory(tmp_path, headscale_config(headscale), env={"HEADSCALE_API_KEY": "hskey-api-nope-nope"})
    assert result.returncode != 0
    assert "HTTP 401" in result.stderr and "check api_key" in " ".join(result.stderr.split())


def test_local_source_reads_the_real_client(fleet, tmp_path):
    _nodes, client = fleet
    data = listed(run_inventory(tmp_path, {"source": "local", "tailscale_binary": client.tailscale,
                                           "tailscale_socket": client.socket, "host_key": "machine_name"}))
    # The baseline policy allows everything, so the client sees the whole fleet.
    assert members(data, "all") == set(FLEET) | {"ci-runner"}
    assert members(data, "controller") == {"ci-runner"}
    assert members(data, "agent_pool") == {"pi5-alpha", "pi5-beta"}
    assert data["_meta"]["hostvars"]["ci-runner"]["tailnet_self"] is True
    assert members(data, "online") >= {"ci-runner"}
    assert members(data, "os_linux") >= {"ci-runner"}
