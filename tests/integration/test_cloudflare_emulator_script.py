"""scripts/cloudflare-emulator.sh: the one command that starts the lab's emulator."""

import json
import os
import socket
import subprocess
import urllib.request

from playbook import REPO

SCRIPT = REPO / "scripts" / "cloudflare-emulator.sh"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(action, env):
    return subprocess.run([str(SCRIPT), action], env=env, capture_output=True, text=True, check=True).stdout


def test_start_is_idempotent_seeds_the_account_and_keeps_the_token_private(tmp_path):
    port = free_port()
    env = dict(os.environ, CLOUDFLARE_EMULATOR_DIR=str(tmp_path / "cf"), CLOUDFLARE_EMULATOR_PORT=str(port))
    try:
        first = run("start", env)
        pid = (tmp_path / "cf" / "pid").read_text()
        assert run("start", env) == first
        assert (tmp_path / "cf" / "pid").read_text() == pid
        assert f"CLOUDFLARE_BASE_URL=http://127.0.0.1:{port}/client/v4" in first
        token_file = tmp_path / "cf" / "token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        # The token is never on the emulator's command line.
        assert token not in (pathlib_read(f"/proc/{pid.strip()}/cmdline"))
        accounts = api(port, token, "GET", "/accounts")
        assert [a["name"] for a in accounts] == ["BlackRoad"]
        account = accounts[0]["id"]
        api(port, token, "POST", f"/accounts/{account}/storage/kv/namespaces", {"title": "SURVIVES"})
    finally:
        run("stop", env)
    assert not (tmp_path / "cf" / "pid").exists()

    # The state outlives the process: the seed is only used the first time.
    try:
        run("start", env)
        titles = [n["title"] for n in api(port, token, "GET", f"/accounts/{account}/storage/kv/namespaces")]
        assert "SURVIVES" in titles
    finally:
        run("stop", env)


def api(port, token, method, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/client/v4{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


def pathlib_read(path):
    with open(path, "rb") as handle:
        return handle.read().decode(errors="replace")
