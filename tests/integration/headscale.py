"""A real headscale control server for the integration tests.

``start_headscale()`` builds (or reuses) the pinned headscale binary with
scripts/go-build.sh, writes a config that needs no internet into a temporary
directory, starts ``headscale serve`` on free loopback ports, creates a user
and an API key, and returns a :class:`Headscale` handle. conftest.py wraps it
in the session-scoped ``headscale`` fixture.

Offline start: headscale 0.28 refuses to start with an empty DERP map, and its
default map is fetched from controlplane.tailscale.com. The embedded DERP
server (STUN on a free loopback UDP port) supplies the one region it needs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HEADSCALE_VERSION = "0.28.0"
DEFAULT_USER = "fleet"
BASE_DOMAIN = "tailnet.test"
# Fleet tags of the design plus the controller's; nodes may only carry tags the
# policy knows (headscale 0.28 rejects others in SetTags).
FLEET_TAGS = ("tag:agent-pool", "tag:api-gateway", "tag:database", "tag:monitoring",
              "tag:health", "tag:llm", "tag:failover", "tag:controller")


class HeadscaleError(RuntimeError):
    pass


def build_headscale(version=HEADSCALE_VERSION):
    """Path of the cached headscale binary (built on first use, minutes)."""
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/local/go/bin"
    result = subprocess.run([str(REPO / "scripts" / "go-build.sh"), "headscale", version],
                            capture_output=True, text=True, env=env, timeout=1800, check=False)
    if result.returncode != 0:
        raise HeadscaleError("could not build headscale %s (Go is required):\n%s"
                             % (version, result.stderr[-4000:]))
    return result.stdout.strip().splitlines()[-1]


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def baseline_policy(owner=DEFAULT_USER):
    """A policy that declares every fleet tag (owned by ``owner``) and allows all.

    Enough for tagging nodes; the policy tests replace it with their own.
    """
    return {
        "tagOwners": {tag: [owner + "@"] for tag in FLEET_TAGS},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    }


def headscale_config(workdir, port, metrics_port, grpc_port, stun_port):
    workdir = Path(workdir)
    return {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": f"127.0.0.1:{metrics_port}",
        "grpc_listen_addr": f"127.0.0.1:{grpc_port}",
        "grpc_allow_insecure": False,
        "noise": {"private_key_path": str(workdir / "noise_private.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48",
                     "allocation": "sequential"},
        "derp": {
            "server": {
                "enabled": True,
                "region_id": 999,
                "region_code": "lab",
                "region_name": "Embedded DERP",
                "verify_clients": True,
                "stun_listen_addr": f"127.0.0.1:{stun_port}",
                "private_key_path": str(workdir / "derp_server_private.key"),
                "automatically_add_embedded_derp_region": True,
            },
            "urls": [],
            "paths": [],
            "auto_update_enabled": False,
        },
        # The update check asks GitHub on every CLI call.
        "disable_check_updates": True,
        "ephemeral_node_inactivity_timeout": "30m",
        "database": {"type": "sqlite",
                     "sqlite": {"path": str(workdir / "db.sqlite"), "write_ahead_log": True}},
        "log": {"level": "info", "format": "text"},
        "policy": {"mode": "database"},
        "dns": {"magic_dns": True, "base_domain": BASE_DOMAIN, "override_local_dns": False,
                "nameservers": {"global": [], "split": {}}, "search_domains": []},
        "unix_socket": str(workdir / "hs.sock"),
        "unix_socket_permission": "0770",
        "logtail": {"enabled": False},
        "randomize_client_port": False,
    }


def clean_env():
    """The environment minus HEADSCALE_* (viper reads every key from it, and
    HEADSCALE_CLI_ADDRESS would point the CLI at some other server)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADSCALE_")}


class Headscale:
    """Handle on a running headscale: URL, API key, CLI and test helpers."""

    def __init__(self, binary, workdir, config_path, proc, url, log_path):
        self.binary = binary
        self.workdir = Path(workdir)
        self.config_path = str(config_path)
        self.proc = proc
        self.url = url
        self.log_path = Path(log_path)
        self.api_key = None
        self.user = DEFAULT_USER
        self.base_domain = BASE_DOMAIN

    # -- CLI ------------------------------------------------------------------------
    def cli(self, *args, check=True, timeout=30):
        """Run ``headscale --config <config> ARGS``; returns stdout."""
        result = subprocess.run([self.binary, "--config", self.config_path, *map(str, args)],
                                capture_output=True, text=True, env=clean_env(),
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise HeadscaleError("headscale %s failed (%d): %s"
                                 % (" ".join(map(str, args)), result.returncode,
                                    (result.stderr or result.stdout).strip()[-2000:]))
        return result.stdout

    def cli_json(self, *args):
        out = self.cli(*args, "--output", "json")
        return json.loads(out) if out.strip() else None

    # -- REST -----------------------------------------------------------------------
    def api(self, method, path, body=None, api_key=None):
        """Call /api/v1<path>; returns (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + "/api/v1" + path, data=data, method=method,
            headers={"Authorization": "Bearer " + (api_key or self.api_key),
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    # -- users, nodes, policy --------------------------------------------------------
    def user_id(self, name):
        users = self.cli_json("users", "list", "--name", name) or []
        for user in users:
            if user.get("name") == name:
                return int(user["id"])
        raise HeadscaleError(f"no headscale user {name!r}")

    def ensure_user(self, name):
        try:
            return self.user_id(name)
        except HeadscaleError:
            self.cli("users", "create", name)
            return self.user_id(name)

    def nodes(self):
        """Nodes as the REST API returns them (GET /api/v1/node)."""
        status, body = self.api("GET", "/node")
        if status != 200:
            raise HeadscaleError(f"GET /api/v1/node: {status} {body!r}")
        return body.get("nodes", [])

    def create_node(self, name, user=None, tags=None):
        """Register a fake node (no tailscaled behind it) and return its API JSON.

        ``debug create-node`` only parks the node in the registration cache under
        a 24-character registration ID; ``nodes register`` then commits it, and
        ``nodes tag`` turns it into a tagged node (tags must be in the policy's
        tagOwners, see :func:`baseline_policy`).
        """
        user = user or self.user
        self.ensure_user(user)
        registration_id = secrets.token_hex(12)          # 24 characters
        self.cli("debug", "create-node", "--name", name, "--user", user,
                 "--key", registration_id)
        node = self.cli_json("nodes", "register", "--user", user, "--key", registration_id)
        if tags:
            node = self.cli_json("nodes", "tag", "--identifier", node["id"],
                                 "--tags", ",".join(tags))
        return next(n for n in self.nodes() if str(n["id"]) == str(node["id"]))

    def delete_node(self, node_id):
        self.cli("nodes", "delete", "--identifier", node_id, "--force")

    def delete_all_nodes(self):
        for node in self.nodes():
            self.delete_node(node["id"])

    def set_policy(self, policy):
        """Replace the policy (dict or HuJSON text) through the CLI."""
        text = policy if isinstance(policy, str) else json.dumps(policy, indent=2)
        path = self.workdir / "policy.set.hujson"
        path.write_text(text, encoding="utf-8")
        self.cli("policy", "set", "--file", path)

    def get_policy(self):
        return self.cli("policy", "get")

    def reset_policy(self):
        self.set_policy(baseline_policy(self.user))

    def preauth_key(self, user=None, tags=None, reusable=False, ephemeral=False,
                    expiration="1h"):
        """Mint a pre-auth key; returns the key text."""
        args = ["preauthkeys", "create", "--expiration", expiration]
        if tags:
            args += ["--tags", ",".join(tags)]
        else:
            args += ["--user", self.user_id(user or self.user)]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        return self.cli_json(*args)["key"]

    def log(self):
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _wait_healthy(proc, url, log_path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HeadscaleError("headscale exited (%s):\n%s"
                                 % (proc.returncode, Path(log_path).read_text()[-4000:]))
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise HeadscaleError("headscale not healthy after %ss:\n%s"
                         % (timeout, Path(log_path).read_text()[-4000:]))


def start_headscale(binary=None, workdir=None, timeout=30.0):
    """Start headscale serve; returns a :class:`Headscale` with a user and API key."""
    binary = binary or build_headscale()
    # A short directory: the unix socket path must stay under 108 bytes.
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port, metrics_port, grpc_port = free_port(), free_port(), free_port()
    stun_port = free_port(socket.SOCK_DGRAM)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(headscale_config(workdir, port, metrics_port,
                                                           grpc_port, stun_port),
                                          sort_keys=False), encoding="utf-8")
    log_path = workdir / "headscale.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([binary, "--config", str(config_path), "serve"],
                                stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    handle = Headscale(binary, workdir, config_path, proc, url, log_path)
    try:
        _wait_healthy(proc, url, log_path, timeout)
        handle.ensure_user(DEFAULT_USER)
        handle.api_key = handle.cli("apikeys", "create", "--expiration", "24h").strip()
        handle.reset_policy()
    except BaseException:
        stop_headscale(handle)
        raise
    return handle


def stop_headscale(handle, remove=True):
    proc = handle.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if remove:
        shutil.rmtree(handle.workdir, ignore_errors=True)
