"""playbooks/cloudflare_consolidate.yml on an emulated account seeded like BlackRoad's."""

import copy
import json

import pytest
import yaml

from playbook import REPO, run_play

SEED = json.loads((REPO / "tests" / "fixtures" / "cloudflare" / "blackroad_account.json").read_text())
DESIRED = yaml.safe_load((REPO / "inventory" / "lab" / "group_vars" / "all" / "cloudflare.yml").read_text())[
    "cloudflare_account_desired"]
PLAYBOOK = REPO / "playbooks" / "cloudflare_consolidate.yml"


def consolidate(tmp_path, emu, **kwargs):
    extra = dict(cloudflare_account_desired=DESIRED)
    extra.update(kwargs.pop("extra_vars", {}))
    return run_play(tmp_path, None, env=emu_env(emu), playbook=PLAYBOOK, extra_vars=extra, **kwargs)


def emu_env(emu):
    return {"CLOUDFLARE_API_TOKEN": emu.token, "CLOUDFLARE_BASE_URL": emu.url}


def names(state, kind, key="name"):
    return sorted(item[key] for item in state[kind] if not item.get("deleted_at"))


def kv(state, title):
    namespace, = [n for n in state["kv_namespaces"] if n["title"] == title]
    return dict((k, v["value"]) for k, v in namespace["entries"].items())


@pytest.fixture
def account(cf_emulator):
    seed = copy.deepcopy(SEED)
    # A Worker the plan does not name: it must survive everything.
    seed["workers"].append(dict(name="someone-elses-worker", main_module="index.js",
                                files={"index.js": "export default {fetch() {return new Response('x')}}"}))
    cf_emulator.seed(seed)
    before = cf_emulator.state()
    assert len(before["workers"]) == 60
    assert len(before["kv_namespaces"]) == 16
    assert len(before["d1_databases"]) == 4
    assert len(before["r2_buckets"]) == 6
    return cf_emulator


def plan_lines(result):
    return result.result("Show the plan")["msg"]


def test_check_mode_prints_the_plan_and_writes_nothing(tmp_path, account):
    account.reset_requests()
    result = consolidate(tmp_path, account, check=True, extra_vars=dict(cloudflare_confirm_delete=True))
    assert result.rc == 0, result.output
    assert account.writes() == []
    lines = plan_lines(result)
    assert "workers blackroad-edge-gateway: stays" in lines
    assert "workers blackroad-ratelimit: missing (to be created or deployed)" in lines
    assert "workers blackroad-docs-router: merges into blackroad-edge-gateway (fold)" in lines
    assert "workers blackroad-docs-router: deleted" in lines
    assert "workers blackroad-stripe-webhooks: deleted" in lines
    # Its replacement is not deployed yet, so it is kept.
    assert "workers blackroad-logger: kept until blackroad-telemetry exists" in lines
    assert "workers blackroad-logger: deleted" not in lines
    assert "workers someone-elses-worker: not in the plan, left alone" in lines
    assert "kv_namespaces RATE_LIMITS: merges into RATE_LIMIT (copy)" in lines
    assert "kv_namespaces API_KEYS: merges into AUTH (rename)" in lines
    assert "d1_databases openapi-template-db: deleted" in lines
    assert "d1_databases blackroad-d1-database: not in the plan, left alone" in lines
    # The modules in check mode predict the deletions they would make.
    deleted = result.result("Delete Workers the plan deletes")
    assert deleted["changed"] is True
    assert len(deleted["results"]) == 39 + 8 + 3 + 2


def test_consolidation_merges_then_deletes_only_with_confirmation(tmp_path, account):
    before = account.state()
    rate_limits = kv(before, "RATE_LIMITS")
    rate_limit = kv(before, "RATE_LIMIT")

    first = consolidate(tmp_path, account)
    assert first.rc == 0, first.output
    state = account.state()
    # Without confirmation nothing is deleted, but targets exist and data is merged.
    assert len(names(state, "workers")) == 60
    titles = names(state, "kv_namespaces", "title")
    for target in ("AUTH", "IDENTITY", "RATE_LIMIT", "CACHE", "BILLING", "STATE"):
        assert target in titles
    merged = kv(state, "RATE_LIMIT")
    # Existing keys of the target win; every other key of the merged namespace arrives.
    assert merged["limit:default"] == rate_limit["limit:default"]
    for key in rate_limits:
        assert key in merged
    assert "API_KEYS" not in titles  # renamed to AUTH, data kept in place
    assert kv(state, "AUTH")["key:2f1c"] == kv(before, "API_KEYS")["key:2f1c"]
    assert "meta:2f1c" in kv(state, "AUTH")

    confirmed = consolidate(tmp_path, account, extra_vars=dict(cloudflare_confirm_delete=True))
    assert confirmed.rc == 0, confirmed.output
    state = account.state()
    assert names(state, "workers") == sorted([
        "blackroad-edge-gateway", "blackroad-auth", "blackroad-billing", "lucidia-core", "cece",
        "blackroad-analytics", "blackroad-logger",  # wait for blackroad-telemetry
        "someone-elses-worker"])
    assert names(state, "kv_namespaces", "title") == sorted(
        ["AUTH", "IDENTITY", "RATE_LIMIT", "CACHE", "BILLING", "STATE"])
    assert names(state, "d1_databases") == sorted(["blackroad-os-main", "blackroad-logs", "blackroad-d1-database"])
    assert len(state["r2_buckets"]) == 6
    assert kv(state, "STATE")["cece:last"] == "hello"

    again = consolidate(tmp_path, account, extra_vars=dict(cloudflare_confirm_delete=True))
    assert again.rc == 0, again.output
    assert again.changed == 0, again.output


def test_a_fold_target_deployed_later_releases_the_waiting_workers(tmp_path, cf_emulator):
    def worker(name):
        return dict(name=name, main_module="index.js", files={"index.js": "export default {}"})

    seed = dict(accounts=SEED["accounts"], workers=[worker("blackroad-logger"), worker("blackroad-analytics")])
    cf_emulator.seed(seed)
    waiting = consolidate(tmp_path, cf_emulator, extra_vars=dict(cloudflare_confirm_delete=True))
    assert waiting.rc == 0, waiting.output
    assert names(cf_emulator.state(), "workers") == ["blackroad-analytics", "blackroad-logger"]

    seed["workers"].append(worker("blackroad-telemetry"))
    cf_emulator.seed(seed)
    released = consolidate(tmp_path, cf_emulator, extra_vars=dict(cloudflare_confirm_delete=True))
    assert released.rc == 0, released.output
    assert names(cf_emulator.state(), "workers") == ["blackroad-telemetry"]


def test_an_unknown_key_in_the_desired_state_fails_before_any_write(tmp_path, account):
    bad = dict(DESIRED, queues={"keep": []})
    account.reset_requests()
    extra = dict(cloudflare_account_desired=bad, cloudflare_confirm_delete=True)
    result = consolidate(tmp_path, account, extra_vars=extra)
    assert result.rc != 0
    assert "unknown keys in the desired state: queues" in result.output
    assert account.writes() == []
