"""cloudflare_info and cloudflare_d1_database, end to end through ansible-playbook against the emulator."""

import copy
import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import EMULATOR_DIR, CloudflareEmulator, stop_emulator
from playbook import run_play

ACCOUNT_ID = "0b1ac6d2c3f84e8f9a7d5e1c2b3a4f50"
OTHER_ACCOUNT_ID = "9c8b7a6d5e4f40312a1b2c3d4e5f6a7b"
ZONE_IO = "5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60"
ZONE_EARTH = "7a6b5c4d3e2f4a1b8c9d0e1f2a3b4c5d"
KV_SESSIONS = "0f2ac74b498b48028cb68387c421e279"
SECRET_BINDING_VALUE = "binding-secret-5b0f7c1e"
BAD_TOKEN = "bad-token-3f1b2c"


def script(text):
    return {"index.js": "export default { async fetch() { return new Response(%s) } }" % json.dumps(text)}


# A mixed account: a few of everything, tunnels with and without connections (and one deleted),
# two zones with records, routes and domains; plus a second account whose resources must not show.
SEED = {
    "accounts": [{"id": ACCOUNT_ID, "name": "BlackRoad"}, {"id": OTHER_ACCOUNT_ID, "name": "Elsewhere"}],
    "zones": [
        {"id": ZONE_IO, "name": "blackroad.io", "account_id": ACCOUNT_ID},
        {"id": ZONE_EARTH, "name": "lucidia.earth", "account_id": ACCOUNT_ID},
        {"id": "1e2d3c4b5a6948372615a4b3c2d1e0f9", "name": "elsewhere.dev", "account_id": OTHER_ACCOUNT_ID},
    ],
    "dns_records": [
        {"zone": "blackroad.io", "type": "A", "name": "www.blackroad.io", "content": "192.0.2.10", "proxied": True, "ttl": 1},
        {"zone": "blackroad.io", "type": "AAAA", "name": "www.blackroad.io", "content": "2001:db8::10", "proxied": True,
         "ttl": 1},
        {"zone": "blackroad.io", "type": "TXT", "name": "blackroad.io", "content": "\"v=spf1 -all\"", "ttl": 300},
        {"zone": "lucidia.earth", "type": "CNAME", "name": "app.lucidia.earth", "content": "blackroad.io",
         "proxied": False, "ttl": 3600},
        {"zone": "elsewhere.dev", "type": "A", "name": "elsewhere.dev", "content": "192.0.2.99", "ttl": 1},
    ],
    "workers": [
        {"name": "api", "files": script("api"), "created_on": "2024-09-01T10:00:00.000000Z",
         "modified_on": "2024-09-02T10:00:00.000000Z",
         "bindings": [{"type": "kv_namespace", "name": "SESSIONS", "namespace_id": KV_SESSIONS},
                      {"type": "secret_text", "name": "SIGNING_KEY", "text": SECRET_BINDING_VALUE}]},
        {"name": "edge-router", "files": script("router")},
        {"name": "telemetry", "files": script("telemetry")},
        {"name": "not-mine", "files": script("x"), "account_id": OTHER_ACCOUNT_ID},
    ],
    "routes": [
        {"zone": "blackroad.io", "pattern": "blackroad.io/api/*", "script": "api"},
        {"zone": "blackroad.io", "pattern": "www.blackroad.io/*", "script": "edge-router"},
        {"zone": "lucidia.earth", "pattern": "lucidia.earth/t/*", "script": "telemetry"},
    ],
    "worker_domains": [{"hostname": "api.lucidia.earth", "service": "api", "account_id": ACCOUNT_ID}],
    "kv_namespaces": [{"id": KV_SESSIONS, "title": "sessions"}, {"title": "cache"}, {"title": "flags"},
                      {"title": "theirs", "account_id": OTHER_ACCOUNT_ID}],
    "d1_databases": [{"name": "app"}, {"name": "app-staging"}, {"name": "their-db", "account_id": OTHER_ACCOUNT_ID}],
    "r2_buckets": [{"name": "assets"}, {"name": "backups"}],
    "tunnels": [
        {"name": "lab", "connections": [{"colo_name": "dfw01"}, {"colo_name": "ord02"},
                                        {"colo_name": "dfw02"}, {"colo_name": "ord01"}]},
        {"name": "flaky", "connections": [{"colo_name": "dfw01"}, {"colo_name": "ord02", "is_pending_reconnect": True}]},
        {"name": "idle"},
        {"name": "gone", "deleted_at": "2024-09-01T00:00:00Z"},
    ],
}

DEFAULT_TYPES = ["workers", "kv_namespaces", "d1_databases", "r2_buckets", "tunnels", "zones", "worker_routes",
                 "worker_domains"]
ALL_TYPES = DEFAULT_TYPES + ["dns_records"]


@pytest.fixture
def emu(cf_emulator):
    seed(cf_emulator, SEED)
    return cf_emulator


def seed(emulator, doc):
    emulator.seed(copy.deepcopy(doc))
    emulator.reset_requests()


def env(emu, token=None):
    return {"CLOUDFLARE_API_TOKEN": token or emu.token, "CLOUDFLARE_BASE_URL": emu.url}


def task(_label, _module, **args):
    return {"name": _label, "blackroad.infra." + _module: args}


def expected(state):
    """What cloudflare_info must return for the BlackRoad account, from the emulator's own dump."""
    zones = {z["id"]: z["name"] for z in state["zones"] if z["account_id"] == ACCOUNT_ID}

    def mine(item):
        return item.get("account_id", ACCOUNT_ID) == ACCOUNT_ID

    return {
        "workers": sorted(w["name"] for w in state["workers"] if mine(w)),
        "kv_namespaces": sorted((n["title"], n["id"]) for n in state["kv_namespaces"] if mine(n)),
        "d1_databases": sorted((d["name"], d["uuid"]) for d in state["d1_databases"] if mine(d)),
        "r2_buckets": sorted(b["name"] for b in state["r2_buckets"] if mine(b)),
        "tunnels": sorted(t["name"] for t in state["tunnels"] if t["account_tag"] == ACCOUNT_ID and not t.get("deleted_at")),
        "zones": sorted(zones.values()),
        "dns_records": sorted((zones[r["zone"]], r["name"], r["type"], r["content"]) for r in state["dns_records"]
                              if r["zone"] in zones),
        "worker_routes": sorted((zones[r["zone_id"]], r["pattern"], r["script"]) for r in state["routes"]
                                if r["zone_id"] in zones),
        "worker_domains": sorted(d["hostname"] for d in state["worker_domains"] if mine(d)),
    }


def got(result):
    return {
        "workers": [w["name"] for w in result.get("workers", [])],
        "kv_namespaces": [(n["title"], n["id"]) for n in result.get("kv_namespaces", [])],
        "d1_databases": [(d["name"], d["uuid"]) for d in result.get("d1_databases", [])],
        "r2_buckets": [b["name"] for b in result.get("r2_buckets", [])],
        "tunnels": [t["name"] for t in result.get("tunnels", [])],
        "zones": [z["name"] for z in result.get("zones", [])],
        "dns_records": [(r["zone"], r["name"], r["type"], r["content"]) for r in result.get("dns_records", [])],
        "worker_routes": [(r["zone"], r["pattern"], r["script"]) for r in result.get("worker_routes", [])],
        "worker_domains": [d["hostname"] for d in result.get("worker_domains", [])],
    }


def by_path(requests):
    return sorted(r["path"] for r in requests)


# ---------------------------------------------------------------------------- cloudflare_info
def test_info_returns_exactly_what_is_there(tmp_path, emu):
    state = emu.state()
    want = expected(state)
    assert len(want["tunnels"]) == 3 and len(want["dns_records"]) == 4  # the seed is what the test thinks

    tasks = [
        task("Everything", "cloudflare_info", account="BlackRoad", gather=ALL_TYPES),
        task("Defaults", "cloudflare_info", account="BlackRoad"),
        dict(task("Defaults in check mode", "cloudflare_info", account="BlackRoad"), check_mode=True),
        task("Subset by account id", "cloudflare_info", account=ACCOUNT_ID, gather=["d1_databases", "tunnels"]),
        task("One zone's records", "cloudflare_info", account=ACCOUNT_ID, gather=["dns_records"],
             zones=["blackroad.io"]),
        task("Zones by id and name", "cloudflare_info", account=ACCOUNT_ID, gather=["dns_records", "worker_routes"],
             zones=[ZONE_EARTH, "blackroad.io."]),
        task("Worker details", "cloudflare_info", account=ACCOUNT_ID, gather=["workers"], worker_details=True),
    ]
    result = run_play(tmp_path, tasks, env(emu))
    assert result.rc == 0, result.output
    assert result.changed == 0
    log = emu.requests()
    assert [r for r in log if r["method"] != "GET"] == []
    assert all(r["status"] == 200 for r in log), log

    # Everything: exactly the account's resources, nothing of the other account, deleted tunnel left out.
    full = result.result("Everything")
    assert full["changed"] is False
    assert full["account_id"] == ACCOUNT_ID
    assert got(full) == want
    assert full["summary"] == dict((kind, len(want[kind])) for kind in ALL_TYPES)
    # 1 account lookup + 1 zone list + 6 account-wide lists + 2 zones x (dns records + routes).
    assert full["api_calls"] == 1 + 1 + 6 + 2 * 2
    first = log[:full["api_calls"]]
    assert by_path(first) == sorted(
        ["/accounts", "/zones"]
        + ["/accounts/%s/%s" % (ACCOUNT_ID, p) for p in (
            "workers/scripts", "storage/kv/namespaces", "d1/database", "r2/buckets", "cfd_tunnel", "workers/domains")]
        + ["/zones/%s/%s" % (z, p) for z in (ZONE_IO, ZONE_EARTH) for p in ("dns_records", "workers/routes")])

    tunnels = dict((t["name"], t) for t in full["tunnels"])
    assert (tunnels["lab"]["status"], tunnels["lab"]["connections"]) == ("healthy", 4)
    assert (tunnels["flaky"]["status"], tunnels["flaky"]["connections"]) == ("degraded", 2)
    assert (tunnels["idle"]["status"], tunnels["idle"]["connections"]) == ("inactive", 0)
    api = full["workers"][0]
    assert api == {"name": "api", "created_on": "2024-09-01T10:00:00Z", "modified_on": "2024-09-02T10:00:00Z"}
    www_a = [r for r in full["dns_records"] if r["name"] == "www.blackroad.io" and r["type"] == "A"][0]
    assert (www_a["zone_id"], www_a["proxied"], www_a["ttl"]) == (ZONE_IO, True, 1)
    assert full["worker_domains"][0]["service"] == "api" and full["worker_domains"][0]["zone_name"] == "lucidia.earth"

    # Defaults: all but dns_records, same calls less the two DNS lists; check mode is the same run.
    for name in ("Defaults", "Defaults in check mode"):
        default = result.result(name)
        assert sorted(default["summary"]) == sorted(DEFAULT_TYPES)
        assert "dns_records" not in default
        assert got(default) == dict(want, dns_records=[])
        assert default["api_calls"] == 1 + 1 + 6 + 2
        assert default["changed"] is False

    # A subset, account given by id: no account lookup, one call per type.
    subset = result.result("Subset by account id")
    assert subset["summary"] == {"d1_databases": 2, "tunnels": 3}
    assert set(subset) >= {"d1_databases", "tunnels"} and "workers" not in subset and "zones" not in subset
    assert subset["api_calls"] == 2

    # zones filter: the zone list once, then DNS records of the named zone only.
    one = result.result("One zone's records")
    assert [r[0] for r in got(one)["dns_records"]] == ["blackroad.io"] * 3
    assert one["summary"] == {"dns_records": 3}
    assert one["api_calls"] == 2
    both = result.result("Zones by id and name")
    assert got(both)["dns_records"] == want["dns_records"]
    assert got(both)["worker_routes"] == want["worker_routes"]
    assert both["api_calls"] == 1 + 2 * 2

    # Worker details: one settings call per script; secret bindings show no value.
    details = result.result("Worker details")
    assert details["api_calls"] == 1 + 3
    bindings = dict((w["name"], w["bindings"]) for w in details["workers"])
    assert bindings["edge-router"] == [] and bindings["telemetry"] == []
    assert {"type": "kv_namespace", "name": "SESSIONS", "namespace_id": KV_SESSIONS} in bindings["api"]
    assert {"type": "secret_text", "name": "SIGNING_KEY"} in bindings["api"]
    assert SECRET_BINDING_VALUE not in json.dumps(result.data)

    assert len(log) == sum(r["api_calls"] for r in result.results)


def test_info_pages_only_when_needed(tmp_path, emu):
    """More KV namespaces than one page (100) holds: exactly two pages, no empty third one."""
    doc = copy.deepcopy(SEED)
    doc["kv_namespaces"] = [{"title": "ns-%03d" % i} for i in range(130)]
    seed(emu, doc)
    result = run_play(tmp_path, [task("KV", "cloudflare_info", account=ACCOUNT_ID, gather=["kv_namespaces"])], env(emu))
    assert result.rc == 0, result.output
    kv = result.result("KV")
    assert kv["summary"] == {"kv_namespaces": 130}
    assert [n["title"] for n in kv["kv_namespaces"]] == ["ns-%03d" % i for i in range(130)]
    assert kv["api_calls"] == 2
    assert [r["query"].get("page") for r in emu.requests()] == ["1", "2"]


def test_info_r2_buckets_follow_the_cursor(tmp_path, emu):
    """R2 lists by cursor: 25 buckets come in one call (per_page 1000); 1,025 in two, the second
    asking with the first answer's result_info.cursor, and no third call."""
    for count, calls in ((25, 1), (1025, 2)):
        doc = copy.deepcopy(SEED)
        doc["r2_buckets"] = [{"name": "bucket-%04d" % i} for i in range(count)]
        seed(emu, doc)
        result = run_play(tmp_path, [task("R2", "cloudflare_info", account=ACCOUNT_ID, gather=["r2_buckets"])],
                          env(emu))
        assert result.rc == 0, result.output
        r2 = result.result("R2")
        assert r2["summary"] == {"r2_buckets": count}
        assert [b["name"] for b in r2["r2_buckets"]] == ["bucket-%04d" % i for i in range(count)]
        assert r2["api_calls"] == calls
        queries = [r["query"] for r in emu.requests()]
        assert [q.get("per_page") for q in queries] == ["1000"] * calls
        assert "cursor" not in queries[0]
        assert all(q.get("cursor") for q in queries[1:])


def test_info_bad_input_and_bad_token_fail_clearly(tmp_path, emu):
    tasks = [
        dict(task("Unknown zone", "cloudflare_info", account=ACCOUNT_ID, gather=["dns_records"],
                  zones=["blackroad.io", "nope.example", "elsewhere.dev"]), ignore_errors=True),
        dict(task("Unknown account", "cloudflare_info", account="Nobody"), ignore_errors=True),
        dict(task("Unknown type", "cloudflare_info", gather=["workers", "queues"]), ignore_errors=True),
        dict(task("Nothing to gather", "cloudflare_info", gather=[]), ignore_errors=True),
        dict(task("Blank zone", "cloudflare_info", gather=["dns_records"], zones=[" "]), ignore_errors=True),
        dict(task("Bad token", "cloudflare_info", account=ACCOUNT_ID, api_token=BAD_TOKEN), ignore_errors=True),
    ]
    result = run_play(tmp_path, tasks, env(emu))
    assert result.rc == 0, result.output
    r = result.result("Unknown zone")
    assert r["failed"] and "'nope.example'" in r["msg"] and "'elsewhere.dev'" in r["msg"] and "blackroad.io'" not in r["msg"]
    assert r["api_calls"] == 1  # the zone list, and nothing after it
    r = result.result("Unknown account")
    assert r["failed"] and r["msg"] == "account 'Nobody': not found (or the API token cannot see it)"
    r = result.result("Unknown type")
    assert r["failed"] and "queues" in r["msg"] and "gather" in r["msg"]
    r = result.result("Nothing to gather")
    assert r["failed"] and "gather must name at least one" in r["msg"] and r.get("api_calls", 0) == 0
    r = result.result("Blank zone")
    assert r["failed"] and "zones" in r["msg"] and r.get("api_calls", 0) == 0
    assert emu.writes() == []

    r = result.result("Bad token")
    assert r["failed"] and r["api_calls"] == 1
    assert "HTTP 403" in r["msg"] and "API token" in r["msg"], r["msg"]
    assert BAD_TOKEN not in result.output


# ---------------------------------------------------------------------------- cloudflare_d1_database
def d1_names(emu):
    return sorted(d["name"] for d in emu.state()["d1_databases"] if d.get("account_id", ACCOUNT_ID) == ACCOUNT_ID)


def test_d1_lifecycle_check_diff_and_honest_changed(tmp_path, emu):
    emu.reset_requests()
    plan = [
        dict(task("Predict create", "cloudflare_d1_database", name="orders", location_hint="weur", account=ACCOUNT_ID),
             check_mode=True),
        task("Create", "cloudflare_d1_database", name="orders", location_hint="weur", account=ACCOUNT_ID),
        task("Again", "cloudflare_d1_database", name="orders", account=ACCOUNT_ID),
        dict(task("Predict delete", "cloudflare_d1_database", name="orders", state="absent", account=ACCOUNT_ID),
             check_mode=True),
        task("Delete", "cloudflare_d1_database", name="orders", state="absent", account=ACCOUNT_ID),
        task("Delete again", "cloudflare_d1_database", name="orders", state="absent", account=ACCOUNT_ID),
        task("Delete a seeded one, account by name", "cloudflare_d1_database", name="app-staging", state="absent",
             account="BlackRoad"),
        task("A prefix of an existing name is another database", "cloudflare_d1_database", name="ap",
             state="absent", account=ACCOUNT_ID),
    ]
    result = run_play(tmp_path, plan, env(emu), diff=True)
    assert result.rc == 0, result.output
    log = emu.requests()
    calls = dict((r["task"], r["api_calls"]) for r in result.results)
    assert len(log) == sum(calls.values())

    predict = result.result("Predict create")
    assert predict["changed"] is True and calls["Predict create"] == 1
    assert predict["diff"]["before"] == {} and predict["diff"]["after"] == {"name": "orders"}
    assert [r for r in log[:1] if r["method"] != "GET"] == []

    create = result.result("Create")
    assert create["changed"] is True and calls["Create"] == 2
    db = create["database"]
    assert db["name"] == "orders" and db["uuid"]
    assert create["diff"]["before"] == {} and create["diff"]["after"]["uuid"] == db["uuid"]
    post = [r for r in log if r["method"] == "POST"]
    assert len(post) == 1 and post[0]["path"] == "/accounts/%s/d1/database" % ACCOUNT_ID

    again = result.result("Again")
    assert again["changed"] is False and calls["Again"] == 1
    assert again["database"] == db
    assert again["diff"]["before"] == again["diff"]["after"] == db

    predict = result.result("Predict delete")
    assert predict["changed"] is True and calls["Predict delete"] == 1
    assert predict["diff"]["before"]["uuid"] == db["uuid"] and predict["diff"]["after"] == {}

    delete = result.result("Delete")
    assert delete["changed"] is True and calls["Delete"] == 2 and delete["database"]["uuid"] == db["uuid"]
    deletes = [r for r in log if r["method"] == "DELETE"]
    assert deletes[0]["path"] == "/accounts/%s/d1/database/%s" % (ACCOUNT_ID, db["uuid"])

    again = result.result("Delete again")
    assert again["changed"] is False and calls["Delete again"] == 1 and again["database"] == {}

    seeded = result.result("Delete a seeded one, account by name")
    assert seeded["changed"] is True and calls["Delete a seeded one, account by name"] == 3
    prefix = result.result("A prefix of an existing name is another database")
    assert prefix["changed"] is False

    # Writes: exactly one POST and two DELETEs, none from the check-mode or no-op tasks.
    assert [r["method"] for r in log if r["method"] != "GET"] == ["POST", "DELETE", "DELETE"]
    assert d1_names(emu) == ["app"]
    assert "--- before: D1 database orders" not in result.output  # json callback: diffs are data, not text


def test_d1_faults_converge_without_duplicates(tmp_path, emu):
    emu.inject(*[
        # The first list is rate limited, the first create fails with a 503 before it lands,
        # the second create lands but its answer is lost.
        {"action": "status", "status": 429, "retry_after": 1, "method": "GET", "path_regex": "/d1/database$", "count": 1},
        {"action": "status", "status": 503, "method": "POST", "path_regex": "/d1/database$", "count": 1},
        {"action": "drop", "when": "after", "method": "POST", "path_regex": "/d1/database$", "count": 1},
        # The delete fails with a 502, then lands but its answer is lost; the retry then gets a 404.
        {"action": "status", "status": 502, "method": "DELETE", "path_regex": "/d1/database/", "count": 1},
        {"action": "drop", "when": "after", "method": "DELETE", "path_regex": "/d1/database/", "count": 1},
    ])
    result = run_play(tmp_path, [
        task("Create through faults", "cloudflare_d1_database", name="jobs", account=ACCOUNT_ID),
        task("Check", "cloudflare_info", account=ACCOUNT_ID, gather=["d1_databases"]),
        task("Delete through faults", "cloudflare_d1_database", name="jobs", state="absent", account=ACCOUNT_ID),
        task("Then nothing to do", "cloudflare_d1_database", name="jobs", state="absent", account=ACCOUNT_ID),
    ], env(emu))
    assert result.rc == 0, result.output
    r = result.result("Create through faults")
    assert r["changed"] is True and r["database"]["name"] == "jobs"
    # Exactly one "jobs" database existed after the create, and it is the one the task returned.
    listed = [d for d in result.result("Check")["d1_databases"] if d["name"] == "jobs"]
    assert [d["uuid"] for d in listed] == [r["database"]["uuid"]]
    assert result.result("Delete through faults")["changed"] is True
    assert result.result("Then nothing to do")["changed"] is False
    assert d1_names(emu) == ["app", "app-staging"]
    assert [(x["method"], x["status"]) for x in emu.requests()] == [
        # create: list 429, list, POST 503, re-list (not there), POST dropped after landing, re-list (found)
        ("GET", 429), ("GET", 200), ("POST", 503), ("GET", 200), ("POST", 0), ("GET", 200),
        ("GET", 200),  # the info check
        # delete: list, DELETE 502, DELETE dropped after landing, DELETE 404 (already gone: success)
        ("GET", 200), ("DELETE", 502), ("DELETE", 0), ("DELETE", 404),
        ("GET", 200)]  # nothing to do


def test_d1_bad_input_makes_no_call(tmp_path, emu):
    bad = [("Upper case", dict(name="Orders")), ("Leading dash", dict(name="-orders")), ("Empty", dict(name="")),
           ("Space", dict(name="my db")), ("Bad hint", dict(name="orders", location_hint="mars")),
           ("Bad state", dict(name="orders", state="gone")), ("No name", dict())]
    tasks = [dict(task(label, "cloudflare_d1_database", account=ACCOUNT_ID, **args), ignore_errors=True)
             for label, args in bad]
    result = run_play(tmp_path, tasks, env(emu))
    assert result.rc == 0, result.output
    for label, args in bad:
        r = result.result(label)
        assert r["failed"], label
        assert r.get("api_calls", 0) == 0, label
    assert "'Orders' is not a valid D1 database name" in result.result("Upper case")["msg"]
    assert "'-orders'" in result.result("Leading dash")["msg"]
    assert "location_hint" in result.result("Bad hint")["msg"] and "mars" in result.result("Bad hint")["msg"]
    assert "name" in result.result("No name")["msg"]
    assert emu.requests() == []


@pytest.fixture
def canary_emulator(tmp_path):
    """An emulator whose token is a recognisable canary (the shared fixture's token is random hex)."""
    token = "canary-" + str(uuid.uuid4())
    doc = copy.deepcopy(SEED)
    # One account only, so that the modules also find "the token's only account" by themselves.
    doc["accounts"] = doc["accounts"][:1]
    doc["zones"] = doc["zones"][:2]
    for kind in ("dns_records", "workers", "kv_namespaces", "d1_databases"):
        doc[kind] = [x for x in doc[kind] if x.get("account_id") != OTHER_ACCOUNT_ID and x.get("zone") != "elsewhere.dev"]
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(doc))
    env = dict(os.environ, CLOUDFLARE_EMULATOR_TOKENS=token,
               PYTHONPATH=str(EMULATOR_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cloudflare_emulator", "--listen", "127.0.0.1:0", "--seed",
                             str(seed_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()
    try:
        assert "listening on" in line, line + proc.stderr.read()
        emulator = CloudflareEmulator(proc, line.strip().rsplit(" ", 1)[-1], token)
        yield emulator
        leftover = emulator.violations()
    finally:
        stop_emulator(proc)
    assert not leftover, json.dumps(leftover, indent=2)[:4000]


def test_canary_token_never_in_verbose_output(tmp_path, canary_emulator):
    emu = canary_emulator
    token = emu.token
    tasks = [
        task("Info", "cloudflare_info", gather=ALL_TYPES, worker_details=True),
        task("Create", "cloudflare_d1_database", name="canary-db", location_hint="enam"),
        task("Delete", "cloudflare_d1_database", name="canary-db", state="absent"),
        task("Token as an option", "cloudflare_info", api_token=token, account=ACCOUNT_ID, gather=["zones"]),
        dict(task("Failing call", "cloudflare_d1_database", name="x", account="0" * 32), ignore_errors=True),
    ]
    result = run_play(tmp_path, tasks, env(emu), verbose=3, diff=True, json_output=False)
    assert result.rc == 0, result.output
    assert "changed=2" in result.output
    assert "api.lucidia.earth" in result.output and "SIGNING_KEY" in result.output  # the results were printed
    assert token not in result.output
    assert token.split("-", 1)[1] not in result.output
    assert SECRET_BINDING_VALUE not in result.output
