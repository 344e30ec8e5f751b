"""The lab inventory describes the fleet of the design card."""

import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

EXPECTED_GROUPS = {
    "agent_pool": {"pi5-alpha", "pi5-beta"},
    "api_gateway": {"pi5-alpha"},
    "database": {"pi5-gamma"},
    "monitoring": {"pi400-delta"},
    "health": {"pi0-epsilon"},
    "llm": {"jetson-prime"},
    "failover": {"droplet-failover"},
    "docker_hosts": {"pi5-alpha", "pi5-beta"},
}


@pytest.fixture(scope="module")
def inventory():
    out = subprocess.run(
        ["ansible-inventory", "-i", str(REPO / "inventory" / "lab"), "--list"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def hosts_of(inventory, group):
    hosts = set(inventory.get(group, {}).get("hosts", []))
    for child in inventory.get(group, {}).get("children", []):
        hosts |= hosts_of(inventory, child)
    return hosts


def test_seven_hosts(inventory):
    assert hosts_of(inventory, "all") == {
        "pi5-alpha", "pi5-beta", "pi5-gamma", "pi400-delta", "pi0-epsilon",
        "jetson-prime", "droplet-failover"}


@pytest.mark.parametrize("group", sorted(EXPECTED_GROUPS))
def test_groups_match_the_design(inventory, group):
    assert hosts_of(inventory, group) == EXPECTED_GROUPS[group]


def test_each_host_is_reached_in_its_own_container(inventory):
    hostvars = inventory["_meta"]["hostvars"]
    for name, variables in hostvars.items():
        assert variables["ansible_connection"] == "community.docker.docker"
        # ansible_host is templated; the raw value names the host.
        assert "inventory_hostname" in variables["ansible_host"]
    docker_caps = set(hostvars["pi5-alpha"]["lab_capabilities"])
    assert {"NET_RAW", "MKNOD"} <= docker_caps
    assert "MKNOD" not in hostvars["pi5-gamma"]["lab_capabilities"]
