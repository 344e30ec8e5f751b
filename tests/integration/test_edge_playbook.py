"""playbooks/edge.yml against the Cloudflare emulator: the lab's domain map made
into DNS records, tunnel ingress, KV entries and five Workers; idempotent;
--check --diff shows exactly what one more hostname changes."""

import copy
import hashlib
import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import cloudflare_env  # noqa: E402
from playbook import REPO, run_play  # noqa: E402

PLAYBOOK = REPO / "playbooks" / "edge.yml"
SEED = json.loads((REPO / "tests" / "fixtures" / "cloudflare" / "blackroad_account.json").read_text())
LAB = yaml.safe_load((REPO / "inventory" / "lab" / "group_vars" / "all" / "edge.yml").read_text())
WORKERS = {"blackroad-edge-gateway", "blackroad-auth", "blackroad-ratelimit", "blackroad-billing", "blackroad-telemetry"}
DOCS = {"hostname": "docs.blackroad.io", "backend": "pi5-beta", "port": 8002}


class Edge:
    """An inventory for the edge (the lab's domain map, fake keys) and how to run it."""

    def __init__(self, tmp_path, emu):
        self.tmp_path, self.emu = tmp_path, emu
        self.api_key = "brk_FAKECANARY_" + secrets.token_hex(16)
        self.revoked_key = "brk_FAKECANARY_" + secrets.token_hex(16)
        self.stripe_secret = "whsec_FAKECANARY" + secrets.token_hex(12)
        self.routes = copy.deepcopy(LAB["blackroad_routes"])
        self.extra = {}

    def inventory(self):
        inv = self.tmp_path / "inventory"
        (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
        hosts = {"pi5-alpha": {"tailnet_ipv4": "100.64.0.1"}, "pi5-beta": {"tailnet_ipv4": "100.64.0.2"},
                 "jetson-prime": {"tailnet_ipv4": "100.64.0.6"}}
        (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": dict(
            hosts, localhost={"ansible_connection": "local", "ansible_python_interpreter": sys.executable})}}))
        group_vars = {
            "blackroad_zones": LAB["blackroad_zones"], "blackroad_routes": self.routes, "edge_tunnel": "pi5-alpha",
            "edge_api_keys": [
                {"id": "demo", "user": "demo-user", "sha256": hashlib.sha256(self.api_key.encode()).hexdigest()},
                {"id": "old", "user": "demo-user", "revoked": True,
                 "sha256": hashlib.sha256(self.revoked_key.encode()).hexdigest()}],
            "edge_stripe_webhook_secret": self.stripe_secret,
        }
        group_vars.update(self.extra)
        (inv / "group_vars" / "all" / "edge.yml").write_text(yaml.safe_dump(group_vars))
        return inv

    def run(self, **kwargs):
        inv = self.inventory()
        return run_play(self.tmp_path, None, env=cloudflare_env(self.emu), playbook=PLAYBOOK,
                        inventory=inv / "hosts.yml", **kwargs)


@pytest.fixture
def edge(tmp_path, cf_emulator):
    cf_emulator.seed(copy.deepcopy(SEED))
    cf_emulator.reset_requests()
    return Edge(tmp_path, cf_emulator)


def task_name(r):
    return r["task"].split(" : ", 1)[-1]  # without the role's "blackroad.infra.edge : "


def task_result(result, name):
    found, = [r for r in result.results if task_name(r) == name]
    return found


def changed_tasks(result):
    """Names of the changed tasks, loop items as 'task[label]'."""
    out = []
    for r in result.results:
        if "results" in r:
            out += ["%s[%s]" % (task_name(r), i.get("_ansible_item_label", i.get("item"))) for i in r["results"] if i.get("changed")]
        elif r.get("changed"):
            out.append(task_name(r))
    return out


def ours(state):
    """The parts of the account the edge manages."""
    tunnel, = [t for t in state["tunnels"] if t["name"] == "pi5-alpha" and not t.get("deleted_at")]
    kv = {n["title"]: n["entries"] for n in state["kv_namespaces"]}
    return {
        "dns": sorted((r["name"], r["type"], r["content"], r["proxied"]) for r in state["dns_records"]),
        "ingress": tunnel["config"]["ingress"],
        "tunnel_id": tunnel["id"],
        "routing": {k: v["value"] for k, v in kv["STATE"].items() if k.startswith("route:")},
        "auth": {k: v["value"] for k, v in kv["AUTH"].items()},
        "workers": {w["name"]: (sorted(w["files"]), w["bindings"]) for w in state["workers"] if w["name"] in WORKERS},
        "routes": sorted((r["pattern"], r["script"]) for r in state["routes"]),
        "kv_titles": sorted(kv),
    }


def test_edge_converges_and_a_second_run_changes_nothing(edge):
    first = edge.run()
    assert first.rc == 0, first.output
    state = edge.emu.state(secrets=True)
    have = ours(state)
    target = have["tunnel_id"] + ".cfargotunnel.com"
    assert ("api.blackroad.io", "CNAME", target, True) in have["dns"]
    assert ("status.blackroad.io", "AAAA", "100::", True) in have["dns"]
    assert {"hostname": "api.blackroad.io", "service": "http://localhost:8000"} in have["ingress"]
    assert {"hostname": "agents.blackroad.io", "service": "http://100.64.0.2:8001"} in have["ingress"]
    assert have["ingress"][-1] == {"service": "http_status:404"}
    assert json.loads(have["routing"]["route:api.blackroad.io"])["paths"][0]["auth"] == "api_key"
    assert {"AUTH", "IDENTITY", "RATE_LIMIT", "CACHE", "BILLING", "STATE"} <= set(have["kv_titles"])
    assert set(have["workers"]) == WORKERS
    gateway_files, gateway_bindings = have["workers"]["blackroad-edge-gateway"]
    assert gateway_files == ["common.js", "gateway.js"]
    assert {(b["type"], b["name"]) for b in gateway_bindings} == {
        ("kv_namespace", "ROUTES"), ("service", "AUTH"), ("service", "RATELIMIT"), ("service", "TELEMETRY"),
        ("plain_text", "MAINTENANCE_URL")}
    limiter, = [b for b in have["workers"]["blackroad-ratelimit"][1] if b["type"] == "ratelimit"]
    assert limiter["simple"] == {"limit": 100, "period": 60}
    assert ("blackroad.io/*", "blackroad-edge-gateway") in have["routes"]
    assert ("*.lucidia.earth/*", "blackroad-edge-gateway") in have["routes"]
    assert ("api.blackroad.io/billing/*", "blackroad-billing") in have["routes"]
    assert ("status.blackroad.io/*", "blackroad-telemetry") in have["routes"]
    # Only hashes: neither raw key is anywhere in the account.
    dump = json.dumps(state)
    assert edge.api_key not in dump and edge.revoked_key not in dump
    assert json.loads(have["auth"]["apikey:" + hashlib.sha256(edge.revoked_key.encode()).hexdigest()])["revoked"] is True

    edge.emu.reset_requests()
    second = edge.run()
    assert second.rc == 0 and second.changed == 0, changed_tasks(second)
    assert edge.emu.writes() == []
    check = edge.run(check=True)
    assert check.rc == 0 and check.changed == 0, changed_tasks(check)


def test_check_on_an_empty_account_predicts_and_writes_nothing(edge):
    check = edge.run(check=True, diff=True)
    assert check.rc == 0, check.output
    assert edge.emu.writes() == []
    predicted = set(changed_tasks(check))
    assert "Tunnel and its ingress rules" in predicted
    assert "The gateway's routing table (one entry per hostname)" in predicted
    assert {"DNS records of each zone[blackroad.io]", "DNS records of each zone[lucidia.earth]"} <= predicted
    assert {"Workers, their bindings and routes[%s]" % w for w in WORKERS} <= predicted
    applied = edge.run()
    assert set(changed_tasks(applied)) == predicted


def test_one_more_hostname_changes_its_record_rule_and_routing_entry_only(edge):
    assert edge.run().rc == 0
    before = ours(edge.emu.state())
    edge.routes.append(DOCS)
    edge.emu.reset_requests()
    check = edge.run(check=True, diff=True)
    assert check.rc == 0 and edge.emu.writes() == []
    expected = ["Tunnel and its ingress rules", "DNS records of each zone[blackroad.io]",
                "The gateway's routing table (one entry per hostname)"]
    assert sorted(changed_tasks(check)) == sorted(expected)
    diffs = json.dumps([r.get("diff") for r in check.results] + [i.get("diff") for r in check.results for i in r.get("results", [])])
    assert "docs.blackroad.io" in diffs and "route:docs.blackroad.io" in diffs and "http://100.64.0.2:8002" in diffs

    applied = edge.run()
    assert sorted(changed_tasks(applied)) == sorted(expected)
    after = ours(edge.emu.state())
    target = before["tunnel_id"] + ".cfargotunnel.com"
    assert sorted(set(after["dns"]) - set(before["dns"])) == [("docs.blackroad.io", "CNAME", target, True)]
    assert set(before["dns"]) <= set(after["dns"])
    assert [r for r in after["ingress"] if r not in before["ingress"]] == [
        {"hostname": "docs.blackroad.io", "service": "http://100.64.0.2:8002"}]
    assert len(after["ingress"]) == len(before["ingress"]) + 1
    assert set(after["routing"]) - set(before["routing"]) == {"route:docs.blackroad.io"}
    assert {k: after["routing"][k] for k in before["routing"]} == before["routing"]
    for part in ("auth", "workers", "routes", "kv_titles"):
        assert after[part] == before[part], part
    assert edge.run().changed == 0


def test_a_bad_map_fails_before_any_api_call(edge):
    edge.routes += [{"hostname": "shop.example.com", "backend": "pi5-alpha", "port": 80},
                    {"hostname": "x.blackroad.io", "backend": "pi5-alhpa", "port": 80}]
    res = edge.run()
    assert res.rc != 0
    msg = task_result(res, "Check the domain map and the edge's input")["msg"]
    assert "shop.example.com): hostname is in none of the zones" in msg
    assert "backend pi5-alhpa is not a host of the inventory" in msg
    assert "nothing was changed" in msg
    assert edge.emu.requests() == []


def test_revoking_and_removing_keys(edge):
    assert edge.run().rc == 0
    digest = hashlib.sha256(edge.api_key.encode()).hexdigest()
    edge.extra["edge_api_keys"] = [{"id": "demo", "user": "demo-user", "sha256": digest, "revoked": True}]
    res = edge.run(diff=True)
    assert changed_tasks(res) == ["API key hashes"]
    auth = ours(edge.emu.state())["auth"]
    assert list(auth) == ["apikey:" + digest] and json.loads(auth["apikey:" + digest])["revoked"] is True


def test_no_secret_in_verbose_output(edge):
    res = edge.run(verbose=3, json_output=False, diff=True)
    assert res.rc == 0, res.output[-3000:]
    for secret in (edge.stripe_secret, edge.api_key, edge.revoked_key, edge.emu.token):
        assert secret not in res.output
    assert "STRIPE_WEBHOOK_SECRET" in json.dumps(ours(edge.emu.state(secrets=True))["workers"])


class Backend(http.server.BaseHTTPRequestHandler):
    """Stands in for the API behind the tunnel: echoes what reached it."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        data = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def probe(edge, url, key=None, headers=()):
    token_file = edge.tmp_path / "token"
    token_file.write_text(edge.emu.token)
    token_file.chmod(0o600)
    args = ["node", str(REPO / "workers" / "lab" / "edge-lab.mjs"), "--probe", url,
            "--base-url", edge.emu.url, "--token-file", str(token_file)]
    if key:
        key_file = edge.tmp_path / "key"
        key_file.write_text(key)
        args += ["--api-key-file", str(key_file)]
    for header in headers:
        args += ["--header", header]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not key or key not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_the_request_path_through_the_edge_in_workerd(edge):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # api.blackroad.io's backend is on the connector itself: the tunnel
        # reaches it on localhost, here at the test server's port.
        api, = [r for r in edge.routes if r["hostname"] == "api.blackroad.io" and "port" in r]
        api["port"] = server.server_address[1]
        # agents.blackroad.io: a backend that is down (a port nothing listens on).
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            down_port = closed.getsockname()[1]
        agents, = [r for r in edge.routes if r["hostname"] == "agents.blackroad.io"]
        agents.update(backend="pi5-alpha", port=down_port)
        assert edge.run().rc == 0
        ok = probe(edge, "https://api.blackroad.io/v1/things?x=1", key=edge.api_key, headers=["X-User-ID: admin"])
        assert ok["status"] == 200, ok
        seen = json.loads(ok["body"])
        assert seen["path"] == "/v1/things?x=1"
        # The identity is the key's user; the client's own claim was dropped.
        assert seen["headers"]["x-user-id"] == "demo-user"
        assert "ratelimit-limit" in {k.lower() for k in ok["headers"]}
        assert probe(edge, "https://api.blackroad.io/v1/things", key=edge.revoked_key)["status"] == 403
        assert probe(edge, "https://api.blackroad.io/v1/things", key="brk_FAKECANARY_unknown")["status"] == 403
        assert probe(edge, "https://api.blackroad.io/v1/things")["status"] == 401
        down = probe(edge, "https://agents.blackroad.io/", key=edge.api_key)
        assert down["status"] == 503 and "maintenance" in down["body"].lower(), down
    finally:
        server.shutdown()
        server.server_close()


def test_an_empty_secret_variable_keeps_the_workers_secret(edge):
    """A run without the vault loaded must not take billing's Stripe secret away."""
    assert edge.run().rc == 0

    def billing_secret():
        billing, = [w for w in edge.emu.state(secrets=True)["workers"] if w["name"] == "blackroad-billing"]
        return [b.get("text") for b in billing["bindings"] if b["name"] == "STRIPE_WEBHOOK_SECRET"]

    assert billing_secret() == [edge.stripe_secret]
    edge.extra["edge_stripe_webhook_secret"] = ""
    kept = edge.run()
    assert kept.rc == 0 and kept.changed == 0, changed_tasks(kept)
    assert billing_secret() == [edge.stripe_secret]
    edge.extra["edge_secrets_purge"] = True
    purged = edge.run()
    assert changed_tasks(purged) == ["Workers, their bindings and routes[blackroad-billing]"]
    assert billing_secret() == []
