"""The how-to's example (docs/cloudflare-as-code.md) runs against the emulator,
and a second run reports changed=0."""

import re

from playbook import REPO, run_play

HOWTO = REPO / "docs" / "cloudflare-as-code.md"
EXAMPLE = REPO / "docs" / "examples" / "cloudflare_account.yml"


def test_the_howto_shows_the_example_file_as_it_is():
    blocks = re.findall(r"```yaml\n(.*?)```", HOWTO.read_text(), re.S)
    assert EXAMPLE.read_text() in blocks


def test_the_example_converges_and_a_second_run_changes_nothing(tmp_path, cf_emulator):
    env = {"CLOUDFLARE_API_TOKEN": cf_emulator.token, "CLOUDFLARE_BASE_URL": cf_emulator.url}
    token_file = tmp_path / "cloudflared" / "pi5-alpha.token"
    extra = {"token_file": str(token_file)}

    # On the empty account, --check predicts every change and writes nothing.
    predicted = run_play(tmp_path, None, env, playbook=EXAMPLE, extra_vars=extra, check=True, diff=True)
    assert predicted.rc == 0, predicted.output
    assert cf_emulator.writes() == []

    first = run_play(tmp_path, None, env, playbook=EXAMPLE, extra_vars=extra)
    assert first.rc == 0, first.output
    assert first.changed >= 5
    assert predicted.changed == first.changed
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    state = cf_emulator.state()
    assert [w["name"] for w in state["workers"]] == ["hello-edge"]
    tunnel_id = first.result("Tunnel for pi5-alpha, with its whole ingress")["tunnel"]["id"]
    api = [r for r in state["dns_records"] if r["name"] == "api.blackroad.io"]
    assert [r["content"] for r in api] == [tunnel_id + ".cfargotunnel.com"]

    cf_emulator.reset_requests()
    preview = run_play(tmp_path, None, env, playbook=EXAMPLE, extra_vars=extra, check=True, diff=True)
    assert preview.rc == 0, preview.output
    assert preview.changed == 0, preview.output
    second = run_play(tmp_path, None, env, playbook=EXAMPLE, extra_vars=extra)
    assert second.rc == 0, second.output
    assert second.changed == 0, second.output
    assert cf_emulator.writes() == []
