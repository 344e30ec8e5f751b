"""The edge_plan filter: the domain map in, everything the edge makes out."""

import copy
import json
import pathlib
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.blackroad.infra.plugins.filter.edge_plan import edge_plan  # noqa: E402

LAB = yaml.safe_load((REPO / "inventory" / "lab" / "group_vars" / "all" / "edge.yml").read_text())
ROUTES = LAB["blackroad_routes"]
ZONES = LAB["blackroad_zones"]
WORKERS = ["blackroad-auth", "blackroad-ratelimit", "blackroad-telemetry", "blackroad-billing", "blackroad-edge-gateway"]
HOSTVARS = {"pi5-alpha": {"tailnet_ipv4": "100.64.0.1"}, "pi5-beta": {"tailnet_ipv4": "100.64.0.2"},
            "jetson-prime": {}, "pi400-delta": {"edge_backend_address": "monitor.internal"}}
TARGET = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc.cfargotunnel.com"
KEY = {"id": "alice", "user": "alice@example.com", "sha256": "a" * 64}


def plan(routes=None, **kwargs):
    args = dict(zones=ZONES, tunnel="pi5-alpha", tunnel_target=TARGET, workers=WORKERS, hostvars=HOSTVARS,
                tailnet_domain="tail1234.ts.net")
    args.update(kwargs)
    return edge_plan(copy.deepcopy(ROUTES if routes is None else routes), **args)


def test_the_lab_map_gives_records_rules_entries_and_routes():
    p = plan(api_keys=[KEY])
    assert p["errors"] == []
    io = {r["name"]: (r["type"], r["content"], r["proxied"]) for r in p["dns"]["blackroad.io"]}
    assert io == {
        "blackroad.io": ("CNAME", TARGET, True),
        "api.blackroad.io": ("CNAME", TARGET, True),
        "agents.blackroad.io": ("CNAME", TARGET, True),
        "llm.blackroad.io": ("CNAME", TARGET, True),
        # Only a Worker answers it: Cloudflare's originless placeholder.
        "status.blackroad.io": ("AAAA", "100::", True),
    }
    assert [r["name"] for r in p["dns"]["lucidia.earth"]] == ["lucidia.earth"]
    # The connector's own services on localhost, others at their tailnet address
    # (or MagicDNS name when the inventory has none); the catch-all last.
    assert p["ingress"] == [
        {"hostname": "agents.blackroad.io", "service": "http://100.64.0.2:8001"},
        {"hostname": "api.blackroad.io", "service": "http://localhost:8000"},
        {"hostname": "blackroad.io", "service": "http://localhost:3000"},
        {"hostname": "llm.blackroad.io", "service": "http://jetson-prime.tail1234.ts.net:8080"},
        {"hostname": "lucidia.earth", "service": "http://localhost:3001"},
        {"service": "http_status:404"},
    ]
    assert sorted(p["routing"]) == ["route:agents.blackroad.io", "route:api.blackroad.io", "route:blackroad.io",
                                    "route:llm.blackroad.io", "route:lucidia.earth"]
    api = json.loads(p["routing"]["route:api.blackroad.io"])
    assert api == {"hostname": "api.blackroad.io", "paths": [
        {"prefix": "/", "origin": "https://api.blackroad.io", "backend": "pi5-alpha:8000", "auth": "api_key",
         "rate_limit": True}]}
    assert json.loads(p["routing"]["route:blackroad.io"])["paths"][0]["auth"] == "none"
    assert p["worker_routes"] == {
        "blackroad-edge-gateway": [
            {"pattern": "*.blackroad.io/*", "zone": "blackroad.io"}, {"pattern": "*.lucidia.earth/*", "zone": "lucidia.earth"},
            {"pattern": "blackroad.io/*", "zone": "blackroad.io"}, {"pattern": "lucidia.earth/*", "zone": "lucidia.earth"}],
        "blackroad-billing": [{"pattern": "api.blackroad.io/billing/*", "zone": "blackroad.io"}],
        "blackroad-telemetry": [{"pattern": "status.blackroad.io/*", "zone": "blackroad.io"}],
    }
    assert p["api_keys"] == {"apikey:" + "a" * 64: '{"id":"alice","revoked":false,"user":"alice@example.com"}'}


def added(new, old):
    return [x for x in new if x not in old]


def test_one_more_hostname_changes_its_record_rule_and_entry_only():
    before = plan()
    after = plan(ROUTES + [{"hostname": "docs.blackroad.io", "backend": "pi5-beta", "port": 8002}])
    assert added(after["dns"]["blackroad.io"], before["dns"]["blackroad.io"]) == [
        {"name": "docs.blackroad.io", "type": "CNAME", "content": TARGET, "proxied": True, "ttl": 1,
         "comment": "managed by blackroad.infra edge"}]
    assert after["dns"]["lucidia.earth"] == before["dns"]["lucidia.earth"]
    assert added(after["ingress"], before["ingress"]) == [{"hostname": "docs.blackroad.io", "service": "http://100.64.0.2:8002"}]
    assert len(after["ingress"]) == len(before["ingress"]) + 1
    assert set(after["routing"]) - set(before["routing"]) == {"route:docs.blackroad.io"}
    assert {k: v for k, v in after["routing"].items() if k != "route:docs.blackroad.io"} == before["routing"]
    assert after["worker_routes"] == before["worker_routes"]


def test_path_prefixes_longest_first_in_rules_and_entries():
    routes = [{"hostname": "api.blackroad.io", "backend": "pi5-alpha", "port": 8000},
              {"hostname": "api.blackroad.io", "path": "/v2/", "backend": "pi5-beta", "port": 9000, "auth": "session"}]
    p = plan(routes)
    assert p["ingress"][:2] == [
        {"hostname": "api.blackroad.io", "path": "^/v2(/.*)?$", "service": "http://100.64.0.2:9000"},
        {"hostname": "api.blackroad.io", "service": "http://localhost:8000"}]
    paths = json.loads(p["routing"]["route:api.blackroad.io"])["paths"]
    assert [(x["prefix"], x["auth"]) for x in paths] == [("/v2/", "session"), ("/", "none")]
    assert len(p["dns"]["blackroad.io"]) == 1


def test_every_problem_is_reported_at_once():
    routes = [
        {"hostname": "API.blackroad.io", "backend": "pi5-alpha", "port": 8000},
        {"hostname": "shop.example.com", "backend": "pi5-alpha", "port": 8000},
        {"hostname": "a.blackroad.io", "backend": "pi5-alhpa", "port": 70000},
        {"hostname": "b.blackroad.io", "via": "cable", "backend": "pi5-alpha", "port": 1},
        {"hostname": "c.blackroad.io", "backend": "pi5-alpha", "port": 1, "auth": "basic", "rate_limit": "yes",
         "prot": 2, "path": "v2"},
        {"hostname": "d.blackroad.io", "via": "worker"},
        {"hostname": "e.blackroad.io", "via": "worker", "worker": "someone-else", "port": 80},
        {"hostname": "f.blackroad.io", "backend": "pi5-alpha", "port": 1},
        {"hostname": "f.blackroad.io", "backend": "pi5-beta", "port": 2},
        "g.blackroad.io",
    ]
    keys = [{"id": "k 1", "user": "", "sha256": "not-a-hash"}, {"id": "k2", "user": "u", "sha256": "b" * 64, "key": "raw"},
            {"id": "k2", "user": "u", "sha256": "b" * 64, "revoked": "no"}]
    p = plan(routes, api_keys=keys)
    text = "\n".join(p["errors"])
    for expected in (
        "entry 1 (API.blackroad.io): hostname must be a lower-case DNS name",
        "entry 2 (shop.example.com): hostname is in none of the zones blackroad.io, lucidia.earth",
        "entry 3 (a.blackroad.io): backend pi5-alhpa is not a host of the inventory",
        "entry 3 (a.blackroad.io): port must be a number from 1 to 65535, not 70000",
        "entry 4 (b.blackroad.io): via must be tunnel or worker, not 'cable'",
        "entry 5 (c.blackroad.io): unknown key(s) prot",
        "entry 5 (c.blackroad.io): path must be a prefix that starts and ends with /",
        "entry 5 (c.blackroad.io): auth must be one of none, api_key, session",
        "entry 5 (c.blackroad.io): rate_limit must be true or false",
        "entry 6 (d.blackroad.io): worker (the Worker that serves it) is required with via: worker",
        "entry 7 (e.blackroad.io): worker someone-else is not deployed by the edge",
        "entry 7 (e.blackroad.io): port only apply to via: tunnel",
        "entries 8 and 9: both route f.blackroad.io/",
        "entry 10: must be a mapping, not str",
        "api key 1: id must be 1-64 letters",
        "api key 1: user is required",
        "api key 1: sha256 must be the 64 lower-case hex digits",
        "api key 2: unknown key(s) key (a raw key is never given here, only its sha256)",
        "api key 3: id k2 is used twice",
        "api key 3: the same key (sha256) is listed twice",
        "api key 3: revoked must be true or false",
    ):
        assert expected in text, expected
    assert p["dns"] == {} and p["ingress"] == [] and p["routing"] == {} and p["api_keys"] == {}


def test_a_map_that_is_not_a_list_or_no_zones_is_refused():
    with pytest.raises(AnsibleFilterError, match="must be a list"):
        edge_plan({"hostname": "x"}, zones=ZONES, tunnel="t", tunnel_target=TARGET)
    with pytest.raises(AnsibleFilterError, match="zones must be a non-empty list"):
        edge_plan([], zones=[], tunnel="t", tunnel_target=TARGET)


def test_without_hostvars_backends_are_not_checked_and_named_by_magicdns():
    p = plan([{"hostname": "x.blackroad.io", "backend": "nas", "port": 80}], hostvars=None)
    assert p["errors"] == []
    assert p["ingress"][0]["service"] == "http://nas.tail1234.ts.net:80"
    p = plan([{"hostname": "x.blackroad.io", "backend": "nas", "port": 80}], hostvars=None, tailnet_domain="")
    assert p["ingress"][0]["service"] == "http://nas:80"
    assert plan([{"hostname": "m.blackroad.io", "backend": "pi400-delta", "port": 9090}])["ingress"][0]["service"] == \
        "http://monitor.internal:9090"
