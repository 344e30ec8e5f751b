"""cloudflare_dns_records, end to end through ansible-playbook against the emulator."""

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import EMULATOR_DIR, CloudflareEmulator, stop_emulator  # noqa: E402
from playbook import run_play  # noqa: E402

ZONE = "blackroad.io"
ZONE_ID = "5d3f1e2a9b8c4d7e6f0a1b2c3d4e5f60"
OWNER = "managed-by:blackroad-infra"
BATCH = "/dns_records/batch"

ALL_TYPES = [
    {"name": "@", "type": "A", "content": "192.0.2.10", "proxied": True},
    {"name": "@", "type": "AAAA", "content": "2001:DB8:0:0::10", "proxied": True},
    {"name": "www", "type": "CNAME", "content": "blackroad.io.", "proxied": True},
    {"name": "@", "type": "MX", "content": "mx1.mail.example.net", "priority": 10},
    {"name": "blackroad.io.", "type": "MX", "content": "MX2.mail.example.net.", "priority": 20},
    {"name": "@", "type": "TXT", "content": "v=spf1 include:_spf.example.net -all", "ttl": 3600},
    {"name": "_dmarc", "type": "TXT", "content": '"v=DMARC1; p=reject"', "ttl": 300},
    {"name": "_sip._tcp", "type": "SRV", "data": {"priority": 10, "weight": 5, "port": 5060, "target": "sip.example.com"}},
    {"name": "_xmpp._tcp.blackroad.io", "type": "SRV", "content": "5 0 5222 xmpp.example.com."},
    {"name": "@", "type": "CAA", "data": {"flags": 0, "tag": "issue", "value": "letsencrypt.org"}},
    {"name": "@", "type": "CAA", "content": '0 iodef "mailto:security@blackroad.io"'},
    {"name": "dev", "type": "NS", "content": "ns1.example.net"},
    {"name": "status", "type": "CNAME", "content": "status.example.net", "comment": "Status page", "tags": ["team:sre"]},
]


@pytest.fixture
def emu(cf_emulator):
    """The shared emulator; its teardown fails the test on any contract violation."""
    return cf_emulator


def check_violations(emu):
    violations = emu.violations(clear=True)
    assert not violations, json.dumps(violations, indent=2)[:4000]


def env(emu):
    return {"CLOUDFLARE_API_TOKEN": emu.token, "CLOUDFLARE_BASE_URL": emu.url}


def task(name, ignore_errors=False, **args):
    args.setdefault("zone", ZONE)
    out = {"name": name, "blackroad.infra.cloudflare_dns_records": args}
    if ignore_errors:
        out["ignore_errors"] = True
    return out


def zone_records(emu, zone=ZONE):
    return [r for r in emu.state()["dns_records"] if r["zone_name"] == zone]


def named(records, name, rtype):
    return [r for r in records if r["name"] == name and r["type"] == rtype]


def batches(requests):
    return [r for r in requests if r["method"] == "POST" and r["path"].endswith(BATCH)]


def seed_records(emu, records):
    doc = emu.state()
    doc["dns_records"] = doc["dns_records"] + [dict(r, zone=ZONE) for r in records]
    emu.seed(doc)


def many(count, prefix="h", base="10.0"):
    return [{"name": "%s%d" % (prefix, i), "type": "A", "content": "%s.%d.%d" % (base, i // 250, i % 250 + 1),
             "ttl": 300} for i in range(count)]


def test_all_types_check_diff_create_and_noop(tmp_path, emu):
    plan_task = dict(task("Plan", records=ALL_TYPES), check_mode=True)
    result = run_play(tmp_path, [plan_task, task("Create", records=ALL_TYPES), task("Again", records=ALL_TYPES)],
                      env(emu), diff=True)
    plan, create, again = (result.result(n) for n in ("Plan", "Create", "Again"))
    requests = emu.requests()
    # Check mode predicts the change, writes nothing (its requests come first) and shows every record.
    assert plan["changed"] and not plan.get("failed"), plan
    assert plan["api_calls"] == 2 and [r["method"] for r in requests[:2]] == ["GET", "GET"]
    after = plan["diff"]["after"]
    for line in ("blackroad.io. auto IN A 192.0.2.10 proxied", "blackroad.io. auto IN AAAA 2001:db8::10 proxied",
                 "www.blackroad.io. auto IN CNAME blackroad.io. proxied", "blackroad.io. auto IN MX 20 mx2.mail.example.net.",
                 'blackroad.io. 3600 IN TXT "v=spf1 include:_spf.example.net -all"',
                 '_dmarc.blackroad.io. 300 IN TXT "v=DMARC1; p=reject"',
                 "_sip._tcp.blackroad.io. auto IN SRV 10 5 5060 sip.example.com.",
                 "_xmpp._tcp.blackroad.io. auto IN SRV 5 0 5222 xmpp.example.com.",
                 'blackroad.io. auto IN CAA 0 issue "letsencrypt.org"', "dev.blackroad.io. auto IN NS ns1.example.net.",
                 "status.blackroad.io. auto IN CNAME status.example.net. ; comment='Status page' ; tags=team:sre"):
        assert line in after, after
    assert plan["diff"]["before"] == ""
    assert len(plan["changes"]["created"]) == len(ALL_TYPES)
    assert all("id" not in r for r in plan["records"])

    assert create["changed"] and len(create["changes"]["created"]) == len(ALL_TYPES)
    assert create["api_calls"] == 3  # zone lookup, list, one batch
    # The second run changes nothing and only reads (its requests come last).
    assert not again["changed"], again
    assert again["api_calls"] == 2 and [r["method"] for r in requests[-2:]] == ["GET", "GET"]
    assert again["changes"] == {"created": [], "updated": [], "deleted": []}
    assert again["diff"]["before"] == again["diff"]["after"] == ""
    assert [r["id"] for r in again["records"]] == [r["id"] for r in create["records"]]
    assert len(batches(requests)) == 1 and len(emu.writes()) == 1

    records = zone_records(emu)
    assert len(records) == len(ALL_TYPES)
    assert all(OWNER in r["tags"] for r in records)
    assert named(records, "status.blackroad.io", "CNAME")[0]["tags"] == sorted(["team:sre", OWNER])
    srv = {r["data"]["port"]: r for r in named(records, "_xmpp._tcp.blackroad.io", "SRV")}
    assert srv[5222]["data"]["target"] == "xmpp.example.com" and srv[5222]["data"]["priority"] == 5
    mx = sorted(r["content"] for r in named(records, "blackroad.io", "MX"))
    assert mx == ["mx1.mail.example.net", "mx2.mail.example.net"]
    by_type = dict((r["type"], r) for r in create["records"])
    assert by_type["AAAA"]["content"] == "2001:db8::10"
    assert by_type["NS"]["name"] == "dev.blackroad.io"


def test_value_change_updates_in_place_with_diff(tmp_path, emu):
    first = [
        {"name": "www", "type": "A", "content": "192.0.2.1", "ttl": 300},
        {"name": "www", "type": "TXT", "content": "site-verification=one"},
        {"name": "@", "type": "MX", "content": "mx.example.net", "priority": 10},
        {"name": "keep", "type": "AAAA", "content": "2001:db8::1"},
    ]
    second = [
        {"name": "www", "type": "A", "content": "192.0.2.2", "ttl": 300},
        {"name": "www", "type": "TXT", "content": "site-verification=two"},
        {"name": "@", "type": "MX", "content": "mx.example.net", "priority": 20},
        {"name": "keep", "type": "AAAA", "content": "2001:db8:0::1", "comment": "now with a comment"},
    ]
    tasks = [task("Create", records=first), task("Change", records=second),
             task("Same", account="BlackRoad", records=second)]
    result = run_play(tmp_path, tasks, env(emu), diff=True)
    create, change, same = (result.result(n) for n in ("Create", "Change", "Same"))
    assert change["changed"] and not same["changed"]
    assert change["changes"]["created"] == [] and change["changes"]["deleted"] == []
    assert len(change["changes"]["updated"]) == 4
    assert change["api_calls"] == 3
    before, after = change["diff"]["before"], change["diff"]["after"]
    assert "www.blackroad.io. 300 IN A 192.0.2.1" in before and "www.blackroad.io. 300 IN A 192.0.2.2" in after
    assert "blackroad.io. auto IN MX 10 mx.example.net." in before and "blackroad.io. auto IN MX 20 mx.example.net." in after
    assert '"site-verification=one"' in before and '"site-verification=two"' in after
    assert "192.0.2.2" not in before and "192.0.2.1" not in after

    records = zone_records(emu)
    www_a = named(records, "www.blackroad.io", "A")
    assert len(www_a) == 1 and www_a[0]["content"] == "192.0.2.2"
    assert www_a[0]["id"] == create["records"][0]["id"]  # the same record, updated in place
    assert len(named(records, "www.blackroad.io", "TXT")) == 1
    assert named(records, "blackroad.io", "MX")[0]["priority"] == 20
    assert len(records) == 4


def test_purge_and_absent_only_touch_owned_records(tmp_path, emu):
    seed_records(emu, [
        {"name": "legacy.blackroad.io", "type": "A", "content": "198.51.100.1", "ttl": 1},
        {"name": "www.blackroad.io", "type": "A", "content": "198.51.100.7", "ttl": 1, "tags": ["team:web"]},
        {"name": "other.blackroad.io", "type": "TXT", "content": "owned-by-someone-else",
         "tags": ["managed-by:another-tool"]},
        # Owned, stored the way Cloudflare returns TXT content (quoted): the unquoted declaration matches it.
        {"name": "blackroad.io", "type": "TXT", "content": '"v=spf1 -all"', "ttl": 1, "tags": [OWNER]},
    ])
    tasks = [
        task("Create", records=[
            {"name": "www", "type": "A", "content": "192.0.2.1"},
            {"name": "old", "type": "A", "content": "192.0.2.9"},
            {"name": "old", "type": "TXT", "content": "bye"},
            {"name": "api", "type": "CNAME", "content": "www.blackroad.io"},
            {"name": "@", "type": "TXT", "content": "v=spf1 -all"},
        ]),
        task("Purge", purge=True, records=[
            {"name": "www", "type": "A", "content": "192.0.2.1"},
            {"name": "api", "type": "CNAME", "content": "www.blackroad.io"},
            {"name": "@", "type": "TXT", "content": "v=spf1 -all"},
        ]),
        task("Absent", state="absent", records=[{"name": "api", "type": "CNAME"}]),
        task("Absent unowned by value", state="absent", records=[{"name": "legacy", "type": "A", "content": "198.51.100.1"}]),
    ]
    result = run_play(tmp_path, tasks, env(emu), diff=True)
    create, purge, absent, unowned = (result.result(n) for n in ("Create", "Purge", "Absent", "Absent unowned by value"))
    assert create["changed"] and len(create["changes"]["created"]) == 4
    assert any("198.51.100.7" in w and "left alone" in w for w in create.get("warnings", [])), create.get("warnings")
    assert purge["changed"]
    assert sorted((r["name"], r["type"]) for r in purge["changes"]["deleted"]) == [
        ("old.blackroad.io", "A"), ("old.blackroad.io", "TXT")]
    assert "old.blackroad.io. auto IN TXT \"bye\"" in purge["diff"]["before"] and purge["diff"]["after"] == ""
    assert absent["changed"] and [r["name"] for r in absent["changes"]["deleted"]] == ["api.blackroad.io"]
    assert absent["records"] == []
    assert unowned["changed"] and unowned["changes"]["deleted"][0]["content"] == "198.51.100.1"

    records = zone_records(emu)
    assert [r["type"] for r in create["changes"]["created"]] == ["A", "A", "TXT", "CNAME"]  # not the SPF record
    assert create["changes"]["updated"] == []
    contents = sorted((r["name"], r["content"]) for r in records)
    assert contents == [("blackroad.io", '"v=spf1 -all"'), ("other.blackroad.io", "owned-by-someone-else"),
                        ("www.blackroad.io", "192.0.2.1"), ("www.blackroad.io", "198.51.100.7")]
    unowned_www = [r for r in records if r["content"] == "198.51.100.7"][0]
    assert unowned_www["tags"] == ["team:web"]  # never adopted, never changed


def test_thousand_records_calls(tmp_path, emu):
    records = many(1000)
    changed = [dict(r) for r in records]
    for r in changed[:10]:
        r["content"] = r["content"].rsplit(".", 1)[0] + ".254"
    tasks = [task("Create", records=records), task("Noop", records=records),
             task("Ten by zone id", zone=ZONE_ID, records=changed)]
    result = run_play(tmp_path, tasks, env(emu))
    create, noop, ten = (result.result(n) for n in ("Create", "Noop", "Ten by zone id"))
    assert create["changed"] and len(create["changes"]["created"]) == 1000
    assert create["api_calls"] == 7  # zone lookup, list, 5 batches of 200
    assert not noop["changed"] and noop["api_calls"] <= 3, noop["api_calls"]
    assert ten["changed"] and len(ten["changes"]["updated"]) == 10 and ten["api_calls"] <= 4, ten["api_calls"]
    assert ten["changes"]["created"] == [] and ten["changes"]["deleted"] == []
    requests = emu.requests()
    assert [len(r) for r in (batches(requests[:7]), batches(requests[7:9]), batches(requests[9:]))] == [5, 0, 1]
    assert len(zone_records(emu)) == 1000


def test_faults_during_batches_converge_without_duplicates(tmp_path, emu):
    records = many(20, prefix="f")
    emu.inject(
        {"action": "status", "status": 500, "method": "GET", "path_regex": "/dns_records$"},
        {"action": "status", "status": 429, "retry_after": 1, "method": "POST", "path_regex": BATCH},
        {"action": "status", "status": 502, "method": "POST", "path_regex": BATCH},
        {"action": "drop", "when": "after", "method": "POST", "path_regex": BATCH},
    )
    result = run_play(tmp_path, [task("Create", batch_size=5, records=records),
                                 task("Again", batch_size=5, records=records)], env(emu))
    create, again = result.result("Create"), result.result("Again")
    assert create["changed"] and not create.get("failed"), create
    assert len(create["changes"]["created"]) == 20
    assert all(r.get("id") for r in create["records"])
    assert not again["changed"]
    stored = zone_records(emu)
    assert len(stored) == 20
    assert len(set((r["name"], r["content"]) for r in stored)) == 20
    statuses = [r["status"] for r in batches(emu.requests())]
    assert 429 in statuses and 502 in statuses and 0 in statuses  # every fault was hit


def test_failed_later_batch_rerun_converges(tmp_path, emu):
    records = many(12, prefix="p")
    emu.inject(
        {"action": "latency", "ms": 0, "method": "POST", "path_regex": BATCH},  # lets the first batch through
        {"action": "status", "status": 400, "method": "POST", "path_regex": BATCH,
         "errors": [{"code": 9005, "message": "posts[1]: Content for A record is invalid."}]},
    )
    tasks = [task("Fails", ignore_errors=True, batch_size=5, records=records),
             task("Rerun", batch_size=5, records=records), task("Noop", batch_size=5, records=records)]
    result = run_play(tmp_path, tasks, env(emu))
    fails, rerun, noop = (result.result(n) for n in ("Fails", "Rerun", "Noop"))
    assert fails["failed"]
    assert "HTTP 400" in fails["msg"] and "records[6] p6.blackroad.io A" in fails["msg"], fails["msg"]
    assert "5 earlier change(s) were applied" in fails["msg"]
    assert rerun["changed"] and len(rerun["changes"]["created"]) == 7
    assert not noop["changed"]
    assert len(zone_records(emu)) == 12


def test_bad_input_fails_before_any_write(tmp_path, emu):
    seed_records(emu, [{"name": "app.blackroad.io", "type": "A", "content": "198.51.100.3", "ttl": 1}])
    bad = [
        {"name": "ok", "type": "A", "content": "192.0.2.1"},
        {"name": "a", "type": "A", "content": "300.1.1.1"},
        {"name": "b", "type": "AAAA", "content": "192.0.2.1"},
        {"name": "c", "type": "CNAME", "content": "not a host"},
        {"name": "d", "type": "MX", "content": "mx.example.net"},
        {"name": "e", "type": "SRV", "data": {"priority": 1, "weight": 1, "target": "x.example.net"}},
        {"name": "f", "type": "CAA", "data": {"flags": 0, "tag": "bad tag", "value": "x"}},
        {"name": "g", "type": "A", "content": "192.0.2.1", "ttl": 30},
        {"name": "h", "type": "TXT", "content": "x", "proxied": True},
        {"name": "i", "type": "BOGUS", "content": "x"},
        {"name": "j", "type": "A", "content": "192.0.2.1", "proxied": True, "ttl": 300},
        {"name": "k", "type": "A", "content": "192.0.2.1", "tags": ["no colon"]},
        {"type": "A", "content": "192.0.2.1"},
    ]
    tasks = [
        task("Many bad", ignore_errors=True, records=bad),
        task("Conflicts", ignore_errors=True, records=[
            {"name": "x", "type": "CNAME", "content": "a.example.net"},
            {"name": "x", "type": "A", "content": "192.0.2.1"},
            {"name": "y", "type": "A", "content": "192.0.2.1"},
            {"name": "y.blackroad.io.", "type": "A", "content": "192.0.2.1"},
            {"name": "z.example.org.", "type": "A", "content": "192.0.2.1"},
        ]),
        task("Unknown zone", ignore_errors=True, zone="nope.example", records=[{"name": "a", "type": "A", "content": "192.0.2.1"}]),
        task("Unknown zone id", ignore_errors=True, zone="0" * 32, records=[{"name": "a", "type": "A", "content": "192.0.2.1"}]),
        task("Owner tag", ignore_errors=True, owner_tag="bad tag", records=[]),
        task("CNAME over existing A", ignore_errors=True, records=[{"name": "app", "type": "CNAME", "content": "x.example.net"}]),
        task("Bad token", ignore_errors=True, api_token="wrong-token", records=[{"name": "a", "type": "A", "content": "192.0.2.1"}]),
    ]
    result = run_play(tmp_path, tasks, env(emu))
    many_bad, conflicts, unknown, unknown_id, owner, cname, token = (result.result(n) for n in (
        "Many bad", "Conflicts", "Unknown zone", "Unknown zone id", "Owner tag", "CNAME over existing A", "Bad token"))
    msg = many_bad["msg"]
    assert many_bad["failed"] and many_bad["api_calls"] == 0
    for index, text in ((1, "not an IPv4 address"), (2, "not an IPv6 address"), (3, "not a hostname"),
                        (4, "MX records need a priority"), (5, "SRV data needs port"), (6, "CAA tag"),
                        (7, "ttl must be 1"), (8, "only A, AAAA and CNAME"), (9, "type 'BOGUS'"),
                        (10, "automatic TTL"), (11, "tag 'no colon'"), (12, "name is required")):
        assert re.search(r"records\[%d\] [^\n]*%s" % (index, re.escape(text)), msg), (index, msg)
    assert "records[0]" not in msg
    assert conflicts["failed"] and conflicts["api_calls"] == 0
    assert "CNAME cannot share its name" in conflicts["msg"] and "declared twice" in conflicts["msg"]
    assert "outside the zone" in conflicts["msg"]
    assert unknown["failed"] and "'nope.example' not found" in unknown["msg"]
    assert unknown_id["failed"] and "HTTP 404" in unknown_id["msg"]
    assert owner["failed"] and "owner_tag" in owner["msg"]
    assert cname["failed"] and "app.blackroad.io would hold a CNAME and A records" in cname["msg"]
    assert token["failed"] and "HTTP 403" in token["msg"] and "token" in token["msg"] and token["api_calls"] == 1
    assert "wrong-token" not in json.dumps(result.results)
    assert emu.writes() == []


@pytest.fixture
def canary_emulator(tmp_path):
    token = "canary-" + str(uuid.uuid4())
    run_env = dict(os.environ, CLOUDFLARE_EMULATOR_TOKENS=token,
                   PYTHONPATH=str(EMULATOR_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cloudflare_emulator", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, text=True)
    line = proc.stdout.readline()
    try:
        assert "listening on" in line, line + proc.stderr.read()
        emulator = CloudflareEmulator(proc, line.strip().rsplit(" ", 1)[-1], token)
        yield emulator
        check_violations(emulator)
    finally:
        stop_emulator(proc)


def test_canary_token_never_in_verbose_output(tmp_path, canary_emulator):
    emu = canary_emulator
    records = [{"name": "www", "type": "A", "content": "192.0.2.1"}, {"name": "@", "type": "TXT", "content": "hello"}]
    tasks = [
        task("Create", records=records),
        task("Token as an option", api_token=emu.token, records=records + [{"name": "x", "type": "A", "content": "192.0.2.3"}]),
        task("Bad input", ignore_errors=True, records=[{"name": "b", "type": "A", "content": "nope"}]),
        task("Failing call", ignore_errors=True, zone="0" * 32, records=records),
    ]
    result = run_play(tmp_path, tasks, env(emu), verbose=3, diff=True, json_output=False)
    assert result.rc == 0, result.output
    assert "changed=2" in result.output and "www.blackroad.io. auto IN A 192.0.2.1" in result.output
    assert emu.token not in result.output
    assert emu.token.split("-", 1)[1] not in result.output
