"""Fixtures that run the local Cloudflare API emulator (emulator/cloudflare_emulator).

``cf_emulator`` starts a fresh emulator subprocess per test (startup is well under a
second) on a free loopback port with a generated token, and fails the test at teardown
if the emulator recorded any contract violation that the test did not clear.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EMULATOR_DIR = REPO / "emulator"
if str(EMULATOR_DIR) not in sys.path:  # tests may import cloudflare_emulator.contract directly
    sys.path.insert(0, str(EMULATOR_DIR))


class CloudflareEmulator:
    """Handle on a running emulator: URLs, token and the /__emulator control API."""

    def __init__(self, proc, url, token):
        self.proc = proc
        self.url = url                                   # http://127.0.0.1:PORT/client/v4
        self.base = url[: -len("/client/v4")]
        self.token = token
        accounts = self.state()["accounts"]
        self.account_id = accounts[0]["id"] if accounts else None

    # -- control API -------------------------------------------------------------------
    def _control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/__emulator" + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")["result"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"emulator control {method} {path}: {exc.code} {exc.read()!r}") from None

    def requests(self):
        """Recorded API requests: [{method, path, query, status, ms}] (path without /client/v4)."""
        return self._control("GET", "/requests")

    def reset_requests(self):
        self._control("DELETE", "/requests")

    def writes(self):
        """Recorded non-GET requests (what a check-mode / idempotency test cares about)."""
        return [r for r in self.requests() if r["method"] != "GET"]

    def inject(self, *rules, **rule):
        """Add fault rules: inject(action="status", status=429, retry_after=1, count=1,
        method="POST", path_regex="/dns_records$") or several rule dicts positionally.
        Actions: status (status, retry_after, errors), drop (when="before"|"after"), latency (ms)."""
        all_rules = list(rules) + ([rule] if rule else [])
        return self._control("POST", "/faults", all_rules)

    def clear_faults(self):
        self._control("DELETE", "/faults")

    def state(self, secrets=False):
        """Full state dump (a seed document; secret binding text only with secrets=True)."""
        return self._control("GET", "/state" + ("?secrets=1" if secrets else ""))

    def seed(self, doc):
        """Replace the whole state from a seed document (see emulator/README.md)."""
        self._control("PUT", "/state", doc)
        accounts = self.state()["accounts"]
        self.account_id = accounts[0]["id"] if accounts else None

    def reset(self):
        """Back to the start-up seed; also clears requests, violations and faults."""
        self._control("POST", "/reset")

    def violations(self, clear=False):
        """Contract violations recorded so far: [{kind: request|response, method, path, problems}]."""
        out = self._control("GET", "/violations")
        if clear:
            self.clear_violations()
        return out

    def clear_violations(self):
        self._control("DELETE", "/violations")

    def zone_id(self, name="blackroad.io"):
        return next(z["id"] for z in self.state()["zones"] if z["name"] == name)


def cloudflare_env(emulator):
    """Environment for ansible-playbook (or any SDK user) pointed at the emulator."""
    return {"CLOUDFLARE_API_TOKEN": emulator.token, "CLOUDFLARE_BASE_URL": emulator.url}


def start_emulator(seed=None, state_file=None, extra_args=(), timeout=10.0):
    """Start an emulator subprocess; returns (proc, url, token)."""
    token = secrets.token_hex(20)
    env = dict(os.environ, CLOUDFLARE_EMULATOR_TOKENS=token,
               PYTHONPATH=str(EMULATOR_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "cloudflare_emulator", "--listen", "127.0.0.1:0", *extra_args]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if state_file is not None:
        cmd += ["--state-file", str(state_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if "listening on" not in line or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r} {proc.stderr.read()!r}")
    return proc, line.strip().rsplit(" ", 1)[-1], token


def stop_emulator(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@pytest.fixture
def cf_emulator():
    proc, url, token = start_emulator()
    emu = CloudflareEmulator(proc, url, token)
    try:
        yield emu
        leftover = emu.violations()
    finally:
        stop_emulator(proc)
    if leftover:
        pytest.fail("Cloudflare emulator recorded contract violations:\n"
                    + json.dumps(leftover, indent=2)[:4000], pytrace=False)


# -- headscale ----------------------------------------------------------------------------
# A real headscale control server (tests/integration/headscale.py), one per session:
# start-up builds the pinned binary once (cached) and takes about a second after that.

@pytest.fixture(scope="session")
def headscale():
    """Running headscale 0.28: ``.url``, ``.api_key``, ``.cli(*args)``,
    ``.create_node(name, user, tags=None)``, ``.config_path``, ``.binary``.

    Policy mode is "database" and starts as :func:`headscale.baseline_policy`
    (every fleet tag declared); a test that replaces the policy or adds nodes
    should call ``reset_policy()`` / ``delete_all_nodes()`` when done.
    """
    from headscale import HeadscaleError, start_headscale, stop_headscale  # pylint: disable=import-outside-toplevel
    try:
        server = start_headscale()
    except HeadscaleError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        stop_headscale(server)
