"""End-to-end tests of blackroad.infra.cloudflare_worker against the Cloudflare emulator."""

import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import CloudflareEmulator, cloudflare_env, start_emulator, stop_emulator  # noqa: E402
from playbook import run_play  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workers"
ACCOUNT = "0b1ac6d2c3f84e8f9a7d5e1c2b3a4f50"
ZONE_IO = "5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60"
ZONE_EARTH = "7a6b5c4d3e2f4a1b8c9d0e1f2a3b4c5d"
KV_ID = "11111111111111111111111111111111"
D1_ID = "2f1c3a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b"
SECRET_1 = "s3cr3t-" + uuid.uuid4().hex
SECRET_2 = "r0tated-" + uuid.uuid4().hex

SEED = {
    "accounts": [{"id": ACCOUNT, "name": "BlackRoad"}],
    "zones": [
        {"id": ZONE_IO, "name": "blackroad.io", "account": "BlackRoad"},
        {"id": ZONE_EARTH, "name": "lucidia.earth", "account": "BlackRoad"},
    ],
    "kv_namespaces": [{"id": KV_ID, "title": "edge-cache"}],
    "d1_databases": [{"uuid": D1_ID, "name": "edge-db"}],
    "r2_buckets": [{"name": "edge-assets"}],
    "workers": [{"name": "other-worker",
                 "files": {"index.js": "export default { async fetch() { return new Response('other'); } };"}}],
    "routes": [{"zone": ZONE_IO, "pattern": "blackroad.io/other/*", "script": "other-worker"}],
    "worker_domains": [{"hostname": "other.blackroad.io", "service": "other-worker", "zone_id": ZONE_IO,
                        "environment": "production"}],
}


@pytest.fixture
def emu(cf_emulator):
    cf_emulator.seed(SEED)
    cf_emulator.reset_requests()
    return cf_emulator


@pytest.fixture
def src(tmp_path):
    """A private copy of the fixture modules that a test may edit."""
    target = tmp_path / "src"
    shutil.copytree(FIXTURES, target)
    return target


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def worker_task(src, name="edge", register=None, **overrides):
    args = {
        "name": name,
        "account": "BlackRoad",
        "files": [str(src / f) for f in ("index.js", "util.mjs", "routes.json", "banner.txt", "empty.wasm")],
        "main_module": "index.js",
        "compatibility_date": "2024-09-23",
        "compatibility_flags": ["nodejs_compat"],
        "bindings": [
            {"type": "kv_namespace", "name": "CACHE", "namespace": "edge-cache"},
            {"type": "plain_text", "name": "GREETING", "text": "visitor"},
            {"type": "secret_text", "name": "API_KEY", "text": SECRET_1},
            {"type": "d1", "name": "DB", "database": "edge-db"},
            {"type": "r2_bucket", "name": "ASSETS", "bucket_name": "edge-assets"},
            {"type": "service", "name": "OTHER", "service": "other-worker"},
        ],
        "routes": [
            {"pattern": "blackroad.io/api/*", "zone": "blackroad.io"},
            {"pattern": "*.lucidia.earth/*"},
        ],
        "domains": [{"hostname": "edge.blackroad.io", "zone": "blackroad.io"}],
    }
    args.update(overrides)
    return {"name": register or "worker", "blackroad.infra.cloudflare_worker": args}


def script_of(emu, name="edge"):
    for w in emu.state(secrets=True)["workers"]:
        if w["name"] == name:
            return w
    return None


def routes_of(emu, script):
    return sorted((r["zone_id"], r["pattern"]) for r in emu.state()["routes"] if r["script"] == script)


def domains_of(emu, script):
    return sorted((d["hostname"], d["environment"]) for d in emu.state()["worker_domains"] if d["service"] == script)


def assert_others_untouched(emu):
    assert routes_of(emu, "other-worker") == [(ZONE_IO, "blackroad.io/other/*")]
    assert domains_of(emu, "other-worker") == [("other.blackroad.io", "production")]
    assert script_of(emu, "other-worker") is not None


def test_lifecycle(emu, src, tmp_path):
    env = cloudflare_env(emu)

    # Check mode predicts the create; then the create with every binding type, two routes (one
    # zone found from the pattern) and a custom domain. The writes are the create's alone.
    res = run_play(tmp_path, [dict(worker_task(src, register="predict"), check_mode=True), worker_task(src)],
                   env, diff=True)
    assert res.result("predict")["changed"] is True
    assert res.result("predict")["actions"] == res.result("worker")["actions"]
    out = res.result("worker")
    assert out["changed"] is True and out["uploaded"] is True, res.stdout
    assert sorted((r["method"], r["path"].rsplit("/", 2)[-2]) for r in emu.writes()) == [
        ("POST", "workers"), ("POST", "workers"), ("PUT", "scripts"), ("PUT", "workers")]
    w = script_of(emu)
    assert w["main_module"] == "index.js"
    assert {n: f["sha256"] for n, f in w["files"].items()} == {
        f: sha(src / f) for f in ("index.js", "util.mjs", "routes.json", "banner.txt", "empty.wasm")}
    assert {n: f["content_type"] for n, f in w["files"].items()} == {
        "index.js": "application/javascript+module", "util.mjs": "application/javascript+module",
        "routes.json": "application/json", "banner.txt": "text/plain", "empty.wasm": "application/wasm"}
    bindings = {b["name"]: b for b in w["bindings"]}
    assert bindings["CACHE"] == {"type": "kv_namespace", "name": "CACHE", "namespace_id": KV_ID}
    assert bindings["DB"]["database_id"] == D1_ID
    assert bindings["ASSETS"]["bucket_name"] == "edge-assets"
    assert bindings["OTHER"]["service"] == "other-worker"
    assert bindings["GREETING"]["text"] == "visitor"
    assert bindings["API_KEY"] == {"type": "secret_text", "name": "API_KEY", "text": SECRET_1}
    assert w["compatibility_date"] == "2024-09-23" and w["compatibility_flags"] == ["nodejs_compat"]
    assert routes_of(emu, "edge") == sorted([(ZONE_IO, "blackroad.io/api/*"), (ZONE_EARTH, "*.lucidia.earth/*")])
    assert domains_of(emu, "edge") == [("edge.blackroad.io", "production")]
    assert_others_untouched(emu)
    assert out["diff"]["before"]["script"] == {}
    assert {"type": "secret_text", "name": "API_KEY", "text": "(secret, write-only)"} in \
        out["diff"]["after"]["script"]["bindings"]
    assert SECRET_1 not in res.stdout

    # Second run (and the same in check mode): nothing to do, no write call.
    emu.reset_requests()
    res = run_play(tmp_path, [worker_task(src, register="again"),
                              dict(worker_task(src, register="again_check"), check_mode=True)], env, diff=True)
    assert res.changed == 0, res.stdout
    assert emu.writes() == []
    calls = res.result("again")["api_calls"]
    # accounts (by name) + KV list + D1 list + settings + content/v2 (multipart: all five modules
    # in one answer) + zones + routes x2 zones + domains; the full script download is never read.
    reads = [r for r in emu.requests() if r["method"] == "GET"]
    assert not [r for r in reads if r["path"].endswith("/workers/scripts/edge")], reads
    assert [r["path"].endswith("/content/v2") for r in reads].count(True) == 2  # two runs
    assert calls == 9, (calls, [r["path"] for r in reads])

    # Code change: util.mjs differs; the secret is not re-sent (on_create) although its text changed.
    (src / "util.mjs").write_text("export function greet(name) { return `hi, ${name}`; }\n")
    changed = worker_task(src)
    changed["blackroad.infra.cloudflare_worker"]["bindings"][2]["text"] = SECRET_2
    emu.reset_requests()
    res = run_play(tmp_path, [changed], env, diff=True)
    out = res.result("worker")
    assert out["changed"] is True and out["uploaded"] is True
    before = {f["name"]: f["sha256"] for f in out["diff"]["before"]["script"]["files"]}
    after = {f["name"]: f["sha256"] for f in out["diff"]["after"]["script"]["files"]}
    assert before["util.mjs"] != after["util.mjs"] == sha(src / "util.mjs")
    assert before["index.js"] == after["index.js"]
    assert [r["method"] for r in emu.writes()] == ["PUT"]
    assert script_of(emu)["files"]["util.mjs"]["sha256"] == sha(src / "util.mjs")
    assert {b["name"]: b for b in script_of(emu)["bindings"]}["API_KEY"]["text"] == SECRET_1
    assert SECRET_1 not in res.stdout and SECRET_2 not in res.stdout

    # secrets_update=always re-sends the secret and says so, every time.
    rotate = dict(secrets_update="always", bindings=changed["blackroad.infra.cloudflare_worker"]["bindings"])
    res = run_play(tmp_path, [worker_task(src, register="rotate", **rotate),
                              worker_task(src, register="rotate_again", **rotate)], env)
    assert res.result("rotate")["changed"] is True
    assert res.result("rotate_again")["changed"] is True
    assert "re-send secret API_KEY" in res.result("rotate_again")["actions"][0]
    assert {b["name"]: b for b in script_of(emu)["bindings"]}["API_KEY"]["text"] == SECRET_2

    # A secret that is no longer listed is deleted; other bindings change; routes and domains move.
    # Then state=absent in check mode predicts the removal and writes nothing.
    emu.reset_requests()
    res = run_play(tmp_path, [worker_task(
        src, bindings=[{"type": "plain_text", "name": "GREETING", "text": "friend"}],
        routes=[{"pattern": "blackroad.io/v2/*", "zone": ZONE_IO}],
        domains=[{"hostname": "edge.lucidia.earth", "environment": "staging"}]),
        {"name": "predict_gone", "check_mode": True,
         "blackroad.infra.cloudflare_worker": {"name": "edge", "state": "absent"}}], env, diff=True)
    out = res.result("worker")
    assert out["changed"] is True, res.stdout
    # upload, delete secret, delete 2 routes, create 1 route, detach 1 domain, attach 1 domain
    assert len(emu.writes()) == 7, emu.writes()
    assert res.result("predict_gone")["changed"] is True
    assert res.result("predict_gone")["actions"] == [
        "delete route blackroad.io/v2/* in blackroad.io", "detach domain edge.lucidia.earth", "delete script edge"]
    assert [b["name"] for b in script_of(emu)["bindings"]] == ["GREETING"]
    assert routes_of(emu, "edge") == [(ZONE_IO, "blackroad.io/v2/*")]
    assert domains_of(emu, "edge") == [("edge.lucidia.earth", "staging")]
    assert out["diff"]["before"]["routes"] != out["diff"]["after"]["routes"]
    assert out["diff"]["after"]["domains"] == [{"hostname": "edge.lucidia.earth", "zone": "lucidia.earth",
                                                "environment": "staging"}]
    assert_others_untouched(emu)

    # Absent: routes, domains and the script go; a second run is a no-op.
    emu.reset_requests()
    res = run_play(tmp_path, [
        {"name": "gone", "blackroad.infra.cloudflare_worker": {"name": "edge", "state": "absent"}},
        {"name": "gone_again", "blackroad.infra.cloudflare_worker": {"name": "edge", "state": "absent"}},
    ], env)
    assert res.result("gone")["changed"] is True
    assert res.result("gone_again")["changed"] is False
    assert script_of(emu) is None and routes_of(emu, "edge") == [] and domains_of(emu, "edge") == []
    assert sorted(r["method"] for r in emu.writes()) == ["DELETE", "DELETE", "DELETE"]
    assert_others_untouched(emu)


def test_bad_input_fails_without_writes(emu, src, tmp_path):
    env = cloudflare_env(emu)
    (src / "notes.md").write_text("not a module")
    # Every local problem of one task is reported at once, each naming the bad item.
    local = worker_task(
        src, register="local", name="Edge Worker",
        files=[str(src / "index.js"), str(src / "nope.js"), "util.mjs", str(src / "notes.md")],
        bindings=[
            {"type": "plain_text", "name": "A", "text": "first"},
            {"type": "plain_text", "name": "A", "text": "second"},
            {"type": "plain_text", "name": "my-var", "text": "value"},
            {"type": "kv_namespace", "name": "KV", "namespace": "edge-cache", "namespace_id": KV_ID},
            {"type": "r2_bucket", "name": "B"},
            {"type": "plain_text", "name": "T", "text": "some-text", "bucket_name": "b"},
        ],
        compatibility_date="2024-13-45",
        routes=[{"pattern": "example.com/*", "zone": "blackroad.io"}, {"pattern": "blackroad.io/*/x"}],
        domains=[{"hostname": "*.blackroad.io"}])
    cases = {
        "main_not_listed": dict(main_module="main.js"),
        "main_not_js": dict(main_module="routes.json"),
        # These pass local validation and fail on what the reads find, still before any write.
        "unknown_kv_title": dict(bindings=[{"type": "kv_namespace", "name": "KV", "namespace": "missing"}]),
        "other_scripts_route": dict(routes=[{"pattern": "blackroad.io/other/*"}]),
        "other_scripts_domain": dict(domains=[{"hostname": "other.blackroad.io"}]),
        "zone_not_in_account": dict(routes=[{"pattern": "example.com/*"}]),
    }
    tasks = [local] + [worker_task(src, register=case, **overrides) for case, overrides in cases.items()]
    for task in tasks:
        task["ignore_errors"] = True
    res = run_play(tmp_path, tasks, env)
    expected = {
        "local": [
            "name 'Edge Worker'",
            "nope.js does not exist",
            "'util.mjs' is not an absolute path",
            "notes.md has an unsupported extension",
            "bindings[1] (A): binding names must be unique",
            "bindings[2] (my-var): name must be a valid JavaScript identifier",
            "bindings[3] (KV): a kv_namespace binding needs exactly one of namespace_id and namespace",
            "bindings[4] (B): a r2_bucket binding needs bucket_name",
            "bindings[5] (T): bucket_name is not an option of a plain_text binding",
            "compatibility_date '2024-13-45'",
            "routes[0] (example.com/*): the pattern's host example.com is not in zone blackroad.io",
            "routes[1] (blackroad.io/*/x): wildcards only at the start",
            "domains[0] (*.blackroad.io): not a valid hostname",
        ],
        "main_not_listed": ["main_module 'main.js' is not the file name"],
        "main_not_js": ["main_module 'routes.json' must be a .js or .mjs module"],
        "unknown_kv_title": ["KV namespace titled 'missing' not found"],
        "other_scripts_route": ["routes[0] (blackroad.io/other/*)", "script 'other-worker'"],
        "other_scripts_domain": ["domains[0] (other.blackroad.io)", "attached to Worker 'other-worker'"],
        "zone_not_in_account": ["no zone of this account contains example.com"],
    }
    for case, texts in expected.items():
        out = res.result(case)
        assert out.get("failed") is True, (case, out)
        for text in texts:
            assert text in out["msg"], (case, text, out["msg"])
    assert emu.writes() == []
    assert script_of(emu) is None


def test_faults_converge_without_duplicates(emu, src, tmp_path):
    env = cloudflare_env(emu)
    emu.inject(
        {"action": "status", "status": 429, "retry_after": 1, "method": "PUT",
         "path_regex": "/workers/scripts/edge$"},
        {"action": "status", "status": 503, "method": "GET", "path_regex": "/workers/scripts/edge/settings$"},
        {"action": "drop", "when": "after", "method": "POST", "path_regex": "/zones/%s/workers/routes$" % ZONE_IO},
        {"action": "status", "status": 502, "method": "POST", "path_regex": "/zones/%s/workers/routes$" % ZONE_EARTH},
        {"action": "drop", "when": "after", "method": "PUT", "path_regex": "/workers/domains$"},
    )
    res = run_play(tmp_path, [worker_task(src)], env)
    assert res.result("worker")["changed"] is True, res.stdout
    assert routes_of(emu, "edge") == sorted([(ZONE_IO, "blackroad.io/api/*"), (ZONE_EARTH, "*.lucidia.earth/*")])
    patterns = [r["pattern"] for r in emu.state()["routes"]]
    assert len(patterns) == len(set(patterns)) == 3
    assert domains_of(emu, "edge") == [("edge.blackroad.io", "production")]
    assert all(rule["count"] == 0 for rule in emu._control("GET", "/faults"))
    emu.clear_faults()
    emu.reset_requests()
    res = run_play(tmp_path, [worker_task(src)], env)
    assert res.changed == 0 and emu.writes() == []


def test_no_secret_or_token_in_verbose_output(tmp_path, src):
    """A canary token and the secret values never show in -vvv output, diff included."""
    canary = "canary-" + uuid.uuid4().hex
    token_file = tmp_path / "tokens"
    token_file.write_text(canary + "\n")
    os.chmod(token_file, 0o600)
    proc, url, token = start_emulator(extra_args=["--token-file", str(token_file)])
    try:
        emu = CloudflareEmulator(proc, url, token)
        emu.seed(SEED)
        env = {"CLOUDFLARE_API_TOKEN": canary, "CLOUDFLARE_BASE_URL": url}
        second = worker_task(src, register="rotate", secrets_update="always")
        second["blackroad.infra.cloudflare_worker"]["bindings"][2]["text"] = SECRET_2
        bad = worker_task(src, register="bad", compatibility_date="tomorrow")
        bad["ignore_errors"] = True
        res = run_play(tmp_path, [worker_task(src), second, bad], env, diff=True, verbose=3, json_output=False)
        assert res.rc == 0, res.output[-3000:]
        assert "changed=2" in res.stdout
        assert "(secret, write-only)" in res.output
        for value in (canary, SECRET_1, SECRET_2):
            assert value not in res.output
        assert {b["name"]: b for b in script_of(emu)["bindings"]}["API_KEY"]["text"] == SECRET_2
        assert emu.violations() == []
    finally:
        stop_emulator(proc)
