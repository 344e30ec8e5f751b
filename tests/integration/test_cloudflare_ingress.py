"""Tunnel ingress validation: our validator against the fixtures, and the
fixtures against the real cloudflared (differential test).

The differential test builds cloudflared from its Go module with
scripts/go-build.sh (cached under ~/.cache/blackroad/go, so re-runs are
instant) and asks `cloudflared tunnel ingress validate --json` about every
case. It fails, and does not skip, when Go is missing: CI has Go.
See docs/ingress-validation.md.
"""

import importlib.util
import json
import os
import pathlib
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASES_FILE = ROOT / "tests" / "fixtures" / "ingress" / "cases.yml"

# The cloudflared whose rules plugins/module_utils/cloudflare_ingress.py
# mirrors: cloudflared 2025.2.0 as a Go pseudo-version (the Go proxy serves
# this exact version; it refuses to list cloudflared's versions). This is the
# one place it is pinned; when the cloudflared role gets a
# `cloudflared_version` default, read it from there instead.
CLOUDFLARED_VERSION = "0.0.0-20250203150802-c19f9194281e"

_spec = importlib.util.spec_from_file_location(
    "cloudflare_ingress", ROOT / "plugins" / "module_utils" / "cloudflare_ingress.py")
cloudflare_ingress = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cloudflare_ingress)

CASES = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))["cases"]


def test_fixtures_are_well_formed():
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    assert len(CASES) >= 40
    assert {case["valid"] for case in CASES} == {True, False}
    for case in CASES:
        assert set(case) <= {"name", "valid", "config", "cli_valid", "cli_note"}, case["name"]
        assert isinstance(case["valid"], bool), case["name"]
        assert ("cli_valid" in case) == ("cli_note" in case), case["name"]
        json.dumps(case["config"])  # must be expressible as JSON


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_validator_matches_fixture(case):
    errors = cloudflare_ingress.validate_ingress(case["config"])
    assert all(isinstance(error, str) and error for error in errors)
    if case["valid"]:
        assert errors == []
    else:
        assert errors, "expected the configuration to be refused"


def test_check_ingress_raises_with_every_error():
    config = {"ingress": [{"hostname": "a.*.example.com:80", "service": "http://x/y"}]}
    with pytest.raises(cloudflare_ingress.IngressError) as raised:
        cloudflare_ingress.check_ingress(config)
    err = raised.value
    assert isinstance(err, ValueError)
    assert len(err.errors) == 4  # service path, port, wildcard, not a catch-all
    for message in err.errors:
        assert message in str(err)
    valid = {"ingress": [{"service": "http_status:404"}]}
    assert cloudflare_ingress.check_ingress(valid) is valid


def test_validator_refuses_non_mapping():
    assert cloudflare_ingress.validate_ingress(["ingress"])


def _build_cloudflared():
    env = dict(os.environ)
    # The standard install location, for shells that have not put Go on PATH.
    env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/local/go/bin"
    result = subprocess.run(
        [str(ROOT / "scripts" / "go-build.sh"), "cloudflared", CLOUDFLARED_VERSION],
        capture_output=True, text=True, env=env, timeout=1800, check=False)
    if result.returncode != 0:
        pytest.fail("could not build cloudflared %s (Go is required for this test):\n%s"
                    % (CLOUDFLARED_VERSION, result.stderr[-4000:]))
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cloudflared(tmp_path_factory):
    binary = _build_cloudflared()
    home = tmp_path_factory.mktemp("cloudflared-home")
    # An explicit, empty config file: without --config cloudflared searches
    # ~/.cloudflared, /etc/cloudflared, ... and would merge a local config.
    config_file = home / "config.yml"
    config_file.write_text("{}\n", encoding="utf-8")
    # TUNNEL_* variables are flags to cloudflared (TUNNEL_URL would fail
    # every case; TUNNEL_INGRESS_VALIDATE_JSON would replace --json).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNNEL_")}
    env["HOME"] = str(home)

    def validate(config):
        command = [binary, "tunnel", "--config", str(config_file),
                   "ingress", "validate", "--json", json.dumps(config)]
        result = subprocess.run(command, capture_output=True, text=True, env=env,
                                timeout=60, check=False)
        return result.returncode == 0, (result.stdout + result.stderr).strip()

    return validate


def test_cloudflared_agrees_with_every_case(cloudflared):
    mismatches = []
    for case in CASES:
        ours = not cloudflare_ingress.validate_ingress(case["config"])
        theirs, output = cloudflared(case["config"])
        expected = case.get("cli_valid", case["valid"])
        if ours != case["valid"] or theirs != expected:
            mismatches.append(
                "%s: fixture valid=%s, ours=%s, cloudflared=%s (expected %s)%s\n    %s"
                % (case["name"], case["valid"], ours, theirs, expected,
                   " [%s]" % case["cli_note"] if "cli_note" in case else "",
                   output.replace("\n", "\n    ")))
    assert not mismatches, "%d of %d cases disagree:\n%s" % (
        len(mismatches), len(CASES), "\n".join(mismatches))
