"""The lab's tailnet inventory source (inventory/lab/tailnet.tailscale.yml) on a real headscale.

The lab's hosts are registered with the tags hosts.yml gives them; the lab's own plugin
config, pointed at this headscale, must then put each host in the design's groups and
reach it in its container.
"""

import json
import pathlib
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_GROUPS = {group: set(hosts) for group, hosts in
                   yaml.safe_load((REPO / "tests/fixtures/fleet_groups.yml").read_text()).items()}


def plain(value):
    """ansible-inventory wraps values from the control server as unsafe in its JSON."""
    return value["__ansible_unsafe"] if isinstance(value, dict) else value


def test_lab_config_builds_the_design_groups(headscale, tmp_path):
    hosts = yaml.safe_load((REPO / "inventory/lab/hosts.yml").read_text())["all"]["children"]["lab_fleet"]["hosts"]
    headscale.delete_all_nodes()
    try:
        for name, variables in hosts.items():
            headscale.create_node(name, tags=variables["tailscale_tags"])
        config = yaml.safe_load((REPO / "inventory/lab/tailnet.tailscale.yml").read_text())
        key_file = tmp_path / "api-key"
        key_file.write_text(headscale.api_key)
        key_file.chmod(0o600)
        config.update(api_base_url=headscale.url, api_key_file=str(key_file))
        source = tmp_path / "tailnet.tailscale.yml"
        source.write_text(yaml.safe_dump(config))

        out = subprocess.run(["ansible-inventory", "-i", str(source), "--list"], cwd=REPO,
                             check=True, capture_output=True, text=True)
        inventory = json.loads(out.stdout)
        for group, members in EXPECTED_GROUPS.items():
            assert set(inventory.get(group, {}).get("hosts", [])) == members, group
        hostvars = inventory["_meta"]["hostvars"]
        assert set(hostvars) == set(hosts)
        for name in hosts:
            assert plain(hostvars[name]["ansible_host"]) == "blackroad-lab-" + name
            assert plain(hostvars[name]["tailnet_ipv4"]).startswith("100.")
        assert "WARNING" not in out.stderr, out.stderr
    finally:
        headscale.delete_all_nodes()
