"""The README's first command, end to end: the lab fleet converges, and a second
run changes nothing. Runs on a lab of its own (blackroad-labtest-*), so a
user's lab is left alone."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
FLEET = {"pi5-alpha", "pi5-beta", "pi5-gamma", "pi400-delta", "pi0-epsilon", "jetson-prime", "droplet-failover"}
PREFIX = "blackroad-labtest-"
HEADSCALE_PORT = 18081
# The lab's own inventory, pointed at this lab: hosts.yml as it is, and the
# tailnet source (inventory/lab/tailnet.tailscale.yml) aimed at this lab's
# headscale and containers.
TAILNET_SOURCE = REPO / ".cache" / "blackroad-labtest" / "tailnet.tailscale.yml"
# This lab's own Cloudflare emulator, seeded like the user's lab.
CLOUDFLARE_DIR = REPO / ".cache" / "blackroad-labtest" / "cloudflare"
CLOUDFLARE_PORT = 18787
LAB = ["-e", f"lab_container_prefix={PREFIX}", "-e", "lab_network=blackroad-labtest",
       "-e", f"lab_headscale_port={HEADSCALE_PORT}",
       "-e", f"lab_cloudflare_port={CLOUDFLARE_PORT}", "-e", f"lab_cloudflare_dir={CLOUDFLARE_DIR}",
       "-i", str(REPO / "inventory" / "lab" / "hosts.yml"), "-i", str(TAILNET_SOURCE)]


def cloudflare_emulator(action):
    env = dict(os.environ, CLOUDFLARE_EMULATOR_DIR=str(CLOUDFLARE_DIR), CLOUDFLARE_EMULATOR_PORT=str(CLOUDFLARE_PORT))
    subprocess.run([str(REPO / "scripts" / "cloudflare-emulator.sh"), action], env=env, check=True,
                   capture_output=True, text=True)


def write_tailnet_source():
    config = yaml.safe_load((REPO / "inventory" / "lab" / "tailnet.tailscale.yml").read_text())
    config["api_base_url"] = f"http://127.0.0.1:{HEADSCALE_PORT}"
    config["api_key_file"] = str(REPO / ".cache" / "blackroad-labtest" / "headscale" / "api-key")
    config["compose"]["ansible_host"] = config["compose"]["ansible_host"].replace("blackroad-lab-", PREFIX)
    TAILNET_SOURCE.parent.mkdir(parents=True, exist_ok=True)
    TAILNET_SOURCE.write_text(yaml.safe_dump(config))


def playbook(*args):
    """Run ansible-playbook, return the per-host stats from the JSON callback."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    result = subprocess.run(["ansible-playbook", *LAB, *args], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    try:
        stats = json.loads(result.stdout)["stats"]
    except (ValueError, KeyError):
        pytest.fail(f"ansible-playbook {' '.join(args)} gave no JSON:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    failed = {host: s for host, s in stats.items() if s["failures"] or s["unreachable"]}
    assert result.returncode == 0 and not failed, f"{' '.join(args)} failed on {failed}:\n{result.stderr[-3000:]}"
    return stats


@pytest.fixture(scope="module")
def fresh_lab():
    write_tailnet_source()
    playbook("playbooks/lab.yml", "-e", "lab_state=absent")
    cloudflare_emulator("stop")
    shutil.rmtree(CLOUDFLARE_DIR, ignore_errors=True)
    cloudflare_emulator("start")
    playbook("playbooks/lab.yml")
    yield
    playbook("playbooks/lab.yml", "-e", "lab_state=absent")
    cloudflare_emulator("stop")


def changed(stats):
    return {host: s["changed"] for host, s in stats.items() if host in FLEET}


def test_lab_converges_then_stays_converged(fresh_lab):
    predicted = changed(playbook("playbooks/site.yml", "--check"))
    assert set(predicted) == FLEET
    assert all(count > 0 for count in predicted.values()), f"--check on new hosts predicted nothing: {predicted}"
    for host in FLEET:
        # --check wrote nothing: no drop-in, no firewall package, no Docker.
        assert lab_exec(host, "test", "-e", "/etc/ssh/sshd_config.d/00-blackroad-hardening.conf").returncode == 1
        assert lab_exec(host, "dpkg", "-s", "nftables").returncode != 0
        assert lab_exec(host, "dpkg", "-s", "docker.io").returncode != 0

    first = changed(playbook("playbooks/site.yml"))
    assert all(count > 0 for count in first.values()), first

    # The controller's share (tailnet policy, the edge) converges too.
    again = playbook("playbooks/site.yml")
    assert changed(again) == dict.fromkeys(FLEET, 0)
    assert again["localhost"]["changed"] == 0
    rechecked = playbook("playbooks/site.yml", "--check", "--diff")
    assert changed(rechecked) == dict.fromkeys(FLEET, 0)
    assert rechecked["localhost"]["changed"] == 0
    # Bringing the lab up again finds every container as it should be.
    assert playbook("playbooks/lab.yml")["localhost"]["changed"] == 0


def test_inventory_comes_from_the_tailnet(fresh_lab):
    """Every host joined headscale; the tailnet source alone gives the design's groups."""
    design = yaml.safe_load((REPO / "tests/fixtures/fleet_groups.yml").read_text())
    expected = {group: set(hosts) for group, hosts in design.items()} | {"online": FLEET}
    out = subprocess.run(["ansible-inventory", "-i", str(TAILNET_SOURCE), "--list"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    inventory = json.loads(out.stdout)
    assert {group: set(inventory.get(group, {}).get("hosts", [])) for group in expected} == expected, out.stderr


def tailnet_ipv4(host):
    return lab_exec(host, "tailscale", "ip", "-4").stdout.strip()


def test_tailnet_policy_is_enforced(fresh_lab):
    """Only hosts the default policy names reach the LLM port (agents yes, the failover droplet no)."""
    llm = tailnet_ipv4("jetson-prime")
    assert llm.startswith("100."), llm
    server = subprocess.Popen(["docker", "exec", f"{PREFIX}jetson-prime", "python3", "-m", "http.server", "8080",
                               "--bind", llm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://{llm}:8080/"
        allowed = ""
        for _attempt in range(30):
            allowed = lab_exec("pi5-alpha", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", url).stdout
            if allowed == "200":
                break
        assert allowed == "200", "an agent host cannot reach the LLM port over the tailnet"
        denied = lab_exec("droplet-failover", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", url)
        assert denied.returncode != 0 and denied.stdout in ("", "000"), "the failover droplet reached the LLM port"
    finally:
        server.kill()
        lab_exec("jetson-prime", "pkill", "-f", "http.server 8080")


def lab_exec(host, *command):
    return subprocess.run(["docker", "exec", f"{PREFIX}{host}", *command],
                          capture_output=True, text=True, check=False)


def edge_probe(*args):
    """One request through the lab's edge (the Workers in workerd, as the emulator holds them)."""
    proc = subprocess.run(["node", str(REPO / "workers" / "lab" / "edge-lab.mjs"), "--probe", *args,
                           "--base-url", f"http://127.0.0.1:{CLOUDFLARE_PORT}/client/v4",
                           "--token-file", str(CLOUDFLARE_DIR / "token"), "--connector-prefix", PREFIX],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_request_travels_the_edge_to_the_api_host(fresh_lab):
    """api.blackroad.io: gateway, auth and rate limit in workerd, the tunnel's connector on
    pi5-alpha, the stand-in API on its loopback port; revoked and missing keys stop at the edge."""
    keys = REPO / ".cache" / "blackroad-labtest" / "edge"
    ok = edge_probe("https://api.blackroad.io/v1/status?probe=1", "--api-key-file", str(keys / "api-key"),
                    "--header", "X-User-ID: root")
    assert ok["status"] == 200, ok
    seen = json.loads(ok["body"])
    assert seen["service"] == "lab stand-in API on pi5-alpha"
    assert seen["path"] == "/v1/status?probe=1"
    assert seen["headers"]["x-user-id"] == "lab-user"
    assert edge_probe("https://api.blackroad.io/v1/status", "--api-key-file", str(keys / "revoked-api-key"))["status"] == 403
    assert edge_probe("https://api.blackroad.io/v1/status")["status"] == 401
    assert edge_probe("https://nowhere.blackroad.io/")["status"] == 404
    # The raw keys are on the controller only; the account has their hashes.
    state = (CLOUDFLARE_DIR / "state.json").read_text()
    assert (keys / "api-key").read_text() not in state


def test_published_container_port_is_reachable_only_from_inside(fresh_lab):
    """A port Docker publishes on 0.0.0.0 must not bypass the firewall (DNAT skips the input chain)."""
    host = "pi5-alpha"
    tarball = subprocess.run([str(REPO / "tests/fixtures/probe/build.sh")], capture_output=True,
                             text=True, check=True).stdout.strip()
    subprocess.run(["docker", "cp", tarball, f"blackroad-labtest-{host}:/tmp/probe.tar"], check=True)
    loaded = lab_exec(host, "docker", "load", "-i", "/tmp/probe.tar")
    image = loaded.stdout.strip().rsplit("Loaded image: ", 1)[1]
    started = lab_exec(host, "docker", "run", "-d", "--name", "published", "-p", "18080:8080", image)
    assert started.returncode == 0, started.stderr
    try:
        inspect = subprocess.run(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
             f"blackroad-labtest-{host}"], capture_output=True, text=True, check=True)
        address = inspect.stdout.strip()
        inside = ""
        for _attempt in range(20):
            inside = lab_exec(host, "curl", "-fsS", "-m", "2", "http://127.0.0.1:18080/").stdout
            if inside:
                break
        assert inside.startswith("probe ok "), "the container serves on the host itself"
        outside = subprocess.run(["curl", "-fsS", "-m", "3", f"http://{address}:18080/"],
                                 capture_output=True, text=True, check=False)
        assert outside.returncode != 0, "a published port answered from outside the tailnet"
    finally:
        lab_exec(host, "docker", "rm", "-f", "published")
