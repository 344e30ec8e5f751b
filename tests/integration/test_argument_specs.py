"""Bad role input fails at argument validation, naming the variable, before any change."""

import pathlib
import secrets
import subprocess
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def run_role(tmp_path, role, variables, *options):
    playbook = tmp_path / "play.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          connection: local
          gather_facts: false
          roles:
            - role: blackroad.infra.{role}
              vars: {variables}
        """))
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", *options, str(playbook)],
        cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("role,variables,named", [
    ("docker", {"docker_install_source": "snap"}, "docker_install_source"),
    ("docker", {"docker_log_max_file": "many"}, "docker_log_max_file"),
    ("common", {"common_ssh_permit_root_login": "yes"}, "common_ssh_permit_root_login"),
    ("common", {"common_firewall_public_tcp_ports": ["http"]}, "common_firewall_public_tcp_ports"),
    ("tailscale", {"tailscale_install_source": "snap"}, "tailscale_install_source"),
    ("tailscale", {"tailscale_tag_change": "maybe"}, "tailscale_tag_change"),
    ("headscale", {"headscale_listen_port": "many"}, "headscale_listen_port"),
])
def test_wrong_variable_is_named(tmp_path, role, variables, named):
    result = run_role(tmp_path, role, variables)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Validating arguments against arg spec" in out
    assert named in out
    # Validation is the first task: nothing after it ran.
    assert "Check that the host runs a supported distribution" not in out


def test_bad_tag_stops_the_tailscale_role_before_any_write_and_keeps_the_key_secret(tmp_path):
    canary = "FAKECANARY-auth-key-" + secrets.token_hex(12)
    result = run_role(tmp_path, "tailscale", {"tailscale_tags": ["agent-pool"], "tailscale_authkey": canary,
                                              "tailscale_control_api_key": canary + "-api"}, "-vvv")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Check the role's input" in out and "tailscale_tags" in out
    # The input check is the first task after validation: nothing was installed.
    assert "Install from" not in out and "Configure tailscaled" not in out
    assert canary not in out
