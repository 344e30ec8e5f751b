"""plugins/module_utils/tailscale_policy.py: the HuJSON reader, the allow-all
rule, the section remover and the local evaluator of a policy's own tests,
with the fleet's default policy (playbooks/files/tailnet-policy.hujson)."""

import copy
import json
import pathlib
import random
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible_collections.blackroad.infra.plugins.module_utils.tailscale_policy import (  # noqa: E402
    ASSERTION_SECTIONS, PolicyError, PolicyEvaluator, Unsupported, allow_all_findings, covers_every_port,
    normalise, parse, parse_ports, remove_members, run_policy_tests, standardize, without_sections)

FLEET_FILE = REPO / "playbooks" / "files" / "tailnet-policy.hujson"
FLEET_TEXT = FLEET_FILE.read_text(encoding="utf-8")
FLEET = parse(FLEET_TEXT)
FLEET_SERVICE_TAGS = ["tag:agent-pool", "tag:api-gateway", "tag:database", "tag:monitoring", "tag:health",
                      "tag:llm", "tag:failover"]


# ---------------------------------------------------------------------------
# HuJSON

@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}', {"a": 1}),
    ('// head\n{"a": 1} // tail', {"a": 1}),
    ('{"a": /* inline */ 1}', {"a": 1}),
    ('{"a": 1, /* multi\nline\n*/ "b": 2}', {"a": 1, "b": 2}),
    ('{"a": [1, 2,],}', {"a": [1, 2]}),
    ('{"a": {"b": {},},}', {"a": {"b": {}}}),
    ('[1, // one\n]', [1]),
    ('[1, /* c */ ]', [1]),
    ('[1,\n  // a comment between the comma and the bracket\n]', [1]),
    ('{"url": "http://example.com/x"}', {"url": "http://example.com/x"}),
    ('{"c": "/* not a comment */"}', {"c": "/* not a comment */"}),
    ('{"c": "a // b"}', {"c": "a // b"}),
    ('{"q": "say \\"// hi\\"" // real comment\n}', {"q": 'say "// hi"'}),
    ('{"b": "ends with a backslash \\\\"} // comment', {"b": "ends with a backslash \\"}),
    ('{"comma": ",]"}', {"comma": ",]"}),
    ('{"comma": ",}", "x": [",",],}', {"comma": ",}", "x": [","]}),
    ('\ufeff{"bom": true}', {"bom": True}),
    ('{"a": 1}\r\n// windows line ends\r\n', {"a": 1}),
    ('{"a": 1} // no newline at the end', {"a": 1}),
    ('{"a": 1}/**/', {"a": 1}),
    ('{"u": "\\u00e9 caf\\u00e9"}', {"u": "\u00e9 caf\u00e9"}),
    ('{"slash": "/"} /* a / b */', {"slash": "/"}),
])
def test_hujson_reads_what_hujson_allows(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text,message", [
    ('[,1]', "line 1 column 2"),
    ('[,]', "line 1"),
    ('{,}', "line 1"),
    ('[1,,]', "line 1"),
    ('{"a": 1 /* never closed', "unterminated /* comment"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": NaN}', "NaN is not valid JSON"),
    ('{"a": Infinity}', "Infinity is not valid JSON"),
    ('', "empty"),
    ('   // only a comment\n', "line 2"),
    ("{'a': 1}", "line 1 column 2"),
    ('{"a": 1} {"b": 2}', "Extra data"),
    ('{"a": "unterminated}', "line 1"),
    ('{"a": 1 // the comment swallows the brace }', "line 1"),
])
def test_hujson_rejects_what_it_must(text, message):
    with pytest.raises(PolicyError) as raised:
        parse(text)
    assert message in str(raised.value)


def test_errors_point_at_the_line_in_the_file_after_comments():
    text = '/* a\nblock\ncomment */\n{\n  "a": 1,\n  "b": oops,\n}\n'
    with pytest.raises(PolicyError) as raised:
        parse(text)
    assert str(raised.value).startswith("line 6 column 8:")


def test_standardize_keeps_offsets_and_lines():
    text = '{ // c1\n "a": [1, 2, /* c2 */], /* c3\n */ }\n'
    standard = standardize(text)
    assert len(standard) == len(text)
    assert [i for i, c in enumerate(standard) if c == "\n"] == [i for i, c in enumerate(text) if c == "\n"]
    assert json.loads(standard) == {"a": [1, 2]}
    assert "c1" not in standard and "c2" not in standard and "c3" not in standard


def test_not_a_string_is_refused():
    with pytest.raises(PolicyError):
        parse(b'{"a": 1}')


def _random_value(rng, depth=0):
    pick = rng.randrange(7 if depth < 3 else 4)
    if pick == 0:
        return rng.randrange(-1000, 1000)
    if pick == 1:
        return rng.choice([True, False, None, 1.5])
    if pick in (2, 3):
        pieces = ["a", "//", "/*", "*/", ",", "]", "}", '"', "\\", " ", "tag:x:22", "\u00e9", "\n"]
        return "".join(rng.choice(pieces) for dummy in range(rng.randrange(6)))
    if pick in (4, 5):
        return {"k%d%s" % (i, rng.choice(["", "//", ","])): _random_value(rng, depth + 1)
                for i in range(rng.randrange(4))}
    return [_random_value(rng, depth + 1) for dummy in range(rng.randrange(4))]


def _humanise(text, rng):
    """JSON -> HuJSON the way people write it: comments on every line, trailing commas."""
    lines = []
    for line in text.split("\n"):
        if rng.random() < 0.5:
            line += " // note, with ] and } and \"quotes\""
        elif rng.random() < 0.3:
            line = "/* before */ " + line
        lines.append(line)
    out = "\n".join(lines)
    # A trailing comma after every last element: insert before closing
    # brackets that end a line (only outside strings, which indent=1 guarantees
    # never end with a bare bracket line).
    result = []
    for line in out.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("]", "}")) and result and not result[-1].rstrip().endswith(("[", "{")):
            previous = result[-1]
            cut = previous.find(" //")
            if cut >= 0:
                result[-1] = previous[:cut] + "," + previous[cut:]
            else:
                result[-1] = previous + ","
        result.append(line)
    return "\n".join(result)


def test_random_documents_round_trip():
    rng = random.Random(20240604)
    for dummy in range(300):
        value = {"root": _random_value(rng)}
        text = json.dumps(value, indent=1, ensure_ascii=rng.random() < 0.5)
        assert parse(text) == value
        human = _humanise(text, rng)
        assert parse(human) == value, human


def test_normalise_ignores_comments_layout_and_key_order_but_not_list_order():
    one = parse('{"b": 1, // x\n "a": [1, 2],}')
    two = parse('{\n  "a": [1, 2],\n  "b": 1\n}')
    three = parse('{"a": [2, 1], "b": 1}')
    assert normalise(one) == normalise(two)
    assert normalise(one) != normalise(three)
    assert normalise(one).endswith("\n")


# ---------------------------------------------------------------------------
# Removing sections

def test_the_test_sections_go_with_their_comments_and_nothing_else_changes():
    text, removed = without_sections(FLEET_TEXT, ASSERTION_SECTIONS)
    assert removed == ["tests", "sshTests"]
    expected = dict((k, v) for k, v in FLEET.items() if k not in ASSERTION_SECTIONS)
    assert parse(text) == expected
    # The comment above "tests" belongs to it; every other comment stays.
    assert "Tailscale runs these on every change" not in text
    for comment in ("// Only admins may put a fleet tag", "// The Ansible controller (or CI runner)",
                    "// To use the droplet as an SSH jump host", "// Tailscale SSH: admins only"):
        assert comment in text
    assert "\n\n\n" not in text
    assert text.rstrip().endswith("],\n}")


@pytest.mark.parametrize("text,expected", [
    ('{"tests": [], "acls": []}', '{"acls": []}'),
    ('{"acls": [], "tests": []}', '{"acls": [], }'),
    ('{\n  "acls": [],\n  // about tests\n  "tests": [1], // trailing\n}\n', '{\n  "acls": [],\n}\n'),
    ('{\n  // about tests\n  "tests": [\n  ],\n  "acls": [],\n}', '{\n  "acls": [],\n}'),
    ('{\n  "acls": [], /* keep */\n  "tests": []\n}', '{\n  "acls": [], /* keep */\n}'),
])
def test_remove_members_cuts_only_the_member(text, expected):
    new_text, removed = remove_members(text, ["tests"])
    assert removed == ["tests"]
    assert new_text == expected
    assert parse(new_text) == {"acls": []}


def test_removing_an_absent_section_is_a_no_op():
    text = '{"acls": [] // x\n}'
    assert without_sections(text, ASSERTION_SECTIONS) == (text, [])


def test_a_section_in_a_string_or_nested_is_not_removed():
    text = '{"acls": [{"tests": 1}], "note": "\\"tests\\": []"}'
    assert without_sections(text, ["tests"]) == (text, [])


def test_a_policy_that_is_not_an_object_is_refused():
    with pytest.raises(PolicyError):
        without_sections("[1, 2]", ["tests"])


# ---------------------------------------------------------------------------
# Ports

@pytest.mark.parametrize("spec,ranges", [
    ("*", [(0, 65535)]), ("22", [(22, 22)]), ("80,443", [(80, 80), (443, 443)]),
    ("8000-8100", [(8000, 8100)]), ("22, 3000-3001", [(22, 22), (3000, 3001)]),
])
def test_ports(spec, ranges):
    assert parse_ports(spec) == ranges


@pytest.mark.parametrize("spec", ["http", "10-5", "70000", "1-", ""])
def test_bad_ports(spec):
    with pytest.raises(Unsupported):
        parse_ports(spec)


@pytest.mark.parametrize("ranges,covered", [
    ([(0, 65535)], True), ([(1, 65535)], True), ([(0, 1000), (1001, 65535)], True),
    ([(1001, 65535), (1, 1000)], True), ([(1, 65534)], False), ([(1, 1000), (1002, 65535)], False),
    ([(2, 65535)], False),
])
def test_every_port(ranges, covered):
    assert covers_every_port(ranges) is covered


# ---------------------------------------------------------------------------
# Allow-all

def acl(src, dst, **extra):
    return dict({"action": "accept", "src": src, "dst": dst}, **extra)


ALLOW_ALL = [
    ("the classic", {"acls": [acl(["*"], ["*:*"])]}),
    ("every member", {"acls": [acl(["autogroup:member"], ["*:*"])]}),
    ("every tagged device", {"acls": [acl(["autogroup:tagged"], ["*:*"])]}),
    ("a broad source among others", {"acls": [acl(["group:admins", "*"], ["tag:x:22", "*:*"])]}),
    ("the tailnet range as source", {"acls": [acl(["100.64.0.0/10"], ["*:*"])]}),
    ("the IPv6 tailnet range as source", {"acls": [acl(["fd7a:115c:a1e0::/48"], ["*:*"])]}),
    ("the whole internet as destination", {"acls": [acl(["*"], ["0.0.0.0/0:*"])]}),
    ("a hosts alias for the range", {"hosts": {"everyone": "100.64.0.0/10"},
                                     "acls": [acl(["everyone"], ["everyone:*"])]}),
    ("every port spelled out", {"acls": [acl(["*"], ["*:1-65535"])]}),
    ("every port in two ranges", {"acls": [acl(["*"], ["*:0-1000,1001-65535"])]}),
    ("tcp only is still everything", {"acls": [acl(["*"], ["*:*"], proto="tcp")]}),
    ("legacy users/ports fields", {"acls": [{"action": "accept", "users": ["*"], "ports": ["*:*"]}]}),
    ("a grant", {"grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"]}]}),
    ("a grant of every tcp port", {"grants": [{"src": ["autogroup:member"], "dst": ["*"], "ip": ["tcp:*"]}]}),
    ("a grant to danger-all", {"grants": [{"src": ["autogroup:danger-all"], "dst": ["*"], "ip": ["0-65535"]}]}),
    ("no rules at all", {"tagOwners": {"tag:x": ["a@example.com"]}}),
    ("acls null", {"acls": None}),
]

NOT_ALLOW_ALL = [
    ("deny all", {"acls": []}),
    ("a group to everything", {"acls": [acl(["group:admins"], ["*:*"])]}),
    ("everyone to one tag", {"acls": [acl(["*"], ["tag:web:*"])]}),
    ("everyone to one port", {"acls": [acl(["*"], ["*:22"])]}),
    ("all ports but one", {"acls": [acl(["*"], ["*:1-65534"])]}),
    ("one tag to everything", {"acls": [acl(["tag:ci"], ["*:*"])]}),
    ("members to their own devices", {"acls": [acl(["autogroup:member"], ["autogroup:self:*"])]}),
    ("the internet through exit nodes", {"acls": [acl(["autogroup:member"], ["autogroup:internet:*"])]}),
    ("a subnet, not the tailnet", {"acls": [acl(["*"], ["192.168.1.0/24:*"])]}),
    ("a grant of one port", {"grants": [{"src": ["*"], "dst": ["*"], "ip": ["tcp:443"]}]}),
    ("an app-only grant", {"grants": [{"src": ["*"], "dst": ["*"], "app": {"example.com/cap": [{}]}}]}),
    ("grants only, narrow", {"grants": [{"src": ["group:a"], "dst": ["tag:b"], "ip": ["*"]}]}),
    ("the fleet policy", FLEET),
]


@pytest.mark.parametrize("name,policy", ALLOW_ALL, ids=[n for n, p in ALLOW_ALL])
def test_allow_all_is_found(name, policy):
    findings = allow_all_findings(policy)
    assert findings, name
    assert all(isinstance(f, str) and f for f in findings)


@pytest.mark.parametrize("name,policy", NOT_ALLOW_ALL, ids=[n for n, p in NOT_ALLOW_ALL])
def test_least_privilege_is_not_allow_all(name, policy):
    assert allow_all_findings(policy) == [], name


def test_allow_all_findings_name_the_rule():
    policy = {"acls": [acl(["group:a"], ["tag:b:22"]), acl(["*"], ["*:*"])]}
    assert allow_all_findings(policy) == ["acls[1] lets * reach *:* (every device, every port)"]


# ---------------------------------------------------------------------------
# The evaluator

def test_the_fleet_policy_passes_its_own_tests():
    checks, failures = run_policy_tests(FLEET)
    assert failures == []
    expected = sum(len(t.get("accept", [])) + len(t.get("deny", [])) for t in FLEET["tests"])
    expected += sum(len(t["dst"]) * sum(len(t.get(k, [])) for k in ("accept", "check", "deny"))
                    for t in FLEET["sshTests"])
    assert checks == expected > 80


def _rule(policy, src, dst_fragment):
    for rule in policy["acls"]:
        if rule["src"] == src and any(dst_fragment in d for d in rule["dst"]):
            return rule
    raise AssertionError("no rule %s -> %s" % (src, dst_fragment))


def _mutate_failover_reaches_llm(policy):
    _rule(policy, ["tag:agent-pool", "tag:api-gateway"], "tag:llm:8080")["src"].append("tag:failover")


def _mutate_drop_controller_ssh(policy):
    policy["acls"].remove(_rule(policy, ["tag:controller"], "tag:database:22"))


def _mutate_monitoring_everything_on_database(policy):
    _rule(policy, ["tag:monitoring"], "tag:database:9100,9187")["dst"].append("tag:database:*")


def _mutate_llm_port(policy):
    _rule(policy, ["tag:agent-pool", "tag:api-gateway"], "tag:llm:8080")["dst"] = ["tag:llm:8081"]


def _mutate_second_llm_server(policy):
    _rule(policy, ["tag:agent-pool", "tag:api-gateway"], "tag:llm:8080")["dst"].append("tag:api-gateway:8080")


def _mutate_ssh_root(policy):
    policy["ssh"][0]["users"].append("root")


def _mutate_guest_is_admin(policy):
    policy["groups"]["group:admins"].append("guest@example.com")


def _mutate_no_postgres_exporter(policy):
    rule = _rule(policy, ["tag:monitoring"], "tag:database:9100,9187")
    rule["dst"] = ["tag:database:9100" if d == "tag:database:9100,9187" else d for d in rule["dst"]]


def _mutate_failover_ssh_jump(policy):
    policy["acls"].append(acl(["tag:failover"], ["tag:database:22"]))


def _mutate_udp_only_database(policy):
    _rule(policy, ["tag:agent-pool", "tag:api-gateway"], "tag:database:5432")["proto"] = "udp"


def _mutate_database_calls_out(policy):
    policy["acls"].append(acl(["tag:database"], ["tag:failover:22"]))


MUTATIONS = [
    (_mutate_failover_reaches_llm, "tag:failover -> tag:llm:8080: want deny, got accept (by acls[4])"),
    (_mutate_drop_controller_ssh, "tag:controller -> tag:database:22: want accept, got deny"),
    (_mutate_monitoring_everything_on_database, "tag:monitoring -> tag:database:5432: want deny"),
    (_mutate_llm_port, "tag:agent-pool -> tag:llm:8080: want accept, got deny"),
    (_mutate_second_llm_server, "tag:api-gateway -> tag:api-gateway:8080: want deny"),
    (_mutate_ssh_root, "admin@example.com -> tag:database as root: want deny, got accept (by ssh[0])"),
    (_mutate_guest_is_admin, "guest@example.com -> tag:database:5432: want deny"),
    (_mutate_no_postgres_exporter, "tag:monitoring -> tag:database:9187: want accept, got deny"),
    (_mutate_failover_ssh_jump, "tag:failover -> tag:database:22: want deny"),
    (_mutate_udp_only_database, "tag:api-gateway -> tag:database:5432: want accept, got deny"),
    (_mutate_database_calls_out, "tag:database -> tag:failover:22: want deny"),
]


@pytest.mark.parametrize("mutate,failure", MUTATIONS, ids=[m.__name__[8:] for m, f in MUTATIONS])
def test_a_changed_rule_fails_a_test(mutate, failure):
    policy = copy.deepcopy(FLEET)
    mutate(policy)
    dummy, failures = run_policy_tests(policy)
    assert any(failure in f for f in failures), failures


def test_no_fleet_tag_but_the_llm_serves_the_llm_port():
    evaluator = PolicyEvaluator(FLEET)
    sources = FLEET_SERVICE_TAGS + ["tag:controller", "admin@example.com", "guest@example.com"]
    for source in sources:
        for target in FLEET_SERVICE_TAGS:
            allowed, dummy = evaluator.allowed(source, target + ":8080")
            if target != "tag:llm":
                assert not allowed or source == "admin@example.com", (source, target)
    callers = sorted(s for s in sources if evaluator.allowed(s, "tag:llm:8080")[0])
    assert callers == ["admin@example.com", "tag:agent-pool", "tag:api-gateway"]


def test_only_admins_and_the_controller_reach_ssh():
    evaluator = PolicyEvaluator(FLEET)
    for target in FLEET_SERVICE_TAGS:
        reach = sorted(s for s in FLEET_SERVICE_TAGS + ["tag:controller", "admin@example.com", "guest@example.com"]
                       if evaluator.allowed(s, target + ":22")[0])
        assert reach == ["admin@example.com", "tag:controller"], target


def test_failover_reaches_only_the_public_origins():
    evaluator = PolicyEvaluator(FLEET)
    reached = []
    for target in FLEET_SERVICE_TAGS + ["tag:controller"]:
        for port in (22, 3000, 3001, 5432, 8000, 8001, 8080, 9090, 9100, 9187):
            if evaluator.allowed("tag:failover", "%s:%d" % (target, port))[0]:
                reached.append("%s:%d" % (target, port))
    assert reached == ["tag:agent-pool:8001", "tag:api-gateway:3000", "tag:api-gateway:3001",
                       "tag:api-gateway:8000"]


SEMANTICS = {
    "groups": {"group:ops": ["ops@example.com"]},
    "hosts": {"nas": "100.100.1.1", "office": "192.168.10.0/24"},
    "acls": [
        acl(["group:ops"], ["tag:web:80,443", "nas:22"]),
        acl(["autogroup:member"], ["autogroup:self:*"]),
        acl(["tag:ci"], ["autogroup:tagged:9000-9010"]),
        acl(["office"], ["tag:web:8080"]),
        acl(["tag:dns"], ["tag:dns:53"], proto="udp"),
        acl(["ops@example.com"], ["100.100.1.0/24:873"]),
    ],
    "grants": [{"src": ["tag:app"], "dst": ["tag:db"], "ip": ["tcp:5432", "icmp:*"]}],
    "ssh": [
        {"action": "check", "src": ["group:ops"], "dst": ["tag:web"], "users": ["root"]},
        {"action": "accept", "src": ["group:ops"], "dst": ["tag:web"], "users": ["autogroup:nonroot", "root"]},
    ],
}


@pytest.mark.parametrize("src,dst,proto,allowed", [
    ("ops@example.com", "tag:web:443", "tcp", True),
    ("ops@example.com", "tag:web:22", "tcp", False),
    ("ops@example.com", "nas:22", "tcp", True),
    ("ops@example.com", "100.100.1.1:22", "tcp", True),
    ("dev@example.com", "tag:web:443", "tcp", False),
    ("dev@example.com", "dev@example.com:5000", "tcp", True),
    ("dev@example.com", "ops@example.com:5000", "tcp", False),
    ("tag:web", "tag:web:5000", "tcp", False),
    ("tag:ci", "tag:web:9005", "tcp", True),
    ("tag:ci", "tag:web:9011", "tcp", False),
    ("tag:ci", "ops@example.com:9005", "tcp", False),
    ("192.168.10.7", "tag:web:8080", "tcp", True),
    ("192.168.11.7", "tag:web:8080", "tcp", False),
    ("tag:dns", "tag:dns:53", "udp", True),
    ("tag:dns", "tag:dns:53", "tcp", False),
    ("ops@example.com", "100.100.1.9:873", "tcp", True),
    ("ops@example.com", "100.100.1.9:873", "udp", True),
    ("ops@example.com", "100.100.1.9:873", "sctp", False),
    ("tag:app", "tag:db:5432", "tcp", True),
    ("tag:app", "tag:db:5432", "udp", False),
    ("tag:app", "tag:db:0", "icmp", True),
    ("tag:db", "tag:app:5432", "tcp", False),
])
def test_evaluator_semantics(src, dst, proto, allowed):
    assert PolicyEvaluator(SEMANTICS).allowed(src, dst, proto)[0] is allowed


@pytest.mark.parametrize("src,dst,user,action", [
    ("ops@example.com", "tag:web", "root", "check"),          # the first matching rule wins
    ("ops@example.com", "tag:web", "deploy", "accept"),
    ("dev@example.com", "tag:web", "deploy", None),
    ("ops@example.com", "tag:db", "deploy", None),
])
def test_ssh_semantics(src, dst, user, action):
    assert PolicyEvaluator(SEMANTICS).ssh_action(src, dst, user)[0] == action


def test_ssh_tests_check_accept_and_deny():
    policy = dict(SEMANTICS, sshTests=[
        {"src": "ops@example.com", "dst": ["tag:web"], "check": ["root"], "accept": ["deploy"]},
        {"src": "dev@example.com", "dst": ["tag:web"], "accept": ["deploy"]},
    ])
    checks, failures = run_policy_tests(policy)
    assert checks == 3
    assert failures == ["sshTests[1]: dev@example.com -> tag:web as deploy: want accept, got deny"]


def test_no_rules_means_everything_is_allowed():
    assert PolicyEvaluator({}).allowed("tag:a", "tag:b:22") == (True, "the default allow-all (no acls, no grants)")
    assert PolicyEvaluator({"acls": []}).allowed("tag:a", "tag:b:22") == (False, None)


@pytest.mark.parametrize("policy,test", [
    ({"acls": [acl(["ipset:office"], ["tag:a:22"])]}, {"src": "tag:b", "accept": ["tag:a:22"]}),
    ({"acls": [acl(["autogroup:admin"], ["tag:a:22"])]}, {"src": "tag:b", "accept": ["tag:a:22"]}),
    ({"acls": [acl(["group:nobody"], ["tag:a:22"])]}, {"src": "a@example.com", "accept": ["tag:a:22"]}),
    ({"acls": [acl(["tag:b"], ["tag:a:22"], srcPosture=["posture:ok"])]}, {"src": "tag:b", "accept": ["tag:a:22"]}),
    ({"acls": []}, {"src": "group:ops", "accept": ["tag:a:22"]}),
    ({"acls": []}, {"src": "tag:b", "accept": ["tag:a:*"]}),
    ({"acls": []}, {"src": "tag:b", "accept": ["tag:a"]}),
    ({"acls": []}, {"src": "some-host", "accept": ["tag:a:22"]}),
])
def test_what_the_evaluator_cannot_model_is_an_error_not_a_pass(policy, test):
    with pytest.raises(Unsupported):
        run_policy_tests(dict(policy, tests=[test]))


def test_a_test_without_a_source_is_an_error():
    with pytest.raises(PolicyError):
        run_policy_tests({"acls": [], "tests": [{"accept": ["tag:a:22"]}]})
