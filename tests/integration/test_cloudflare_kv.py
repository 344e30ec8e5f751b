"""cloudflare_kv_namespace and cloudflare_kv_entries end to end, through ansible-playbook, against the emulator."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import urllib.request
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import EMULATOR_DIR, CloudflareEmulator, stop_emulator  # noqa: E402
from playbook import run_play  # noqa: E402

ACCOUNT = "0b1ac6d2c3f84e8f9a7d5e1c2b3a4f50"  # the emulator's default account
HASH = "_sha256"


class Emu:
    """The cf_emulator fixture plus its control API (/__emulator) for requests, faults and state."""

    def __init__(self, fixture):
        self.fixture = fixture
        self.token = fixture.token
        self.url = fixture.url
        self.root = self.url.split("/client/v4")[0]
        self.env = {"CLOUDFLARE_API_TOKEN": self.token, "CLOUDFLARE_BASE_URL": self.url}

    def control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.root + "/__emulator" + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + self.token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["result"]

    def requests(self):
        return self.control("GET", "/requests")

    def clear(self):
        self.control("DELETE", "/requests")

    def writes(self):
        """Requests that change something: every non-GET except the bulk get (a POST that only reads)."""
        return [r for r in self.requests() if r["method"] != "GET" and not r["path"].endswith("/bulk/get")]

    def fault(self, *rules):
        self.control("POST", "/faults", list(rules))

    def state(self):
        return self.control("GET", "/state?secrets=1")

    def namespaces(self, title=None):
        found = [n for n in self.state()["kv_namespaces"] if n["account_id"] == ACCOUNT]
        return [n for n in found if title is None or n["title"] == title]

    def entries(self, title):
        namespace, = self.namespaces(title)
        return namespace["entries"]

    def seed_namespace(self, title, entries):
        """Add a namespace with entries written by someone else (no hash in their metadata)."""
        doc = self.state()
        doc["kv_namespaces"] = [n for n in doc["kv_namespaces"] if n["title"] != title]
        doc["kv_namespaces"].append({"title": title, "account_id": ACCOUNT, "entries": entries})
        self.control("PUT", "/state", doc)
        return self.namespaces(title)[0]["id"]


@pytest.fixture
def emu(cf_emulator):
    e = Emu(cf_emulator)
    e.clear()
    return e


@pytest.fixture
def canary_emu():
    """An emulator whose API token is a recognisable canary string, to look for in -vvv output."""
    token = "canary-%s" % uuid.uuid4()
    env = dict(os.environ, CLOUDFLARE_EMULATOR_TOKENS=token,
               PYTHONPATH=str(EMULATOR_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cloudflare_emulator", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()
    assert "listening on" in line, line
    try:
        yield Emu(CloudflareEmulator(proc, line.split()[-1], token))
    finally:
        stop_emulator(proc)


def play(tmp_path, emu, tasks, vars_files=None, **kwargs):
    """One play with module_defaults for the account; each call is one ansible-playbook run."""
    return run_play(tmp_path, tasks, emu.env, **kwargs) if vars_files is None else _play_with_vars(
        tmp_path, emu, tasks, vars_files, **kwargs)


def _play_with_vars(tmp_path, emu, tasks, vars_files, **kwargs):
    import yaml
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Test play", "hosts": "localhost", "gather_facts": False,
                                         "vars_files": [str(v) for v in vars_files], "tasks": tasks}],
                                       sort_keys=False))
    return run_play(tmp_path, None, emu.env, playbook=playbook, **kwargs)


def ns_task(name, **args):
    args.setdefault("account", ACCOUNT)
    return {"name": name, "blackroad.infra.cloudflare_kv_namespace": args, "register": "r"}


def kv_task(name, **args):
    args.setdefault("account", ACCOUNT)
    return {"name": name, "blackroad.infra.cloudflare_kv_entries": args}


def failing(task):
    return dict(task, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- namespaces

def test_namespace_create_rename_delete(tmp_path, emu):
    emu.seed_namespace("kvn-old", {"a": "1"})

    # Check mode predicts every change and writes nothing.
    result = play(tmp_path, emu, [
        ns_task("create", title="kvn-a"),
        ns_task("rename", title="kvn-new", rename_from="kvn-old"),
    ], check=True, diff=True)
    assert result.rc == 0, result.output
    assert [r["changed"] for r in result.results] == [True, True]
    assert result.result("rename")["diff"]["after"]["title"] == "kvn-new"
    assert emu.writes() == []
    assert emu.namespaces("kvn-a") == []

    result = play(tmp_path, emu, [
        ns_task("create", title="kvn-a"),
        ns_task("create again", title="kvn-a"),
        ns_task("rename", title="kvn-new", rename_from="kvn-old"),
        ns_task("rename again", title="kvn-new", rename_from="kvn-old"),
        ns_task("delete", title="kvn-a", state="absent"),
        ns_task("delete again", title="kvn-a", state="absent"),
    ], diff=True)
    assert result.rc == 0, result.output
    assert [r["changed"] for r in result.results] == [True, False, True, False, True, False]
    created = result.result("create")
    assert created["namespace"]["title"] == "kvn-a" and len(created["namespace"]["id"]) == 32
    assert created["diff"]["before"] == {} and created["diff"]["after"]["title"] == "kvn-a"
    assert result.result("create again")["api_calls"] == 1
    renamed = result.result("rename")
    new, = emu.namespaces("kvn-new")
    assert renamed["namespace"] == {"id": new["id"], "title": "kvn-new"}
    assert new["entries"]["a"]["value"] == "1", "a rename keeps the keys"
    assert emu.namespaces("kvn-old") == [] and emu.namespaces("kvn-a") == []
    assert result.result("delete")["namespace"]["title"] == "kvn-a"
    methods = sorted(w["method"] for w in emu.writes())
    assert methods == ["DELETE", "POST", "PUT"]

    # A second run of the same desired state: nothing changes, nothing is written.
    emu.clear()
    result = play(tmp_path, emu, [
        ns_task("new", title="kvn-new", rename_from="kvn-old"),
        ns_task("gone", title="kvn-a", state="absent"),
    ])
    assert result.rc == 0, result.output
    assert result.changed == 0
    assert emu.writes() == []
    assert len(emu.requests()) == 2


def test_namespace_bad_input_and_conflicts(tmp_path, emu):
    emu.seed_namespace("kvn-both-a", {})
    emu.seed_namespace("kvn-both-b", {})
    emu.clear()
    result = play(tmp_path, emu, [
        failing(ns_task("both exist", title="kvn-both-b", rename_from="kvn-both-a")),
        failing(ns_task("empty title", title="  ")),
        failing(ns_task("rename when absent", title="x", state="absent", rename_from="y")),
        failing(ns_task("bad state", title="x", state="gone")),
    ])
    assert result.rc == 0, result.output
    msgs = [r.get("msg", "") for r in result.results]
    assert all(r.get("failed") for r in result.results), msgs
    assert "kvn-both-a" in msgs[0] and "exists already" in msgs[0]
    assert "title must not be empty" in msgs[1]
    assert "rename_from is only valid with state=present" in msgs[2]
    assert "state" in msgs[3]
    assert emu.writes() == []
    assert len(emu.namespaces("kvn-both-a")) == 1 and len(emu.namespaces("kvn-both-b")) == 1


def test_namespace_faults_converge_without_duplicates(tmp_path, emu):
    emu.seed_namespace("kvn-f-old", {})
    emu.clear()
    base = "/storage/kv/namespaces"
    emu.fault(
        {"action": "status", "status": 429, "retry_after": 1, "method": "GET", "path_regex": base + "$"},
        {"action": "status", "status": 502, "method": "POST", "path_regex": base + "$"},
        {"action": "drop", "when": "after", "method": "POST", "path_regex": base + "$"},
        {"action": "status", "status": 503, "method": "PUT", "path_regex": base + "/[0-9a-f]+$"},
        {"action": "drop", "when": "after", "method": "DELETE", "path_regex": base + "/[0-9a-f]+$"},
    )
    result = play(tmp_path, emu, [
        ns_task("create", title="kvn-f"),
        ns_task("rename", title="kvn-f-new", rename_from="kvn-f-old"),
        ns_task("delete", title="kvn-f-new", state="absent"),
    ])
    assert result.rc == 0, result.output
    assert [r["changed"] for r in result.results] == [True, True, True]
    assert len(emu.namespaces("kvn-f")) == 1, "the dropped create must not be repeated"
    assert result.result("create")["namespace"]["id"] == emu.namespaces("kvn-f")[0]["id"]
    assert emu.namespaces("kvn-f-new") == [] and emu.namespaces("kvn-f-old") == []
    statuses = [r["status"] for r in emu.requests()]
    assert 429 in statuses and 502 in statuses and 503 in statuses and 0 in statuses


# ---------------------------------------------------------------------------------------------- entries

def test_entries_10000_create_noop_and_ten_changes(tmp_path, emu):
    emu.seed_namespace("kv-big", {})
    emu.clear()
    big = dict(("big/%05d" % i, "value %d" % i) for i in range(10000))
    changed = dict(big)
    for i in range(0, 1000, 100):
        changed["big/%05d" % i] = "changed %d" % i
    vars_file = tmp_path / "big.json"
    vars_file.write_text(json.dumps({"big": big, "changed": changed}))

    result = play(tmp_path, emu, [kv_task("create", namespace="kv-big", entries="{{ big }}")], vars_files=[vars_file])
    assert result.rc == 0, result.output
    created = result.result("create")
    assert created["changed"] is True
    assert created["created_count"] == 10000
    assert created["truncated"] is True and len(created["created"]) == 100
    assert created["api_calls"] <= 12
    assert len(emu.requests()) == created["api_calls"] == 3  # list namespaces, list keys, one bulk write
    writes = emu.writes()
    assert [(w["method"], w["path"].rsplit("/", 1)[-1]) for w in writes] == [("PUT", "bulk")]
    stored = emu.entries("kv-big")
    assert len(stored) == 10000
    assert stored["big/00042"]["value"] == "value 42"
    assert set(stored["big/00042"]["metadata"]) == {HASH}

    emu.clear()
    result = play(tmp_path, emu, [
        kv_task("noop", namespace="kv-big", entries="{{ big }}"),
        kv_task("ten changes", namespace="kv-big", entries="{{ changed }}"),
    ], vars_files=[vars_file])
    assert result.rc == 0, result.output
    noop, ten = result.result("noop"), result.result("ten changes")
    assert noop["changed"] is False and noop["unchanged"] == 10000
    assert noop["api_calls"] <= 11
    requests = emu.requests()
    assert all(r["method"] == "GET" for r in requests[:noop["api_calls"]]), "the no-op run wrote something"
    assert ten["changed"] is True and ten["updated_count"] == 10 and ten["unchanged"] == 9990
    assert sorted(ten["updated"]) == sorted("big/%05d" % i for i in range(0, 1000, 100))
    assert ten["api_calls"] <= 13
    assert len(emu.writes()) == 1
    assert emu.entries("kv-big")["big/00100"]["value"] == "changed 100"


def test_entries_purge_prefix_absent_unhashed_check_and_diff(tmp_path, emu):
    emu.seed_namespace("kv-small", {
        "outside": "not under the prefix",
        "app/a": "1",                       # written by someone else: no hash, same value
        "app/stale": "old",
        "app/secretish": {"value": "hunter2-old", "metadata": {"owner": "me"}},
    })
    emu.clear()
    desired = {
        "app/a": "1",
        "app/b": {"value": "2", "metadata": {"owner": "web"}, "expiration_ttl": 3600},
        "app/secretish": {"value": "hunter2-new", "metadata": {"owner": "me"}},
    }
    task = dict(namespace="kv-small", prefix="app/", purge=True, entries=desired)

    # Check mode + diff: predicts, writes nothing, shows hashes not values.
    result = play(tmp_path, emu, [kv_task("converge", **task)], check=True, diff=True)
    assert result.rc == 0, result.output
    predicted = result.result("converge")
    assert predicted["changed"] is True
    assert predicted["created"] == ["app/b"]
    assert predicted["updated"] == ["app/a", "app/secretish"]
    assert predicted["deleted"] == ["app/stale"]
    assert predicted["unhashed"] == 2
    assert emu.writes() == []
    diff = predicted["diff"]
    assert set(diff["before"]) == {"app/a", "app/secretish", "app/stale"}
    assert set(diff["after"]) == {"app/a", "app/b", "app/secretish"}
    assert diff["after"]["app/b"]["metadata"] == {"owner": "web"} and diff["after"]["app/b"]["expiration_ttl"] == 3600
    assert "hunter2" not in json.dumps(dict(predicted, invocation=None)), "values only with diff_values"
    assert any("had no _sha256" in w for w in predicted.get("warnings", []))

    result = play(tmp_path, emu, [
        kv_task("diff values", diff_values=True, **task),
        kv_task("converge", **task),
        kv_task("again", **task),
        kv_task("remove", namespace="kv-small", state="absent", entries={"app/b": "", "app/missing": ""}),
        kv_task("remove again", namespace="kv-small", state="absent", entries={"app/b": ""}),
    ], check=False, diff=True)
    assert result.rc == 0, result.output
    shown = result.result("diff values")["diff"]
    assert shown["before"]["app/secretish"]["value"] == "hunter2-old"
    assert shown["after"]["app/secretish"]["value"] == "hunter2-new"
    assert [r["changed"] for r in result.results] == [True, False, False, True, False]
    assert result.result("again")["unchanged"] == 3
    assert result.result("remove")["deleted"] == ["app/b"]
    entries = emu.entries("kv-small")
    assert sorted(entries) == ["app/a", "app/secretish", "outside"], "purge stays inside the prefix"
    assert entries["outside"]["value"] == "not under the prefix"
    assert entries["app/secretish"]["metadata"]["owner"] == "me"
    assert entries["app/a"]["metadata"][HASH] == hashlib.sha256(b"1").hexdigest()


def test_entries_copy_from_merges_without_overwriting(tmp_path, emu):
    emu.seed_namespace("kv-src", {
        "shared": "from source",
        "only-src": {"value": "s1", "metadata": {"kind": "x"}},
        "only-src-2": "s2",
    })
    emu.seed_namespace("kv-dst", {"shared": "from destination", "only-dst": "d1"})
    emu.clear()
    result = play(tmp_path, emu, [
        kv_task("predict", namespace="kv-dst", copy_from="kv-src"),
    ], check=True)
    assert result.rc == 0, result.output
    assert result.result("predict")["created"] == ["only-src", "only-src-2"]
    assert emu.writes() == []

    result = play(tmp_path, emu, [
        kv_task("merge", namespace="kv-dst", copy_from="kv-src"),
        kv_task("merge again", namespace="kv-dst", copy_from="kv-src"),
    ])
    assert result.rc == 0, result.output
    merged = result.result("merge")
    assert merged["changed"] is True and merged["created"] == ["only-src", "only-src-2"] and merged["kept"] == 1
    again = result.result("merge again")
    # The source keys carry no hash (written elsewhere): they are kept, not read or compared.
    assert again["changed"] is False and again["kept"] == 3 and again["unchanged"] == 0
    # The second run reads no value: two namespace listings and one namespace list call.
    assert again["api_calls"] == 3
    entries = emu.entries("kv-dst")
    assert entries["shared"]["value"] == "from destination"
    assert entries["only-dst"]["value"] == "d1"
    assert entries["only-src"]["value"] == "s1"
    assert entries["only-src"]["metadata"]["kind"] == "x" and HASH in entries["only-src"]["metadata"]

    result = play(tmp_path, emu, [
        kv_task("overwrite", namespace="kv-dst", copy_from="kv-src", overwrite=True),
        kv_task("overwrite again", namespace="kv-dst", copy_from="kv-src", overwrite=True),
    ])
    assert result.rc == 0, result.output
    assert result.result("overwrite")["updated"] == ["shared"]
    assert result.result("overwrite again")["changed"] is False
    assert emu.entries("kv-dst")["shared"]["value"] == "from source"


def test_entries_faults_during_bulk_converge(tmp_path, emu):
    emu.seed_namespace("kv-faults", {"gone-1": "x", "gone-2": "y"})
    emu.clear()
    emu.fault(
        {"action": "status", "status": 500, "method": "GET", "path_regex": "/keys$"},
        {"action": "status", "status": 429, "retry_after": 1, "method": "PUT", "path_regex": "/bulk$"},
        {"action": "status", "status": 503, "method": "PUT", "path_regex": "/bulk$"},
        {"action": "drop", "when": "after", "method": "PUT", "path_regex": "/bulk$"},
        {"action": "status", "status": 502, "method": "POST", "path_regex": "/bulk/delete$"},
    )
    entries = dict(("f/%03d" % i, "v%d" % i) for i in range(50))
    result = play(tmp_path, emu, [
        kv_task("write", namespace="kv-faults", entries=entries, purge=True),
        kv_task("again", namespace="kv-faults", entries=entries, purge=True),
    ])
    assert result.rc == 0, result.output
    assert result.result("write")["created_count"] == 50 and result.result("write")["deleted_count"] == 2
    assert result.result("again")["changed"] is False
    stored = emu.entries("kv-faults")
    assert sorted(stored) == sorted(entries)
    statuses = [r["status"] for r in emu.requests()]
    assert {500, 429, 503, 502, 0} <= set(statuses)


def test_entries_bad_input_fails_before_any_write(tmp_path, emu):
    emu.seed_namespace("kv-bad", {})
    emu.clear()
    cases = [
        ("number", dict(entries={"a": "ok", "b": 5}), "entries['b']: the value must be a string, not int"),
        ("list", dict(entries={"a": {"value": ["x"]}}), "entries['a']: the value must be a string, not list"),
        ("long key", dict(entries={"k" * 513: "v"}), "is 513 bytes long; the limit is 512 bytes"),
        ("short ttl", dict(entries={"t": {"value": "canary-ttl-value", "expiration_ttl": 30}}), "expiration_ttl is 30"),
        ("reserved", dict(entries={"r": {"value": "v", "metadata": {HASH: "x"}}}), "reserved"),
        ("unknown field", dict(entries={"u": {"value": "v", "ttl": 60}}), "unknown field(s) ttl"),
        ("prefix", dict(prefix="app/", entries={"other": "v"}), "does not start with prefix 'app/'"),
        ("absent purge", dict(state="absent", purge=True, entries={"a": ""}), "only valid with state=present"),
        ("dot key", dict(entries={"..": "v"}), "is not a valid key name"),
        ("no namespace", dict(namespace="kv-nope", entries={"a": "v"}), "KV namespace 'kv-nope' not found"),
    ]
    tasks = []
    for name, args, _msg in cases:
        args = dict(args)
        args.setdefault("namespace", "kv-bad")
        tasks.append(failing(kv_task(name, **args)))
    result = play(tmp_path, emu, tasks)
    assert result.rc == 0, result.output
    for name, _args, msg in cases:
        got = result.result(name)
        assert got.get("failed"), (name, got)
        assert msg in got["msg"], (name, got["msg"])
    assert "canary-ttl-value" not in json.dumps([dict(r, invocation=None) for r in result.results])
    assert emu.writes() == []
    assert emu.entries("kv-bad") == {}
    # Only the last case got as far as the API (to find the namespace).
    assert len(emu.requests()) == 1


def test_token_and_secret_values_stay_out_of_vvv_output(tmp_path, canary_emu):
    emu = canary_emu
    emu.seed_namespace("kv-secret", {})
    secret = "canary-value-8f0c1d2e"
    result = play(tmp_path, emu, [
        dict(ns_task("namespace", title="kv-secret"), no_log=False),
        dict(kv_task("secret", namespace="kv-secret", entries={"token": secret}), no_log=True),
        kv_task("plain", namespace="kv-secret", entries={"flag": "on"}),
    ], verbose=3, json_output=False, diff=True)
    assert result.rc == 0, result.output
    assert emu.entries("kv-secret")["token"]["value"] == secret
    assert emu.token not in result.output
    assert secret not in result.output.replace("'token': 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'", "")
