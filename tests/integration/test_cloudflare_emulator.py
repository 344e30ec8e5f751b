"""The Cloudflare API emulator, driven through the official ``cloudflare`` SDK."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import os
import time

import cloudflare
import httpx
import pytest

from conftest import start_emulator, stop_emulator

JS = b"export default { async fetch(request, env) { return new Response('hi') } }"


@pytest.fixture
def cf(cf_emulator):
    return cloudflare.Cloudflare(api_token=cf_emulator.token, base_url=cf_emulator.url, max_retries=0)


def multipart_parts(body, content_type):
    """[(name, filename, content type, bytes)] of a multipart/form-data body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body)
    assert msg.is_multipart()
    return [(p.get_param("name", header="content-disposition"), p.get_filename(), p.get_content_type(),
             p.get_payload(decode=True)) for p in msg.iter_parts()]


def raw(emu, method, path, **kw):
    headers = kw.pop("headers", {"Authorization": f"Bearer {emu.token}"})
    return httpx.request(method, emu.url + path, headers=headers, timeout=10, **kw)


# ------------------------------------------------------------------------------ basics
def test_startup_is_fast():
    t0 = time.monotonic()
    proc, url, _token = start_emulator()
    elapsed = time.monotonic() - t0
    stop_emulator(proc)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/client/v4")
    assert elapsed < 1.5, elapsed


def test_refuses_non_loopback(tmp_path):
    env = dict(os.environ, CLOUDFLARE_EMULATOR_TOKENS="x", PYTHONPATH="emulator")
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "cloudflare_emulator", "--listen", "0.0.0.0:0"], env=env,
                         capture_output=True, text=True, timeout=10, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert res.returncode != 0 and "non-loopback" in res.stderr


def test_token_file_must_be_private(tmp_path):
    import subprocess
    import sys
    tok = tmp_path / "tok"
    tok.write_text("abc\n")
    tok.chmod(0o644)
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH="emulator")
    env.pop("CLOUDFLARE_EMULATOR_TOKENS", None)
    res = subprocess.run([sys.executable, "-m", "cloudflare_emulator", "--listen", "127.0.0.1:0",
                          "--token-file", str(tok)], env=env, capture_output=True, text=True, timeout=10, check=False, cwd=root)
    assert res.returncode != 0 and "chmod 600" in res.stderr


def test_envelope_and_accounts_zones(cf, cf_emulator):
    resp = raw(cf_emulator, "GET", "/zones")
    body = resp.json()
    assert set(body) >= {"success", "errors", "messages", "result", "result_info"}
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    assert set(body["result_info"]) == {"page", "per_page", "count", "total_count", "total_pages"}
    accounts = list(cf.accounts.list())
    assert [a.name for a in accounts] == ["BlackRoad"]
    assert cf.accounts.get(account_id=accounts[0].id).name == "BlackRoad"
    assert list(cf.accounts.list(name="nope")) == []
    zones = list(cf.zones.list())
    assert sorted(z.name for z in zones) == ["blackroad.io", "lucidia.earth"]
    z = list(cf.zones.list(name="blackroad.io", account={"id": cf_emulator.account_id}))
    assert len(z) == 1 and cf.zones.get(zone_id=z[0].id).name == "blackroad.io"


def test_auth_failures(cf_emulator):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = raw(cf_emulator, "GET", "/zones", headers=headers)
        assert resp.status_code == 403
        assert resp.json()["errors"] == [{"code": 10000, "message": "Authentication error"}]
    bad = cloudflare.Cloudflare(api_token="wrong", base_url=cf_emulator.url, max_retries=0)
    with pytest.raises(cloudflare.PermissionDeniedError):
        list(bad.zones.list())
    assert httpx.get(cf_emulator.base + "/__emulator/state").status_code == 403


def test_not_found(cf, cf_emulator):
    with pytest.raises(cloudflare.NotFoundError):
        cf.zones.get(zone_id="0" * 32)
    zid = cf_emulator.zone_id()
    with pytest.raises(cloudflare.NotFoundError) as exc:
        cf.dns.records.get("f" * 32, zone_id=zid)
    assert exc.value.body["errors"][0]["code"] == 81044 if isinstance(exc.value.body, dict) else True
    assert raw(cf_emulator, "GET", "/no/such/thing").status_code == 404


# ------------------------------------------------------------------------------ DNS
def test_dns_crud_and_normalisation(cf, cf_emulator):
    zid = cf_emulator.zone_id()
    a = cf.dns.records.create(zone_id=zid, name="WWW", type="A", content="192.0.2.1", ttl=1, proxied=True,
                              comment="web", tags=["env:prod"])
    assert a.name == "www.blackroad.io" and a.proxied and a.proxiable and a.zone_name == "blackroad.io"
    assert len(a.id) == 32 and a.comment_modified_on and a.tags_modified_on
    apex = cf.dns.records.create(zone_id=zid, name="@", type="TXT", content="v=spf1 -all", ttl=300)
    assert apex.name == "blackroad.io"
    mx = cf.dns.records.create(zone_id=zid, name="@", type="MX", content="mail.blackroad.io", priority=10, ttl=3600)
    assert mx.priority == 10
    srv = cf.dns.records.create(zone_id=zid, name="_sip._tcp", type="SRV", ttl=1,
                                data={"priority": 5, "weight": 10, "port": 5060, "target": "sip.blackroad.io"})
    assert srv.content == "10 5060 sip.blackroad.io"

    edited = cf.dns.records.edit(a.id, zone_id=zid, name="www", type="A", ttl=1, content="192.0.2.2")
    assert edited.content == "192.0.2.2" and edited.proxied and edited.comment == "web"
    put = cf.dns.records.update(a.id, zone_id=zid, name="www", type="A", content="192.0.2.3", ttl=300)
    assert put.proxied is False and put.ttl == 300 and put.comment is None
    assert cf.dns.records.get(a.id, zone_id=zid).content == "192.0.2.3"

    assert [r.id for r in cf.dns.records.list(zone_id=zid, name="www.blackroad.io")] == [a.id]
    assert [r.id for r in cf.dns.records.list(zone_id=zid, type="MX")] == [mx.id]
    assert [r.id for r in cf.dns.records.list(zone_id=zid, comment={"exact": "nothing"})] == []
    assert cf.dns.records.delete(a.id, zone_id=zid).id == a.id
    with pytest.raises(cloudflare.NotFoundError):
        cf.dns.records.get(a.id, zone_id=zid)


@pytest.mark.parametrize("body,code", [
    ({"name": "x", "type": "A", "content": "not-an-ip", "ttl": 1}, 9005),
    ({"name": "x", "type": "AAAA", "content": "192.0.2.1", "ttl": 1}, 9006),
    ({"name": "x", "type": "CNAME", "content": "bad host!", "ttl": 1}, 9007),
    ({"name": "x", "type": "MX", "content": "mail.example.com", "ttl": 1}, 9207),  # schema: priority required
    ({"name": "x", "type": "TXT", "content": "hi", "ttl": 1, "proxied": True}, 9004),
    ({"name": "x", "type": "A", "content": "192.0.2.1", "ttl": 30}, 9021),
])
def test_dns_validation(cf, cf_emulator, body, code):
    with pytest.raises(cloudflare.BadRequestError) as exc:
        cf.dns.records.create(zone_id=cf_emulator.zone_id(), **body)
    assert exc.value.status_code == 400
    assert exc.value.body["errors"][0]["code"] == code if isinstance(exc.value.body, dict) else True
    assert cf_emulator.state()["dns_records"] == []
    cf_emulator.clear_violations()  # some of these bodies are caught by the schema first


def test_dns_conflicts(cf, cf_emulator):
    zid = cf_emulator.zone_id()
    cf.dns.records.create(zone_id=zid, name="app", type="A", content="192.0.2.1", ttl=1)
    with pytest.raises(cloudflare.BadRequestError) as exc:
        cf.dns.records.create(zone_id=zid, name="app", type="A", content="192.0.2.1", ttl=1)
    assert "identical" in str(exc.value)
    with pytest.raises(cloudflare.BadRequestError) as exc:
        cf.dns.records.create(zone_id=zid, name="app", type="CNAME", content="x.example.com", ttl=1)
    assert "81053" in str(exc.value)
    cf.dns.records.create(zone_id=zid, name="app", type="A", content="192.0.2.2", ttl=1)  # round robin is fine


def test_dns_pagination_terminates(cf, cf_emulator):
    zid = cf_emulator.zone_id()
    cf_emulator.seed({"accounts": [{"id": cf_emulator.account_id, "name": "BlackRoad"}],
                      "zones": [{"id": zid, "name": "blackroad.io"}],
                      "dns_records": [{"zone": "blackroad.io", "name": f"h{i}", "type": "A",
                                       "content": f"10.0.{i // 256}.{i % 256}", "ttl": 1} for i in range(2500)]})
    cf_emulator.reset_requests()
    page = cf.dns.records.list(zone_id=zid, per_page=1000)
    assert page.result_info.total_count == 2500 and page.result_info.total_pages == 3
    assert len(list(page)) == 2500
    pages = [r["query"].get("page", "1") for r in cf_emulator.requests()]
    assert pages == ["1", "2", "3", "4"]  # the SDK stops on the first empty page
    empty = raw(cf_emulator, "GET", f"/zones/{zid}/dns_records", params={"page": 9, "per_page": 1000}).json()
    assert empty["result"] == [] and empty["result_info"]["count"] == 0


def test_dns_batch_all_or_nothing(cf, cf_emulator):
    zid = cf_emulator.zone_id()
    keep = cf.dns.records.create(zone_id=zid, name="keep", type="A", content="192.0.2.1", ttl=1)
    gone = cf.dns.records.create(zone_id=zid, name="gone", type="A", content="192.0.2.2", ttl=1)
    with pytest.raises(cloudflare.BadRequestError):
        cf.dns.records.batch(zone_id=zid, deletes=[{"id": gone.id}],
                             patches=[{"id": keep.id, "name": "keep", "type": "A", "ttl": 1, "content": "192.0.2.9"}],
                             posts=[{"name": "ok", "type": "A", "content": "192.0.2.3", "ttl": 1},
                                    {"name": "bad", "type": "A", "content": "nope", "ttl": 1}])
    # The SDK's BatchPatchParam requires name/type/ttl, so patches carry them.
    names = sorted(r.name for r in cf.dns.records.list(zone_id=zid))
    assert names == ["gone.blackroad.io", "keep.blackroad.io"]
    assert cf.dns.records.get(keep.id, zone_id=zid).content == "192.0.2.1"

    res = cf.dns.records.batch(zone_id=zid, deletes=[{"id": gone.id}],
                               patches=[{"id": keep.id, "name": "keep", "type": "A", "ttl": 1, "content": "192.0.2.9"}],
                               puts=[{"id": keep.id, "name": "keep", "type": "A", "content": "192.0.2.10", "ttl": 60}],
                               posts=[{"name": "gone", "type": "CNAME", "content": "keep.blackroad.io", "ttl": 1}])
    assert [r.id for r in res.deletes] == [gone.id]
    assert res.patches[0].content == "192.0.2.9" and res.puts[0].content == "192.0.2.10"
    assert res.posts[0].type == "CNAME"  # the delete ran first, so the name was free


def test_dns_batch_limit(cf, cf_emulator):
    posts = [{"name": f"n{i}", "type": "A", "content": "192.0.2.1", "ttl": 1} for i in range(201)]
    with pytest.raises(cloudflare.BadRequestError) as exc:
        cf.dns.records.batch(zone_id=cf_emulator.zone_id(), posts=posts)
    assert "200" in str(exc.value)


# ------------------------------------------------------------------------------ Workers
def test_workers_scripts_and_secrets(cf, cf_emulator):
    aid = cf_emulator.account_id
    meta = {"main_module": "index.js", "compatibility_date": "2024-09-23", "compatibility_flags": ["nodejs_compat"],
            "bindings": [{"type": "secret_text", "name": "API_KEY", "text": "s3cr3t"},
                         {"type": "plain_text", "name": "MODE", "text": "lab"}]}
    res = cf.workers.scripts.update("edge", account_id=aid, metadata=meta,
                                    files=[("index.js", JS, "application/javascript+module"),
                                           ("util.js", b"export const x = 1", "application/javascript+module")])
    assert res.id == "edge" and res.etag and "fetch" in res.handlers
    assert [s.id for s in cf.workers.scripts.list(account_id=aid)] == ["edge"]
    # Several modules: content/v2 answers multipart/form-data, one part per module, and names the entry.
    content = cf.workers.scripts.content.get("edge", account_id=aid)
    assert content.headers["cf-entrypoint"] == "index.js"
    assert content.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(content.read(), content.headers["content-type"])
    assert parts == [("index.js", "index.js", "application/javascript+module", JS),
                     ("util.js", "util.js", "application/javascript+module", b"export const x = 1")]
    settings = cf.workers.scripts.script_and_version_settings.get("edge", account_id=aid)
    secret = [b for b in settings.bindings if b.name == "API_KEY"][0]
    assert secret.type == "secret_text" and "s3cr3t" not in json.dumps(settings.model_dump())
    assert settings.compatibility_flags == ["nodejs_compat"]

    # Re-upload keeping secrets: the secret survives without being resent.
    meta2 = {"main_module": "index.js", "compatibility_date": "2024-09-23", "keep_bindings": ["secret_text"],
             "bindings": [{"type": "plain_text", "name": "MODE", "text": "prod"}]}
    res2 = cf.workers.scripts.update("edge", account_id=aid, metadata=meta2,
                                     files=[("index.js", JS + b"\n", "application/javascript+module")])
    assert res2.etag != res.etag
    # One module: the bare module with its own content type, still naming the entry.
    content = cf.workers.scripts.content.get("edge", account_id=aid)
    assert content.read() == JS + b"\n"
    assert content.headers["content-type"] == "application/javascript+module"
    assert content.headers["cf-entrypoint"] == "index.js"
    st = cf_emulator.state(secrets=True)["workers"][0]
    assert {b["name"] for b in st["bindings"]} == {"API_KEY", "MODE"}
    assert [b for b in st["bindings"] if b["name"] == "API_KEY"][0]["text"] == "s3cr3t"
    assert "s3cr3t" not in json.dumps(cf_emulator.state())

    cf.workers.scripts.secrets.update("edge", account_id=aid, name="TOKEN", text="t", type="secret_text")
    assert sorted(s.name for s in cf.workers.scripts.secrets.list("edge", account_id=aid)) == ["API_KEY", "TOKEN"]
    cf.workers.scripts.secrets.delete("TOKEN", account_id=aid, script_name="edge")
    assert [s.name for s in cf.workers.scripts.secrets.list("edge", account_id=aid)] == ["API_KEY"]

    cf.workers.scripts.delete("edge", account_id=aid)
    with pytest.raises(cloudflare.NotFoundError):
        cf.workers.scripts.script_and_version_settings.get("edge", account_id=aid)


def test_worker_routes_and_domains(cf, cf_emulator):
    aid, zid = cf_emulator.account_id, cf_emulator.zone_id()
    cf.workers.scripts.update("edge", account_id=aid, metadata={"main_module": "index.js"},
                              files=[("index.js", JS, "application/javascript+module")])
    route = cf.workers.routes.create(zone_id=zid, pattern="blackroad.io/api/*", script="edge")
    assert [r.pattern for r in cf.workers.routes.list(zone_id=zid)] == ["blackroad.io/api/*"]
    cf.workers.routes.update(route.id, zone_id=zid, pattern="blackroad.io/v2/*", script="edge")
    assert cf.workers.routes.get(route.id, zone_id=zid).pattern == "blackroad.io/v2/*"
    with pytest.raises(cloudflare.BadRequestError):
        cf.workers.routes.create(zone_id=zid, pattern="example.com/*", script="edge")
    cf.workers.routes.delete(route.id, zone_id=zid)
    assert list(cf.workers.routes.list(zone_id=zid)) == []

    dom = cf.workers.domains.update(account_id=aid, hostname="app.blackroad.io", service="edge", zone_id=zid)
    assert dom.zone_name == "blackroad.io"
    assert [d.hostname for d in cf.workers.domains.list(account_id=aid)] == ["app.blackroad.io"]
    # Detach answers the JSON envelope (result null) that the SDK's DomainDeleteResponse parses.
    gone = cf.workers.domains.delete(dom.id, account_id=aid)
    assert gone.success is True and gone.errors == [] and gone.messages == []
    assert list(cf.workers.domains.list(account_id=aid)) == []
    dom = cf.workers.domains.update(account_id=aid, hostname="app.blackroad.io", service="edge", zone_id=zid)
    reply = raw(cf_emulator, "DELETE", f"/accounts/{aid}/workers/domains/{dom.id}")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    assert reply.json() == {"success": True, "errors": [], "messages": [], "result": None}
    with pytest.raises(cloudflare.NotFoundError):
        cf.workers.domains.delete(dom.id, account_id=aid)


# ------------------------------------------------------------------------------ KV
def test_kv_namespaces_and_values(cf, cf_emulator):
    aid = cf_emulator.account_id
    ns = cf.kv.namespaces.create(account_id=aid, title="config")
    with pytest.raises(cloudflare.ConflictError):
        cf.kv.namespaces.create(account_id=aid, title="config")
    cf.kv.namespaces.update(ns.id, account_id=aid, title="config2")
    assert cf.kv.namespaces.get(ns.id, account_id=aid).title == "config2"
    assert [n.title for n in cf.kv.namespaces.list(account_id=aid)] == ["config2"]

    cf.kv.namespaces.values.update("a/b c", account_id=aid, namespace_id=ns.id, value=b"\x00\xffbin",
                                   metadata={"v": 1})
    assert cf.kv.namespaces.values.get("a/b c", account_id=aid, namespace_id=ns.id).read() == b"\x00\xffbin"
    keys = list(cf.kv.namespaces.keys.list(ns.id, account_id=aid))
    assert [(k.name, k.metadata) for k in keys] == [("a/b c", {"v": 1})]
    cf.kv.namespaces.values.delete("a/b c", account_id=aid, namespace_id=ns.id)
    with pytest.raises(cloudflare.NotFoundError):
        cf.kv.namespaces.values.get("a/b c", account_id=aid, namespace_id=ns.id)
    cf.kv.namespaces.delete(ns.id, account_id=aid)
    assert list(cf.kv.namespaces.list(account_id=aid)) == []


def test_kv_bulk_and_cursor_pagination(cf, cf_emulator):
    aid = cf_emulator.account_id
    ns = cf.kv.namespaces.create(account_id=aid, title="bulk")
    pairs = [{"key": f"k{i:05d}", "value": f"v{i}", "metadata": {"i": i}} for i in range(10000)]
    pairs[0] = {"key": "k00000", "value": base64.b64encode(b"\x01\x02").decode(), "base64": True}
    t0 = time.monotonic()
    res = cf.kv.namespaces.bulk_update(ns.id, account_id=aid, body=pairs)
    assert time.monotonic() - t0 < 3
    assert res.successful_key_count == 10000 and res.unsuccessful_keys == []
    assert cf.kv.namespaces.values.get("k00000", account_id=aid, namespace_id=ns.id).read() == b"\x01\x02"

    cf_emulator.reset_requests()
    first = cf.kv.namespaces.keys.list(ns.id, account_id=aid, limit=1000, prefix="k0")
    assert len(first.result) == 1000 and first.result_info.cursor
    names = [k.name for k in first]  # auto-pagination follows cursors and stops on ""
    assert len(names) == 10000 and names == sorted(names)
    assert len(cf_emulator.requests()) == 10
    assert list(cf.kv.namespaces.keys.list(ns.id, account_id=aid, prefix="k0999"))[0].metadata == {"i": 9990}

    got = cf.kv.namespaces.bulk_get(ns.id, account_id=aid, keys=["k00001", "missing"])
    assert got.values == {"k00001": "v1", "missing": None}
    deleted = cf.kv.namespaces.bulk_delete(ns.id, account_id=aid, body=[f"k{i:05d}" for i in range(5000)])
    assert deleted.successful_key_count == 5000
    assert len(list(cf.kv.namespaces.keys.list(ns.id, account_id=aid))) == 5000
    r = raw(cf_emulator, "DELETE", f"/accounts/{aid}/storage/kv/namespaces/{ns.id}/bulk", json=["k05000"])
    assert r.status_code == 200
    assert raw(cf_emulator, "GET", f"/accounts/{aid}/storage/kv/namespaces/{ns.id}/keys",
               params={"limit": 5}).status_code == 400
    cf_emulator.clear_violations()  # limit=5 is a deliberate schema violation


# ------------------------------------------------------------------------------ tunnels
def test_tunnels(cf, cf_emulator):
    aid = cf_emulator.account_id
    secret = base64.b64encode(b"s" * 32).decode()
    tun = cf.zero_trust.tunnels.cloudflared.create(account_id=aid, name="lab", config_src="cloudflare",
                                                   tunnel_secret=secret)
    assert len(tun.id) == 36 and tun.status == "inactive"
    with pytest.raises(cloudflare.ConflictError):
        cf.zero_trust.tunnels.cloudflared.create(account_id=aid, name="lab", config_src="cloudflare")
    token = cf.zero_trust.tunnels.cloudflared.token.get(tun.id, account_id=aid)
    assert json.loads(base64.b64decode(token)) == {"a": aid, "t": tun.id, "s": secret}

    ingress = [{"hostname": "app.blackroad.io", "service": "http://localhost:8080",
                "originRequest": {"connectTimeout": 10}},
               {"service": "http_status:404"}]
    c1 = cf.zero_trust.tunnels.cloudflared.configurations.update(tun.id, account_id=aid, config={"ingress": ingress})
    c2 = cf.zero_trust.tunnels.cloudflared.configurations.update(tun.id, account_id=aid, config={"ingress": ingress})
    assert (c1.version, c2.version) == (1, 2) and c2.source == "cloudflare"
    got = cf.zero_trust.tunnels.cloudflared.configurations.get(tun.id, account_id=aid)
    assert got.config.ingress[0].hostname == "app.blackroad.io"
    with pytest.raises(cloudflare.BadRequestError):  # catch-all not last
        cf.zero_trust.tunnels.cloudflared.configurations.update(
            tun.id, account_id=aid, config={"ingress": list(reversed(ingress))})

    new_secret = base64.b64encode(b"n" * 32).decode()
    cf.zero_trust.tunnels.cloudflared.edit(tun.id, account_id=aid, name="lab2", tunnel_secret=new_secret)
    token = cf.zero_trust.tunnels.cloudflared.token.get(tun.id, account_id=aid)
    assert json.loads(base64.b64decode(token))["s"] == new_secret
    assert [t.name for t in cf.zero_trust.tunnels.cloudflared.list(account_id=aid)] == ["lab2"]
    cf.zero_trust.tunnels.cloudflared.delete(tun.id, account_id=aid)
    assert list(cf.zero_trust.tunnels.cloudflared.list(account_id=aid)) == []
    deleted = list(cf.zero_trust.tunnels.cloudflared.list(account_id=aid, is_deleted=True))
    assert deleted[0].deleted_at is not None


def test_tunnel_status_from_seeded_connections(cf, cf_emulator):
    state = cf_emulator.state()
    state["tunnels"] = [
        {"name": "up", "connections": [{"colo_name": "dfw01"}, {"colo_name": "ord02"}]},
        {"name": "flaky", "connections": [{"colo_name": "dfw01"}, {"colo_name": "ord02", "is_pending_reconnect": True}]},
        {"name": "idle"},
    ]
    cf_emulator.seed(state)
    aid = cf_emulator.account_id
    tunnels = {t.name: t for t in cf.zero_trust.tunnels.cloudflared.list(account_id=aid)}
    assert {n: t.status for n, t in tunnels.items()} == {"up": "healthy", "flaky": "degraded", "idle": "inactive"}
    assert [t.name for t in cf.zero_trust.tunnels.cloudflared.list(account_id=aid, status="healthy")] == ["up"]
    clients = list(cf.zero_trust.tunnels.cloudflared.connections.get(tunnels["up"].id, account_id=aid))
    assert len(clients[0].conns) == 2
    with pytest.raises(cloudflare.BadRequestError):  # active connections block deletion
        cf.zero_trust.tunnels.cloudflared.delete(tunnels["up"].id, account_id=aid)
    cf.zero_trust.tunnels.cloudflared.connections.delete(tunnels["up"].id, account_id=aid)
    assert cf.zero_trust.tunnels.cloudflared.get(tunnels["up"].id, account_id=aid).status == "down"


# ------------------------------------------------------------------------------ D1 / R2
def test_d1_and_r2(cf, cf_emulator):
    aid = cf_emulator.account_id
    state = cf_emulator.state()
    state["d1_databases"] = [{"name": "lucidia", "uuid": "6f1c5a2e-0000-4000-8000-000000000001"}]
    state["r2_buckets"] = [{"name": "artifacts"}]
    cf_emulator.seed(state)
    dbs = list(cf.d1.database.list(account_id=aid))
    assert [(d.name, d.uuid) for d in dbs] == [("lucidia", "6f1c5a2e-0000-4000-8000-000000000001")]
    assert cf.d1.database.get(dbs[0].uuid, account_id=aid).name == "lucidia"
    cf.d1.database.delete(dbs[0].uuid, account_id=aid)
    assert list(cf.d1.database.list(account_id=aid)) == []
    assert [b.name for b in cf.r2.buckets.list(account_id=aid).buckets] == ["artifacts"]


def test_r2_bucket_list_pages_by_cursor(cf, cf_emulator):
    """r2-list-buckets: per_page (default 20, max 1000), cursor, start_after, name_contains, direction."""
    aid = cf_emulator.account_id
    state = cf_emulator.state()
    names = ["bucket-%02d" % i for i in range(25)]
    state["r2_buckets"] = [{"name": n} for n in reversed(names)]
    cf_emulator.seed(state)
    path = f"/accounts/{aid}/r2/buckets"

    def page(**params):
        reply = raw(cf_emulator, "GET", path, params=params)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return [b["name"] for b in body["result"]["buckets"]], body["result_info"]

    # Default page size 20: a cursor while more remain, none on the last page.
    first, info = page()
    assert first == names[:20] and info["per_page"] == 20 and info["cursor"]
    rest, info = page(cursor=info["cursor"])
    assert rest == names[20:] and info == {"per_page": 20}

    # per_page 10: three pages, following the cursor; the pages add up to every bucket once.
    seen, cursor, calls = [], None, 0
    while True:
        got, info = page(per_page=10, **({"cursor": cursor} if cursor else {}))
        calls += 1
        seen += got
        cursor = info.get("cursor")
        if not cursor:
            break
    assert seen == names and calls == 3

    assert page(per_page=1000)[0] == names
    assert page(per_page=5, start_after="bucket-21") == (names[22:], {"per_page": 5})
    assert page(name_contains="-1")[0] == names[10:20]
    desc, info = page(per_page=20, direction="desc")
    assert desc == names[::-1][:20]
    assert page(direction="desc", cursor=info["cursor"])[0] == names[::-1][20:]

    # The SDK sends the same parameters (it drops result_info).
    assert [b.name for b in cf.r2.buckets.list(account_id=aid, per_page=7, name_contains="bucket-0").buckets] == \
        names[:7]

    for bad in ({"per_page": 0}, {"per_page": 1001}, {"per_page": "lots"}, {"cursor": "not-a-cursor"},
                {"direction": "sideways"}):
        reply = raw(cf_emulator, "GET", path, params=bad)
        assert reply.status_code == 400 and reply.json()["success"] is False, (bad, reply.text)


# ------------------------------------------------------------------------------ faults / recording
def test_fault_status_429_with_retry_after(cf, cf_emulator):
    cf_emulator.inject(action="status", status=429, retry_after=0, count=1, path_regex="/zones$")
    with pytest.raises(cloudflare.RateLimitError) as exc:
        list(cf.zones.list())
    assert exc.value.response.headers["retry-after"] == "0"
    assert len(list(cf.zones.list())) == 2  # count exhausted
    retrying = cloudflare.Cloudflare(api_token=cf_emulator.token, base_url=cf_emulator.url, max_retries=2)
    cf_emulator.inject(action="status", status=500, count=1, method="GET")
    assert len(list(retrying.zones.list())) == 2
    assert [r["status"] for r in cf_emulator.requests()[-3:]] == [500, 200, 200]  # retry, then page 2


def test_fault_drop_after_duplicates_create(cf_emulator):
    retrying = cloudflare.Cloudflare(api_token=cf_emulator.token, base_url=cf_emulator.url, max_retries=1)
    zid = cf_emulator.zone_id()
    cf_emulator.inject(action="drop", when="after", method="POST", path_regex="/dns_records$", count=1)
    with pytest.raises(cloudflare.BadRequestError):  # the retry hits the record the lost reply created
        retrying.dns.records.create(zone_id=zid, name="dup", type="A", content="192.0.2.1", ttl=1)
    assert len(cf_emulator.state()["dns_records"]) == 1
    cf_emulator.inject(action="drop", when="before", method="POST", count=1)
    cf = cloudflare.Cloudflare(api_token=cf_emulator.token, base_url=cf_emulator.url, max_retries=0)
    with pytest.raises(cloudflare.APIConnectionError):
        cf.dns.records.create(zone_id=zid, name="other", type="A", content="192.0.2.1", ttl=1)
    assert len(cf_emulator.state()["dns_records"]) == 1
    assert cf_emulator.requests()[-1].get("dropped") is True


def test_fault_latency_and_recording(cf, cf_emulator):
    cf_emulator.inject({"action": "latency", "ms": 300, "count": 1})
    t0 = time.monotonic()
    list(cf.accounts.list())
    assert time.monotonic() - t0 >= 0.3
    cf_emulator.reset_requests()
    zid = cf_emulator.zone_id()
    cf.dns.records.create(zone_id=zid, name="rec", type="A", content="192.0.2.1", ttl=1)
    list(cf.dns.records.list(zone_id=zid, name="rec.blackroad.io"))
    reqs = cf_emulator.requests()
    assert [(r["method"], r["path"], r["status"]) for r in reqs] == [
        ("POST", f"/zones/{zid}/dns_records", 200), ("GET", f"/zones/{zid}/dns_records", 200),
        ("GET", f"/zones/{zid}/dns_records", 200)]
    assert reqs[1]["query"]["name"] == "rec.blackroad.io" and all("ms" in r for r in reqs)
    assert [w["method"] for w in cf_emulator.writes()] == ["POST"]


# ------------------------------------------------------------------------------ contract
def test_request_schema_violation_is_rejected_and_recorded(cf_emulator):
    zid = cf_emulator.zone_id()
    bad_record = {"name": "x", "type": "A", "ttl": "auto", "content": "192.0.2.1"}
    r = raw(cf_emulator, "POST", f"/zones/{zid}/dns_records", json=bad_record)
    assert r.status_code == 400 and r.json()["success"] is False
    r2 = raw(cf_emulator, "GET", "/zones", params={"per_page": 500})
    assert r2.status_code == 400
    r3 = raw(cf_emulator, "POST", f"/zones/{zid}/dns_records/batch", json={"posts": "nope"})
    assert r3.status_code == 400
    v = cf_emulator.violations(clear=True)
    expected = [("request", "openapi"), ("request", "openapi"), ("request", "sdk")]
    assert [(x["kind"], x["source"]) for x in v] == expected
    assert "ttl" in " ".join(v[0]["problems"])
    assert cf_emulator.state()["dns_records"] == []


def test_response_violation_is_detected(cf_emulator):
    # Sneak an invalid record in through the seed (bypassing validation of stored data is
    # what an emulator bug would look like) and check the response check notices it.
    state = cf_emulator.state()
    state["dns_records"] = [{"zone": "blackroad.io", "name": "x", "type": "A", "content": "192.0.2.1", "ttl": 1}]
    cf_emulator.seed(state)
    zid = cf_emulator.zone_id()
    rid = cf_emulator.state()["dns_records"][0]["id"]
    from cloudflare_emulator.contract import Contract
    c = Contract()
    body = raw(cf_emulator, "GET", f"/zones/{zid}/dns_records/{rid}").json()
    assert c.check_response("GET", "/zones/{zone_id}/dns_records/{dns_record_id}", 200, body) == []
    body["result"]["proxied"] = "yes"
    assert c.check_response("GET", "/zones/{zone_id}/dns_records/{dns_record_id}", 200, body)
    assert c.check_response("GET", "/zones", 200, {"success": True}) != []


# ------------------------------------------------------------------------------ seed / persistence
def test_seed_file_and_state_file(tmp_path):
    seed = {
        "accounts": [{"id": "a" * 32, "name": "Lab"}],
        "zones": [{"name": "example.test", "account_id": "a" * 32}],
        "dns_records": [{"zone": "example.test", "name": "@", "type": "A", "content": "192.0.2.1", "ttl": 1}],
        "workers": [{"name": "w", "files": {"index.js": JS.decode()}, "compatibility_date": "2024-09-23",
                     "bindings": [{"type": "secret_text", "name": "S", "text": "x"}]}],
        "kv_namespaces": [{"title": "cfg", "entries": {"a": "1", "b": {"value": "2", "metadata": {"m": 1}}}}],
        "d1_databases": [{"name": "db"}], "r2_buckets": [{"name": "bucket"}],
        "tunnels": [{"name": "t", "connections": [{"colo_name": "dfw01"}]}],
        "routes": [{"zone": "example.test", "pattern": "example.test/*", "script": "w"}],
        "worker_domains": [{"hostname": "api.example.test", "service": "w"}],
    }
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(seed))
    state_file = tmp_path / "state.json"
    proc, url, token = start_emulator(seed=seed_file, state_file=state_file)
    try:
        cf = cloudflare.Cloudflare(api_token=token, base_url=url, max_retries=0)
        zone = list(cf.zones.list(name="example.test"))[0]
        assert [r.name for r in cf.dns.records.list(zone_id=zone.id)] == ["example.test"]
        ns = list(cf.kv.namespaces.list(account_id="a" * 32))[0]
        assert [(k.name, k.metadata) for k in cf.kv.namespaces.keys.list(ns.id, account_id="a" * 32)] == [
            ("a", None), ("b", {"m": 1})]
        assert list(cf.zero_trust.tunnels.cloudflared.list(account_id="a" * 32))[0].status == "healthy"
        cf.dns.records.create(zone_id=zone.id, name="new", type="A", content="192.0.2.2", ttl=1)
    finally:
        stop_emulator(proc)
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"
    proc, url, token = start_emulator(state_file=state_file)  # no seed: the state file wins
    try:
        cf = cloudflare.Cloudflare(api_token=token, base_url=url, max_retries=0)
        zone = list(cf.zones.list(name="example.test"))[0]
        assert sorted(r.name for r in cf.dns.records.list(zone_id=zone.id)) == ["example.test", "new.example.test"]
        settings = cf.workers.scripts.script_and_version_settings.get("w", account_id="a" * 32)
        assert [b.name for b in settings.bindings] == ["S"]
    finally:
        stop_emulator(proc)


def test_reset_and_cloudflare_env(cf, cf_emulator):
    from conftest import cloudflare_env
    env = cloudflare_env(cf_emulator)
    assert env == {"CLOUDFLARE_API_TOKEN": cf_emulator.token, "CLOUDFLARE_BASE_URL": cf_emulator.url}
    cf.kv.namespaces.create(account_id=cf_emulator.account_id, title="x")
    cf_emulator.reset()
    assert cf_emulator.state()["kv_namespaces"] == [] and cf_emulator.requests() == []
