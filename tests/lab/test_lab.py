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

    first = changed(playbook("playbooks/site.yml"))
    assert all(count > 0 for count in first.values()), first

    assert changed(playbook("playbooks/site.yml")) == dict.fromkeys(FLEET, 0)
    assert changed(playbook("playbooks/site.yml", "--check", "--diff")) == dict.fromkeys(FLEET, 0)
    # Bringing the lab up again finds every container as it should be.
    assert playbook("playbooks/lab.yml")["localhost"]["changed"] == 0
