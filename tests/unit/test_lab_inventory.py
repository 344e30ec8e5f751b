"""The lab inventory describes the fleet of the design card.

hosts.yml only lists the hosts and the tags they join the tailnet with; the
groups come from those tags through the tailnet plugin
(tests/integration/test_lab_tailnet_inventory.py runs that part against a real
headscale). Here: the bootstrap file alone, read by ansible-inventory.
"""

import json
import pathlib
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]

# The design's groups, as the plugin derives them from tags (tag:agent-pool ->
# agent_pool) plus the lab config's constructed docker_hosts group.
EXPECTED_GROUPS = {group: set(hosts) for group, hosts in
                   yaml.safe_load((REPO / "tests/fixtures/fleet_groups.yml").read_text()).items()}


@pytest.fixture(scope="module")
def inventory():
    out = subprocess.run(
        ["ansible-inventory", "-i", str(REPO / "inventory" / "lab" / "hosts.yml"), "--list"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_seven_hosts(inventory):
    assert set(inventory["lab_fleet"]["hosts"]) == {
        "pi5-alpha", "pi5-beta", "pi5-gamma", "pi400-delta", "pi0-epsilon",
        "jetson-prime", "droplet-failover"}


def tag_groups(inventory):
    groups = {}
    for host, variables in inventory["_meta"]["hostvars"].items():
        for tag in variables["tailscale_tags"]:
            assert tag.startswith("tag:"), (host, tag)
            groups.setdefault(tag[4:].replace("-", "_"), set()).add(host)
    return groups


@pytest.mark.parametrize("group", sorted(set(EXPECTED_GROUPS) - {"docker_hosts"}))
def test_tags_give_the_design_groups(inventory, group):
    assert tag_groups(inventory)[group] == EXPECTED_GROUPS[group]


def test_no_static_group_but_the_bootstrap_one(inventory):
    """Groups by role come from the tailnet, never from a hand-kept list."""
    assert set(inventory["all"]["children"]) <= {"ungrouped", "lab_fleet"}


def test_docker_hosts_are_the_agent_pool(inventory):
    hostvars = inventory["_meta"]["hostvars"]
    marked = {host for host, variables in hostvars.items() if variables.get("lab_docker_host")}
    assert marked == EXPECTED_GROUPS["docker_hosts"] == tag_groups(inventory)["agent_pool"]


def test_each_host_is_reached_in_its_own_container():
    """Rendered host variables (ansible -m debug renders the templates)."""
    for host, caps in (("pi5-alpha", {"SYS_ADMIN", "NET_ADMIN", "NET_RAW", "MKNOD"}),
                       ("pi5-gamma", {"SYS_ADMIN", "NET_ADMIN"})):
        out = subprocess.run(
            ["ansible", "-i", str(REPO / "inventory" / "lab" / "hosts.yml"), host, "-m", "ansible.builtin.debug",
             "-a", "msg={{ [ansible_connection, ansible_host, lab_capabilities] | to_json }}", "-o"],
            cwd=REPO, check=True, capture_output=True, text=True).stdout
        # -o prints `host | SUCCESS => {"changed": false, "msg": "<the JSON above>"}`
        message = json.loads(out.split(" => ", 1)[1])["msg"]
        connection, address, capabilities = json.loads(message)
        assert connection == "community.docker.docker"
        assert address == "blackroad-lab-" + host
        assert set(capabilities) == caps
