"""The README's first command, end to end: the lab fleet converges, and a second
run changes nothing. Runs on a lab of its own (blackroad-labtest-*), so a
user's lab is left alone."""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FLEET = {"pi5-alpha", "pi5-beta", "pi5-gamma", "pi400-delta", "pi0-epsilon", "jetson-prime", "droplet-failover"}
LAB = ["-e", "lab_container_prefix=blackroad-labtest-", "-e", "lab_network=blackroad-labtest"]


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
    playbook("playbooks/lab.yml", "-e", "lab_state=absent")
    playbook("playbooks/lab.yml")
    yield
    playbook("playbooks/lab.yml", "-e", "lab_state=absent")


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

    assert changed(playbook("playbooks/site.yml")) == dict.fromkeys(FLEET, 0)
    assert changed(playbook("playbooks/site.yml", "--check", "--diff")) == dict.fromkeys(FLEET, 0)
    # Bringing the lab up again finds every container as it should be.
    assert playbook("playbooks/lab.yml")["localhost"]["changed"] == 0


def lab_exec(host, *command):
    return subprocess.run(["docker", "exec", f"blackroad-labtest-{host}", *command],
                          capture_output=True, text=True, check=False)


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
