"""blackroad.infra.cloudflare_tunnel end to end through ansible-playbook against the emulator."""

import base64
import json
import os
import stat
import urllib.request

import pytest

from playbook import run_play

ACCOUNT = "7c5dae5552338874e5053f2534d2767a"
TUNNEL_ID = "6f1c0f3e-2b7a-4d5e-9c8b-1a2b3c4d5e6f"
OTHER_ID = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
SEED_SECRET = base64.b64encode(b"s" * 32).decode()

INGRESS = [
    {"hostname": "app.blackroad.io", "service": "http://localhost:8080"},
    {"hostname": "api.blackroad.io", "path": "^/v1/", "service": "http://localhost:9000",
     "origin_request": {"connect_timeout": 10}},
    {"service": "http_status:404"},
]
DOCUMENT = {
    "ingress": [
        {"hostname": "app.blackroad.io", "service": "http://localhost:8080"},
        {"hostname": "api.blackroad.io", "path": "^/v1/", "service": "http://localhost:9000",
         "originRequest": {"connectTimeout": 10}},
        {"service": "http_status:404"},
    ],
    "originRequest": {"noTLSVerify": True},
}


class Emu:
    """The cf_emulator fixture plus its control API, used directly (seed, state, log, faults)."""

    def __init__(self, fixture):
        self.fixture = fixture
        self.token = fixture.token
        self.url = fixture.url.rstrip("/")
        self.control = self.url.split("/client/v4")[0] + "/__emulator"
        self.env = {"CLOUDFLARE_API_TOKEN": self.token, "CLOUDFLARE_BASE_URL": self.url}

    def _call(self, method, url, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["result"]

    def load(self, tunnels=()):
        self._call("PUT", self.control + "/state", {
            "accounts": [{"id": ACCOUNT, "name": "BlackRoad"}],
            "zones": [{"name": "blackroad.io", "account": ACCOUNT}],
            "tunnels": list(tunnels)})
        self._call("DELETE", self.control + "/faults")
        self._call("DELETE", self.control + "/requests")

    def tunnels(self, live=True):
        tunnels = self._call("GET", self.control + "/state?secrets=1")["tunnels"]
        return [t for t in tunnels if not (live and t.get("deleted_at"))]

    def tunnel(self, name):
        found = [t for t in self.tunnels() if t["name"] == name]
        assert len(found) == 1, found
        return found[0]

    def requests(self):
        return self._call("GET", self.control + "/requests")

    def writes(self):
        return [(r["method"], r["path"]) for r in self.requests() if r["method"] != "GET"]

    def clear(self):
        self._call("DELETE", self.control + "/requests")

    def faults(self, *rules):
        self._call("POST", self.control + "/faults", list(rules))

    def token_of(self, tunnel_id):
        return self._call("GET", "%s/accounts/%s/cfd_tunnel/%s/token" % (self.url, ACCOUNT, tunnel_id))


@pytest.fixture
def emu(cf_emulator):
    emu = Emu(cf_emulator)
    emu.load()
    return emu


def play(tmp_path, emu, tasks, **kwargs):
    """One play of tasks on localhost against the emulator."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    result = run_play(tmp_path, tasks, emu.env, **kwargs)
    return result


def tunnel_task(name="Tunnel", **args):
    args.setdefault("name", "edge")
    return {"name": name, "blackroad.infra.cloudflare_tunnel": dict(args, account=ACCOUNT), "register": "out"}


def seeded(connections=(), config=None, name="edge", tid=TUNNEL_ID):
    tunnel = {"id": tid, "account_id": ACCOUNT, "name": name, "tunnel_secret": SEED_SECRET,
              "config_src": "cloudflare", "connections": list(connections)}
    if config is not None:
        tunnel["config"] = config
    return tunnel


def decode(token):
    return json.loads(base64.b64decode(token))


def test_create_then_noop_then_change_shown_in_check_diff(tmp_path, emu):
    dest = tmp_path / "edge.token"
    task = tunnel_task(ingress=INGRESS, origin_request={"noTLSVerify": True}, token_dest=str(dest))

    first = play(tmp_path / "1", emu, [task])
    assert first.rc == 0, first.output
    out = first.result("Tunnel")
    assert out["changed"] is True
    tunnel = emu.tunnel("edge")
    assert tunnel["config_src"] == "cloudflare"
    assert tunnel["config"] == DOCUMENT
    assert len(base64.b64decode(tunnel["tunnel_secret"])) == 32
    assert [m for m, _path in emu.writes()] == ["POST", "PUT"]
    assert out["tunnel"]["id"] == tunnel["id"] and out["tunnel"]["name"] == "edge"
    assert out["status"] == "inactive" and out["connections"] == []
    assert out["config"] == DOCUMENT
    assert "token" not in out
    # The token file: mode 0600, the tunnel's token, which carries the secret the module generated.
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    token = dest.read_text()
    assert token == emu.token_of(tunnel["id"])
    assert decode(token) == {"a": ACCOUNT, "t": tunnel["id"], "s": tunnel["tunnel_secret"]}
    inode, mtime = dest.stat().st_ino, dest.stat().st_mtime_ns

    emu.clear()
    second = play(tmp_path / "2", emu, [task])
    assert second.rc == 0, second.output
    assert second.changed == 0
    assert emu.writes() == []
    assert second.result("Tunnel")["api_calls"] == 3  # list, configuration, token
    assert (dest.stat().st_ino, dest.stat().st_mtime_ns) == (inode, mtime)

    changed = dict(task)
    changed["blackroad.infra.cloudflare_tunnel"] = dict(
        task["blackroad.infra.cloudflare_tunnel"],
        ingress=[INGRESS[0], {"hostname": "*.blackroad.io", "service": "http://localhost:7000"}, INGRESS[2]],
        warp_routing=True)
    emu.clear()
    check = play(tmp_path / "3", emu, [changed], check=True, diff=True)
    assert check.rc == 0, check.output
    assert check.changed == 1
    assert emu.writes() == []
    diff = check.result("Tunnel")["diff"]
    assert diff["before"]["configuration"] == DOCUMENT
    assert diff["after"]["configuration"]["ingress"][1] == {"hostname": "*.blackroad.io",
                                                            "service": "http://localhost:7000"}
    assert diff["after"]["configuration"]["warp-routing"] == {"enabled": True}
    assert diff["before"]["tunnel"] == diff["after"]["tunnel"] == {"name": "edge", "state": "present",
                                                                   "id": tunnel["id"]}
    assert emu.tunnel("edge")["config"] == DOCUMENT

    emu.clear()
    real = play(tmp_path / "4", emu, [changed])
    assert real.rc == 0, real.output
    assert real.changed == 1
    assert emu.writes() == [("PUT", "/accounts/%s/cfd_tunnel/%s/configurations" % (ACCOUNT, tunnel["id"]))]
    config = emu.tunnel("edge")["config"]
    assert config["ingress"][1]["hostname"] == "*.blackroad.io"
    assert config["warp-routing"] == {"enabled": True} and config["originRequest"] == {"noTLSVerify": True}
    assert (dest.stat().st_ino, dest.stat().st_mtime_ns) == (inode, mtime)


BAD_INGRESS = {
    "Catch-all not last": (
        [{"service": "http_status:404"}, {"hostname": "app.blackroad.io", "service": "http://localhost:8080"}],
        "only the last rule may be a catch-all"),
    "Port in hostname": (
        [{"hostname": "app.blackroad.io:443", "service": "http://localhost:8080"}, {"service": "http_status:404"}],
        "'app.blackroad.io:443' cannot contain a port"),
    "Service with a path": (
        [{"hostname": "app.blackroad.io", "service": "http://localhost:8080/app"}, {"service": "http_status:404"}],
        "cannot proxy to a different path"),
}


def test_bad_ingress_fails_before_any_call(tmp_path, emu):
    emu.load([seeded(config=DOCUMENT)])
    result = play(tmp_path, emu, [dict(tunnel_task(name, ingress=rules), ignore_errors=True)
                                  for name, (rules, _message) in BAD_INGRESS.items()])
    assert result.rc == 0, result.output
    for name, (_rules, message) in BAD_INGRESS.items():
        out = result.result(name)
        assert out["failed"] is True, name
        assert message in out["msg"] and out["msg"].startswith("invalid ingress configuration: "), out["msg"]
        assert out["api_calls"] == 0
    assert emu.requests() == []
    assert emu.tunnel("edge")["config"] == DOCUMENT


def test_bad_origin_request_and_duplicate_names_fail_without_writes(tmp_path, emu):
    emu.load([seeded(), seeded(tid=OTHER_ID)])
    result = play(tmp_path, emu, [
        dict(tunnel_task("Unknown key", ingress=[{"service": "http_status:404", "origin_request": {"bogus": 1}}]),
             ignore_errors=True),
        dict(tunnel_task("Twice the same key", ingress=[{"service": "http_status:404"}],
                         origin_request={"connect_timeout": 5, "connectTimeout": 6}), ignore_errors=True),
        dict(tunnel_task("Two live tunnels", ingress=[{"service": "http_status:404"}]), ignore_errors=True),
    ])
    assert result.rc == 0, result.output
    assert "unknown key 'bogus'" in result.result("Unknown key")["msg"]
    assert "connectTimeout twice" in result.result("Twice the same key")["msg"]
    dup = result.result("Two live tunnels")
    assert dup["failed"] and TUNNEL_ID in dup["msg"] and OTHER_ID in dup["msg"] and "2 live tunnels" in dup["msg"]
    assert emu.writes() == []
    assert len(emu.requests()) == 1  # only the duplicate check listed tunnels


def test_rotate_secret_changes_the_token(tmp_path, emu):
    emu.load([seeded(config=DOCUMENT)])
    dest = tmp_path / "edge.token"
    result = play(tmp_path / "run", emu, [
        dict(tunnel_task("Check rotation", rotate_secret=True, token_dest=str(dest)), check_mode=True),
        dict(tunnel_task("Rotate", rotate_secret=True, token_dest=str(dest), return_token=True), no_log=True),
        tunnel_task("Return token", return_token=True),
    ])
    assert result.rc == 0, result.output
    check = result.result("Check rotation")
    assert check["changed"] is True and check["token_changed"] is True
    rotate = result.result("Rotate")
    assert rotate["changed"] is True
    assert "token" not in rotate or rotate["token"] != emu.token_of(TUNNEL_ID)  # censored by no_log
    tunnel = emu.tunnel("edge")
    assert tunnel["tunnel_secret"] != SEED_SECRET
    assert len(base64.b64decode(tunnel["tunnel_secret"])) == 32
    token = dest.read_text()
    assert decode(token) == {"a": ACCOUNT, "t": TUNNEL_ID, "s": tunnel["tunnel_secret"]}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    returned = result.result("Return token")
    assert returned["changed"] is False and returned["token"] == token
    assert [m for m, _path in emu.writes()] == ["PATCH"]
    assert tunnel["config"] == DOCUMENT  # rotation leaves the configuration alone


def test_token_file_mode_is_fixed_and_content_rewritten_only_when_it_differs(tmp_path, emu):
    emu.load([seeded()])
    dest = tmp_path / "edge.token"
    token = emu.token_of(TUNNEL_ID)
    dest.write_text(token)
    os.chmod(dest, 0o644)
    result = play(tmp_path / "run", emu, [
        tunnel_task("Fix mode", token_dest=str(dest)),
        tunnel_task("Again", token_dest=str(dest)),
    ])
    assert result.rc == 0, result.output
    assert result.result("Fix mode")["changed"] is True
    assert result.result("Again")["changed"] is False
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600 and dest.read_text() == token
    assert emu.writes() == []
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".edge.token")]  # no temporary file left


def test_status_and_connections_are_reported(tmp_path, emu):
    # The same ingress, written differently from what the API holds (warp_routing omitted keeps the
    # current setting; empty values are unset): a no-op.
    current = dict(DOCUMENT, **{"warp-routing": {"enabled": True}})
    emu.load([seeded(config=current, connections=[
        {"id": "c1", "colo_name": "dfw01", "client_id": "a1"},
        {"id": "c2", "colo_name": "iad08", "client_id": "a1"},
        {"id": "c3", "colo_name": "dfw01", "client_id": "a2", "is_pending_reconnect": True},
    ])])
    ingress = [dict(INGRESS[0], path=""), INGRESS[1], dict(INGRESS[2], origin_request={})]
    result = play(tmp_path, emu, [tunnel_task(ingress=ingress, origin_request={"no_tls_verify": True})])
    assert result.rc == 0, result.output
    out = result.result("Tunnel")
    assert out["changed"] is False
    assert out["status"] == "degraded" and out["tunnel"]["status"] == "degraded"
    assert out["tunnel"]["connections"] == {"count": 3, "active": 2, "colos": ["dfw01", "iad08"]}
    assert sorted(c["id"] for c in out["connections"]) == ["c1", "c2", "c3"]
    assert out["config"] == current
    assert out["tunnel"]["id"] == TUNNEL_ID and out["tunnel"]["created_at"]
    assert out["api_calls"] == 2
    assert emu.writes() == []


def test_absent_cleans_up_connections_and_deletes(tmp_path, emu):
    emu.load([seeded(config=DOCUMENT, connections=[{"id": "c1", "colo_name": "dfw01"}])])
    dest = tmp_path / "edge.token"
    dest.write_text("old")
    result = play(tmp_path / "run", emu, [
        dict(tunnel_task("Check", state="absent", token_dest=str(dest)), check_mode=True, diff=True),
        tunnel_task("Delete", state="absent", token_dest=str(dest)),
        tunnel_task("Again", state="absent", token_dest=str(dest)),
    ])
    assert result.rc == 0, result.output
    check = result.result("Check")
    assert check["changed"] is True
    assert check["diff"]["before"]["tunnel"]["state"] == "present"
    assert check["diff"]["before"]["configuration"] == DOCUMENT
    assert check["diff"]["after"]["tunnel"]["state"] == "absent"
    assert result.result("Delete")["changed"] is True
    assert result.result("Again")["changed"] is False
    base = "/accounts/%s/cfd_tunnel/%s" % (ACCOUNT, TUNNEL_ID)
    assert emu.writes() == [("DELETE", base + "/connections"), ("DELETE", base)]
    assert emu.tunnels() == []
    assert not dest.exists()


def test_faults_and_a_create_whose_reply_is_lost_make_one_tunnel(tmp_path, emu):
    emu.faults(
        {"action": "status", "status": 429, "retry_after": 1, "method": "GET", "path_regex": "/cfd_tunnel$"},
        {"action": "drop", "when": "after", "method": "POST", "path_regex": "/cfd_tunnel$"},
        {"action": "status", "status": 503, "method": "PUT", "path_regex": "/configurations$"},
    )
    result = play(tmp_path, emu, [tunnel_task(ingress=INGRESS, origin_request={"noTLSVerify": True})])
    assert result.rc == 0, result.output
    assert result.result("Tunnel")["changed"] is True
    tunnel = emu.tunnel("edge")  # exactly one live tunnel
    assert tunnel["config"] == DOCUMENT
    assert result.result("Tunnel")["tunnel"]["id"] == tunnel["id"]
    log = emu.requests()
    posts = [r for r in log if r["method"] == "POST"]
    assert len(posts) == 1 and posts[0].get("dropped")
    assert [r["status"] for r in log if r["method"] == "PUT"] == [503, 200]

    emu.clear()
    again = play(tmp_path / "again", emu, [tunnel_task(ingress=INGRESS, origin_request={"noTLSVerify": True})])
    assert again.changed == 0 and emu.writes() == []


def test_no_secret_in_verbose_output(tmp_path, emu):
    assert emu.token.startswith("canary") or len(emu.token) >= 16
    emu.load([seeded(config=DOCUMENT)])
    dest = tmp_path / "edge.token"
    old_token = emu.token_of(TUNNEL_ID)
    result = play(tmp_path / "run", emu, [
        tunnel_task("Read", token_dest=str(dest)),
        dict(tunnel_task("Rotate", rotate_secret=True, token_dest=str(dest), return_token=True), no_log=True),
        tunnel_task("Changed ingress", ingress=INGRESS, token_dest=str(dest)),
        dict(tunnel_task("Return", return_token=True), no_log=True),
    ], json_output=False, verbose=3, diff=True)
    assert result.rc == 0, result.output
    new_token = dest.read_text()
    secret = emu.tunnel("edge")["tunnel_secret"]
    assert new_token != old_token
    output = result.output
    assert "cloudflare_tunnel" in output and "Rotate" in output
    for value in (emu.token, old_token, new_token, SEED_SECRET, secret):
        assert value not in output
