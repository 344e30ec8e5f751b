"""Behaviour of a host converged by the docker role."""

import json
import time

import pytest

PROBE_TAR = "/opt/probe-image.tar"


@pytest.fixture(scope="module")
def probe_image(host):
    out = host.check_output(f"docker load -i {PROBE_TAR}")
    # "Loaded image: blackroad/probe:<hash>"
    return out.strip().splitlines()[-1].split("Loaded image: ", 1)[1]


def docker_info(host):
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


def test_daemon_runs_and_starts_at_boot(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_uses_rotating_logs_and_live_restore(host):
    info = docker_info(host)
    assert info["LoggingDriver"] == "json-file"
    assert info["LiveRestoreEnabled"] is True


def test_container_starts_from_loaded_image_and_serves(host, probe_image):
    host.run("docker rm -f probe-web")
    host.check_output(f"docker run -d --name probe-web -p 127.0.0.1:18080:8080 {probe_image}")
    try:
        body = ""
        for _attempt in range(30):
            result = host.run("curl -fsS http://127.0.0.1:18080/")
            if result.rc == 0:
                body = result.stdout
                break
            time.sleep(0.5)
        assert body.startswith("probe ok ")
        log_config = json.loads(host.check_output(
            "docker inspect --format '{{json .HostConfig.LogConfig}}' probe-web"))
        # The daemon default reached the container: 5m comes from the
        # scenario's override of docker_log_max_size.
        assert log_config["Type"] == "json-file"
        assert log_config["Config"] == {"max-size": "5m", "max-file": "3"}
    finally:
        host.run("docker rm -f probe-web")


def test_live_restore_keeps_containers_across_daemon_restart(host, probe_image):
    host.run("docker rm -f probe-live")
    host.check_output(f"docker run -d --name probe-live {probe_image}")
    try:
        pid_before = host.check_output("docker inspect --format '{{.State.Pid}}' probe-live")
        host.check_output("systemctl restart docker")
        pid_after = host.check_output("docker inspect --format '{{.State.Pid}}' probe-live")
        assert pid_before == pid_after != "0"
    finally:
        host.run("docker rm -f probe-live")


def test_compose_plugin_brings_a_project_up(host, probe_image):
    project = "/tmp/compose-probe"
    host.check_output(f"mkdir -p {project}")
    compose = (
        "services:\n"
        "  web:\n"
        f"    image: {probe_image}\n"
        "    ports: ['127.0.0.1:18081:8080']\n"
    )
    host.check_output(f"printf '%s' \"{compose}\" > {project}/compose.yaml")
    assert "v2." in host.check_output("docker compose version")
    try:
        host.check_output(f"docker compose --project-directory {project} up -d --wait")
        assert host.check_output("curl -fsS http://127.0.0.1:18081/").startswith("probe ok ")
    finally:
        host.run(f"docker compose --project-directory {project} down")


def test_admin_user_is_in_docker_group(host):
    assert "docker" in host.user("probe-admin").groups
