"""Behaviour of a host converged by the common role."""

import socket
import time

import pytest


def on_tailnet(host):
    return host.interface("tailscale0").exists


def outside_address(host):
    """The instance's address on the Docker network, as seen from the controller."""
    return next(a for a in host.interface("eth0").addresses if ":" not in a)


def tcp_open(address, port, timeout=2.0):
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture
def listener(host):
    """A throwaway TCP service on 8080 and on 8443 (the public port)."""
    host.run("systemd-run --unit=probe-8080 python3 -m http.server 8080")
    host.run("systemd-run --unit=probe-8443 python3 -m http.server 8443")
    for _attempt in range(40):
        if host.run("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)'").rc == 0:
            break
        time.sleep(0.25)
    yield
    host.run("systemctl stop probe-8080 probe-8443")


def test_sshd_refuses_passwords(host):
    effective = host.check_output("sshd -T")
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "x11forwarding no" in effective
    # A real client is offered public-key authentication and nothing else.
    result = host.run(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o PreferredAuthentications=password,keyboard-interactive nobody@127.0.0.1 true")
    assert result.rc == 255
    assert "Permission denied (publickey)" in result.stderr


def test_firewall_drops_unlisted_ports_from_outside(host, listener):
    address = outside_address(host)
    assert host.run("curl -fsS -o /dev/null http://127.0.0.1:8080/").rc == 0, "loopback is admitted"
    assert not tcp_open(address, 8080), "a service on an unlisted port must not be reachable"
    assert tcp_open(address, 8443), "a port in common_firewall_public_tcp_ports is reachable"


def test_ssh_reaches_the_host_only_until_it_is_on_the_tailnet(host):
    address = outside_address(host)
    if on_tailnet(host):
        assert not tcp_open(address, 22), "after joining, SSH must come through the tailnet only"
        assert 'iifname "tailscale0" accept' in host.check_output("nft list table inet blackroad")
    else:
        assert tcp_open(address, 22), "before joining, SSH must stay reachable"


def test_firewall_is_loaded_at_boot(host):
    assert host.service("nftables").is_enabled
    assert "policy drop" in host.check_output("nft list chain inet blackroad input")


def test_unattended_upgrades_follow_security_origins_only(host):
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    dry_run = host.run("unattended-upgrade --dry-run --debug")
    assert dry_run.rc == 0, dry_run.stderr
    allowed = next(line for line in (dry_run.stdout + dry_run.stderr).splitlines()
                   if line.startswith("Allowed origins are:"))
    assert "codename=bookworm-security" in allowed
    assert "bookworm-updates" not in allowed and "codename=bookworm," not in allowed


def test_timesyncd_is_configured_and_enabled(host):
    assert host.service("systemd-timesyncd").is_enabled
    config = host.check_output("systemd-analyze cat-config systemd/timesyncd.conf")
    assert "NTP=ntp.lab.invalid" in config
    # Containers share the host's clock, so systemd itself keeps timesyncd
    # from running there; on real hardware the role starts it.
    if host.system_info.type == "linux" and host.run("systemd-detect-virt -c").rc == 0:
        assert host.check_output("systemctl show -p ConditionResult systemd-timesyncd") == "ConditionResult=no"
