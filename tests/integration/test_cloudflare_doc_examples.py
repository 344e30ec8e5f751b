"""Every example in the docs runs against the emulator, and a second run reports changed=0.

The examples are each ```yaml block of docs/modules/cloudflare_*.md and the EXAMPLES string of each
plugins/modules/cloudflare_*.py (what ``ansible-doc`` shows). A block that is a play runs as
it is; a block that is a list of tasks is wrapped in a play on localhost. What the examples
reference is supplied generically: one seed with the accounts, zones, namespaces, databases,
buckets and Workers they name, the vault_* (and other undefined) variables as extra vars,
and the files they read under the playbook's directory (tmp_path).
(docs/cloudflare-as-code.md is covered by test_cloudflare_docs.py.)
"""

import ast
import re

import pytest
import yaml

from playbook import REPO, run_play

# The account the examples name by id (0123...) and by name (BlackRoad) is one account.
ACCOUNT = "0123456789abcdef0123456789abcdef"

SEED = {
    "accounts": [{"id": ACCOUNT, "name": "BlackRoad"}],
    "zones": [
        {"name": "blackroad.io", "account_id": ACCOUNT},
        {"name": "example.com", "account_id": ACCOUNT},
    ],
    "dns_records": [
        # What "Remove a host" removes on the first run.
        {"zone": "example.com", "name": "legacy", "type": "A", "content": "192.0.2.99", "ttl": 1},
    ],
    "kv_namespaces": [
        {"title": "app-secrets"},
        {"title": "config", "entries": {"flags/new-ui": "off", "theme": "dark"}},
        {"title": "redirects"},
        {"title": "legacy-config", "entries": {"theme": "light", "locale": "en"}},
        {"title": "edge-cache"},
        {"title": "scratch", "entries": {"tmp": "1"}},
    ],
    "d1_databases": [{"name": "edge-db"}, {"name": "staging-old"}],
    "r2_buckets": [{"name": "edge-assets"}],
    "tunnels": [{"name": "old-tunnel"}],
}


def _worker(name):
    return {"name": name, "main_module": "index.js",
            "files": {"index.js": "export default { async fetch() { return new Response(%r); } };" % name}}


# What one module's examples need on top of SEED (and would conflict with another's).
SEED_EXTRA = {
    # The service binding's target, and the Worker that "Remove ..." removes.
    "cloudflare_worker": {"workers": [_worker("auth-worker"), _worker("old-worker")]},
    # The assert task expects exactly the Workers api and edge-router.
    "cloudflare_info": {"workers": [_worker("api"), _worker("edge-router")]},
    # kv_entries writes into app-config; the kv_namespace examples create it by renaming config.
    "cloudflare_kv_entries": {"kv_namespaces": [{"title": "app-config", "entries": {"old-key": "1", "theme": "x"}}]},
}


def seed_for(example):
    seed = {key: list(value) for key, value in SEED.items()}
    module = re.search(r"(cloudflare_\w+)\.", example).group(1)
    for key, value in SEED_EXTRA.get(module, {}).items():
        seed[key] = seed.get(key, []) + value
    return seed


# The records the dns_records EXAMPLES declare in their first task, which the purge task
# (records: "{{ example_com_records }}") then keeps exactly.
EXAMPLE_COM_RECORDS = [
    {"name": "@", "type": "A", "content": "192.0.2.10", "proxied": True},
    {"name": "@", "type": "AAAA", "content": "2001:db8::10", "proxied": True},
    {"name": "www", "type": "CNAME", "content": "example.com", "proxied": True},
    {"name": "@", "type": "MX", "content": "mx1.mail.example.net", "priority": 10},
    {"name": "@", "type": "MX", "content": "mx2.mail.example.net", "priority": 20},
    {"name": "@", "type": "TXT", "content": "v=spf1 include:_spf.mail.example.net -all", "ttl": 3600},
    {"name": "_sip._tcp", "type": "SRV", "data": {"priority": 10, "weight": 5, "port": 5060,
                                                  "target": "sip.example.com"}},
    {"name": "@", "type": "CAA", "data": {"flags": 0, "tag": "issue", "value": "letsencrypt.org"}},
    {"name": "status", "type": "CNAME", "content": "status.example.net",
     "comment": "Status page, owned by the SRE team", "tags": ["team:sre"]},
]

FILES = {
    "files/edge/index.js": ('import { route } from "./util.mjs";\n'
                            'import routes from "./routes.json";\n'
                            "export default {\n"
                            "  async fetch(request, env) {\n"
                            "    return new Response(route(routes, new URL(request.url).pathname));\n"
                            "  },\n"
                            "};\n"),
    "files/edge/util.mjs": "export function route(routes, path) { return routes[path] || 'not found'; }\n",
    "files/edge/routes.json": '{"/": "home"}\n',
}

# Absolute paths in examples that a test cannot write to, moved under the playbook directory.
PATH_REWRITES = {"/etc/cloudflared/": "etc/cloudflared/"}

# Tasks documented to report changed on every run, by nature: (example id, task name) -> why.
# Everything else must report ok on the second run. Empty: the examples put what always changes
# (rotating a tunnel secret, re-sending a Worker's secrets) behind one of ON_DEMAND instead.
ALWAYS_CHANGED = {}

# Variables that examples use to run a non-idempotent action on demand only (default false).
ON_DEMAND = ("rotate_tunnel_secret", "rotate_secrets")


def extra_vars(token):
    return {
        "vault_cloudflare_api_token": token,
        "vault_cloudflare_token": token,
        "vault_app_secrets": {"stripe-key": "sk_test_example", "session-salt": "pepper"},
        "vault_edge_api_key": "edge-key-1",
        "redirects": {"/old": "/new", "/blog": "https://blog.example.com/"},
        "example_com_records": EXAMPLE_COM_RECORDS,
    }


def _doc_blocks():
    for path in sorted((REPO / "docs" / "modules").glob("cloudflare_*.md")):
        blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)
        for index, block in enumerate(blocks):
            yield pytest.param(block, id="docs/modules/%s-%d" % (path.name, index))


def _module_examples():
    for path in sorted((REPO / "plugins" / "modules").glob("cloudflare_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["EXAMPLES"]:
                yield pytest.param(node.value.value, id="plugins/modules/%s-EXAMPLES" % path.name)


EXAMPLES = list(_doc_blocks()) + list(_module_examples())


def test_every_example_is_collected():
    assert len(EXAMPLES) >= 15, [p.id for p in EXAMPLES]


def playbook_for(block, tmp_path):
    """Write the example as a playbook in tmp_path (so playbook_dir is tmp_path)."""
    for old, new in PATH_REWRITES.items():
        if old in block:
            (tmp_path / new).mkdir(parents=True, exist_ok=True)
            block = block.replace(old, "%s/%s" % (tmp_path, new))
    doc = yaml.safe_load(block)
    assert isinstance(doc, list) and doc, block
    if not all("hosts" in item for item in doc):
        doc = [{"name": "Example", "hosts": "localhost", "gather_facts": False, "tasks": doc}]
    for name, text in FILES.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    playbook = tmp_path / "example.yml"
    playbook.write_text(yaml.safe_dump(doc, sort_keys=False))
    return playbook


def changed_tasks(result):
    return [r["task"] for r in result.results if r.get("changed")]


@pytest.mark.parametrize("block", EXAMPLES)
def test_example_converges_and_a_second_run_changes_nothing(block, request, tmp_path, cf_emulator):
    example = request.node.callspec.id
    cf_emulator.seed(seed_for(example))
    env = {"CLOUDFLARE_API_TOKEN": cf_emulator.token, "CLOUDFLARE_BASE_URL": cf_emulator.url}
    playbook = playbook_for(block, tmp_path)
    extra = extra_vars(cf_emulator.token)

    first = run_play(tmp_path, None, env, playbook=playbook, extra_vars=extra)
    assert first.rc == 0, first.output

    second = run_play(tmp_path, None, env, playbook=playbook, extra_vars=extra)
    assert second.rc == 0, second.output
    expected = sorted(task for (ex, task) in ALWAYS_CHANGED if ex == example)
    assert sorted(changed_tasks(second)) == expected, second.output

    # The on-demand action still works when asked for, and it is a change.
    on_demand = {name: True for name in ON_DEMAND if name in block}
    if on_demand:
        third = run_play(tmp_path, None, env, playbook=playbook, extra_vars=dict(extra, **on_demand))
        assert third.rc == 0, third.output
        assert changed_tasks(third), third.output
