"""Behaviour of a host converged by the headscale role (offline, embedded DERP)."""

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CLI = "headscale --config /etc/headscale/config.yaml"
SECRETS = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "headscale"
# Second verify run: side_effect.yml changed the servers key's tags and
# deleted the API key file, then re-ran the role.
AFTER_SIDE_EFFECT = (SECRETS / "side-effect").exists()


def cli_json(host, *args):
    return json.loads(host.check_output(f"{CLI} {' '.join(args)} --output json") or "null") or []


@pytest.fixture(scope="module")
def base_url(host):
    """The REST API as the controller reaches it (the instance's network address)."""
    address = next(a for a in host.interface("eth0").addresses if ":" not in a)
    return f"http://{address}:8080"


def get(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_service_runs_as_its_own_user(host):
    service = host.service("headscale")
    assert service.is_running
    assert service.is_enabled
    user = host.check_output("ps -o user= -C headscale").split()
    assert user and set(user) == {"headscale"}


def test_unit_is_sandboxed(host):
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show headscale -p User -p NoNewPrivileges -p ProtectSystem"
        " -p ReadWritePaths -p CapabilityBoundingSet -p PrivateTmp").splitlines())
    assert props["User"] == "headscale"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ReadWritePaths"] == "/var/lib/headscale"
    assert props["CapabilityBoundingSet"] == ""
    assert props["PrivateTmp"] == "yes"


def test_files_and_modes(host):
    config = host.file("/etc/headscale/config.yaml")
    assert (config.user, config.group, config.mode) == ("root", "headscale", 0o640)
    confdir = host.file("/etc/headscale")
    assert (confdir.user, confdir.group, confdir.mode) == ("root", "headscale", 0o750)
    data = host.file("/var/lib/headscale")
    assert (data.user, data.mode) == ("headscale", 0o750)
    for state in ("noise_private.key", "derp_server_private.key", "db.sqlite"):
        item = host.file(f"/var/lib/headscale/{state}")
        assert item.user == "headscale", state
    assert host.file("/var/lib/headscale/noise_private.key").mode == 0o600
    # The service user cannot rewrite its own config or binary.
    assert host.run("runuser -u headscale -- test -w /etc/headscale/config.yaml").rc != 0
    assert host.file("/usr/local/bin/headscale").user == "root"


def test_listens_where_configured(host):
    assert host.socket("tcp://0.0.0.0:8080").is_listening
    assert host.socket("tcp://127.0.0.1:9090").is_listening
    assert host.socket("udp://0.0.0.0:3478").is_listening
    assert not host.socket("tcp://0.0.0.0:9090").is_listening
    # Without TLS (and grpc_allow_insecure) gRPC stays on the unix socket.
    assert not host.socket("tcp://127.0.0.1:50443").is_listening
    assert host.socket("unix:///run/headscale/headscale.sock").is_listening


def test_reachable_with_embedded_derp(base_url):
    assert get(base_url + "/health")[0] == 200
    # The relay answers on server_url's port: nodes need no internet DERP.
    assert get(base_url + "/derp/probe")[0] == 200


def test_user_exists(host):
    assert "fleet" in [u["name"] for u in cli_json(host, "users", "list")]


def key_files():
    return {p.name: p for p in (SECRETS / "preauth").iterdir()}


def server_key(host, path):
    """The server's entry for the key in a controller file (found by its public prefix)."""
    display = path.read_text().strip()[:24] + "***"
    return next((k for k in cli_json(host, "preauthkeys", "list") if k["key"] == display), None)


def test_preauth_key_files_are_private_and_match_server(host):
    files = key_files()
    assert sorted(files) == ["fleet-once", "servers"]
    for path in files.values():
        assert path.stat().st_mode & 0o777 == 0o600
        assert re.fullmatch(r"hskey-auth-[A-Za-z0-9_-]{12}-\S+", path.read_text().strip())
        assert server_key(host, path), path.name
    servers = server_key(host, files["servers"])
    wanted_tags = ["tag:agent-pool"] if AFTER_SIDE_EFFECT else ["tag:agent-pool", "tag:database"]
    assert sorted(servers["acl_tags"]) == wanted_tags
    assert servers.get("reusable") is True
    once = server_key(host, files["fleet-once"])
    assert once["user"]["name"] == "fleet"
    assert not once.get("reusable")
    assert not once.get("acl_tags")


def test_keys_are_minted_only_when_needed(host):
    """check, converge and idempotence: one key per entry and one API key.
    After the side effect: one more of each, and the replaced pre-auth key
    can no longer join anything."""
    keys = cli_json(host, "preauthkeys", "list")
    api_keys = cli_json(host, "apikeys", "list")
    if not AFTER_SIDE_EFFECT:
        assert len(keys) == 2
        assert len(api_keys) == 1
        return
    assert len(keys) == 3
    assert len(api_keys) == 2
    now = int(host.check_output("date +%s"))
    live = {k["key"] for k in keys if k["expiration"]["seconds"] > now}
    files = key_files()
    assert live == {files[name].read_text()[:24] + "***" for name in ("servers", "fleet-once")}


def test_api_key_works_and_is_private(host, base_url):
    path = SECRETS / "api-key"
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    status, body = get(base_url + "/api/v1/user", token)
    assert status == 200, body
    assert "fleet" in [u["name"] for u in json.loads(body)["users"]]
    assert get(base_url + "/api/v1/user", token[:-4] + "xxxx")[0] == 401
    assert get(base_url + "/api/v1/user")[0] == 401


def test_configtest_rejects_bad_config_without_touching_state(host):
    # Names, owners and inodes: a stray write as root would add or replace a file.
    listing = "find /var/lib/headscale -printf '%p %u %i\\n' | sort"
    before = host.check_output(listing)
    assert host.run("headscale-configtest /etc/headscale/config.yaml").rc == 0
    host.check_output("sed 's#100.64.0.0/10#300.64.0.0/10#' /etc/headscale/config.yaml > /tmp/bad.yaml")
    bad = host.run("headscale-configtest /tmp/bad.yaml")
    assert bad.rc != 0
    assert "300.64.0.0" in bad.stdout + bad.stderr
    assert host.check_output(listing) == before
