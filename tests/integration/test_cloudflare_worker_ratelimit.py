"""cloudflare_worker's Rate Limiting binding (the edge's rate limit Worker uses one)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import cloudflare_env  # noqa: E402
from playbook import run_play  # noqa: E402

WORKER = "export default { async fetch(req, env) { return new Response(String((await env.LIMITER.limit({key: 'k'})).success)); } };\n"


def task(src, limit=100, period=60, namespace_id="1001", register="worker"):
    return {"name": register, "ignore_errors": True, "blackroad.infra.cloudflare_worker": {
        "name": "limited", "account": "BlackRoad", "files": [str(src)],
        "bindings": [{"type": "ratelimit", "name": "LIMITER", "namespace_id": namespace_id,
                      "limit": limit, "period": period}]}}


def binding(emu):
    script, = [w for w in emu.state()["workers"] if w["name"] == "limited"]
    return script["bindings"]


def test_ratelimit_binding_is_uploaded_compared_and_changed(cf_emulator, tmp_path):
    src = tmp_path / "limited.js"
    src.write_text(WORKER)
    env = cloudflare_env(cf_emulator)
    first = run_play(tmp_path, [task(src)], env)
    assert first.result("worker").get("changed") is True, first.output
    assert binding(cf_emulator) == [{"type": "ratelimit", "name": "LIMITER", "namespace_id": "1001",
                                     "simple": {"limit": 100, "period": 60}}]
    cf_emulator.reset_requests()
    again = run_play(tmp_path, [task(src)], env)
    assert again.changed == 0 and cf_emulator.writes() == []
    check = run_play(tmp_path, [task(src, limit=5, period=10)], env, check=True, diff=True)
    result = check.result("worker")
    assert result["changed"] is True and cf_emulator.writes() == []
    assert "binding LIMITER" in " ".join(result["actions"])
    limiter, = result["diff"]["after"]["script"]["bindings"]
    assert limiter["simple"] == {"limit": 5, "period": 10}
    run_play(tmp_path, [task(src, limit=5, period=10)], env)
    assert binding(cf_emulator)[0]["simple"] == {"limit": 5, "period": 10}


def test_bad_ratelimit_binding_fails_before_any_call(cf_emulator, tmp_path):
    src = tmp_path / "limited.js"
    src.write_text(WORKER)
    cf_emulator.reset_requests()
    res = run_play(tmp_path, [task(src, limit=0, period=30, namespace_id="abc")], cloudflare_env(cf_emulator))
    msg = res.result("worker")["msg"]
    assert "namespace_id, a positive integer" in msg
    assert "limit, a positive number" in msg
    assert "period 10 or 60" in msg
    assert cf_emulator.requests() == []
