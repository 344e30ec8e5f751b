"""scripts/edge-api-key.sh: a new key goes to a 0600 file; only its hash is printed."""

import hashlib
import pathlib
import stat
import subprocess

import yaml

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "edge-api-key.sh"


def run(*args, **kwargs):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False, **kwargs)


def test_new_key_file_and_printed_entry(tmp_path):
    key_file = tmp_path / "alice.key"
    res = run("new", "alice-laptop", "alice@example.com", str(key_file))
    assert res.returncode == 0, res.stderr
    key = key_file.read_text()
    assert key.startswith("brk_") and len(key) >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in res.stdout + res.stderr
    entry, = yaml.safe_load(res.stdout)
    assert entry == {"id": "alice-laptop", "user": "alice@example.com", "sha256": hashlib.sha256(key.encode()).hexdigest()}
    # The same hash from the file or from stdin, and a key is never overwritten.
    assert run("hash", str(key_file)).stdout.strip() == entry["sha256"]
    assert run("hash", input=key + "\n").stdout.strip() == entry["sha256"]
    again = run("new", "alice-laptop", "alice@example.com", str(key_file))
    assert again.returncode == 1 and "not overwriting" in again.stderr
    assert key_file.read_text() == key


def test_bad_id_and_usage(tmp_path):
    bad = run("new", "bad id", "alice", str(tmp_path / "k"))
    assert bad.returncode == 2 and not (tmp_path / "k").exists()
    assert run().returncode == 2
    assert run("new", "only-id").returncode == 2
