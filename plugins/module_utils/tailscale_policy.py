# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tailnet policy files: HuJSON parsing, normalising and analysis.

Used by the ``blackroad.infra.tailscale_policy`` module and by the unit tests
that prove the fleet's default policy. Pure standard library (Python 3.8+).

API::

    policy = parse(text)                 # HuJSON or JSON -> Python value (PolicyError on bad input)
    normalise(policy)                    # canonical pretty JSON text, for comparison and diffs
    text = remove_members(text, keys)    # drop top-level sections, keeping every comment elsewhere
    allow_all_findings(policy)           # why a policy allows everything ([] when it does not)
    run_policy_tests(policy)             # evaluate the policy's own ``tests``/``sshTests``

The evaluator covers the part of the policy language a tag-based fleet uses
(tags, users, groups, hosts and IP ranges, ports and protocols, ACLs, grants'
``ip`` field and SSH rules). Anything else raises ``Unsupported`` rather than
being guessed: a test that cannot be evaluated must not count as passed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re

# Tailscale hands out addresses from these ranges; an IP alias that covers one
# of them covers every device of the tailnet.
TAILNET_RANGES = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd7a:115c:a1e0::/48"))

# Sources that stand for a whole class of devices: every device ("*", and the
# grants-only autogroup:danger-all, which adds devices outside the tailnet),
# every user-owned device, or every tagged device. In a fleet where servers
# are tagged and people's devices are members, each of these is at least half
# the tailnet.
BROAD_SOURCES = ("*", "autogroup:danger-all", "autogroup:member", "autogroup:tagged")
# Destinations: "*" is every device. autogroup:member/tagged are not counted
# here: a rule letting one group reach every tagged server is a real (if wide)
# least-privilege choice; the source side is what makes a rule "everyone".
BROAD_DESTINATIONS = ("*",)

# The sections Tailscale evaluates but headscale 0.28 rejects as unknown
# fields, and which never change who may reach what: they only assert it.
ASSERTION_SECTIONS = ("tests", "sshTests")

PROTOCOLS = {"icmp": 1, "igmp": 2, "ipv4": 4, "ip-in-ip": 4, "tcp": 6, "egp": 8, "igp": 9, "udp": 17,
             "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58, "sctp": 132}
# An ACL without "proto" allows these (Tailscale's and headscale's default).
DEFAULT_PROTOCOLS = (6, 17, 1, 58)
ALL_PORTS = ((0, 65535),)
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


class PolicyError(ValueError):
    """The policy text cannot be read; the message says where (line, column)."""


class Unsupported(ValueError):
    """A test or rule uses something the local evaluator does not model."""


# ---------------------------------------------------------------------------
# HuJSON

def _blank(out, start, end):
    # Comments become spaces, newlines stay: every offset, line and column of
    # the standard text is the one in the user's file, so errors point there.
    for index in range(start, end):
        if out[index] not in "\r\n":
            out[index] = " "


def standardize(text):
    """HuJSON -> standard JSON of the same length.

    ``//`` and ``/* */`` comments outside strings and a comma that directly
    precedes ``}`` or ``]`` (after a value) are replaced by spaces. Everything
    else is left for the JSON parser to judge.
    """
    out = list(text)
    if text.startswith("\ufeff"):
        out[0] = " "
    length = len(text)
    index = 0
    comma = None        # offset of a comma that may turn out to be trailing
    before_comma = None  # the significant character before that comma
    last = None         # the last significant character seen
    while index < length:
        char = text[index]
        if char == '"':
            index += 1
            while index < length:
                if text[index] == "\\":
                    index += 2
                    continue
                if text[index] == '"':
                    break
                index += 1
            # An unterminated string runs to the end; json reports it.
            index += 1
            comma = None
            last = '"'
            continue
        if char == "/" and text.startswith("//", index):
            end = text.find("\n", index)
            end = length if end < 0 else end
            _blank(out, index, end)
            index = end
            continue
        if char == "/" and text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                line, column = _position(text, index)
                raise PolicyError("line %d column %d: unterminated /* comment" % (line, column))
            _blank(out, index, end + 2)
            index = end + 2
            continue
        if char in " \t\r\n\ufeff":
            index += 1
            continue
        if char == ",":
            comma, before_comma = index, last
        elif char in "}]":
            # Only a comma after a value is a trailing comma; "[,]" stays
            # invalid, as it is in HuJSON.
            if comma is not None and before_comma not in (None, "[", "{", ",", ":"):
                out[comma] = " "
            comma = None
        else:
            comma = None
        last = char
        index += 1
    return "".join(out)


def _position(text, offset):
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            # Go's JSON (Tailscale, headscale) rejects a repeated name; Python
            # would silently keep the last one and compare something else.
            raise PolicyError("duplicate key %r" % key)
        result[key] = value
    return result


def _no_constants(name):
    raise PolicyError("%s is not valid JSON" % name)


def parse(text):
    """Parse HuJSON (or plain JSON) text; raises PolicyError with a position."""
    if not isinstance(text, str):
        raise PolicyError("the policy must be text, got %s" % type(text).__name__)
    if not text.strip():
        raise PolicyError("the policy is empty")
    standard = standardize(text)
    try:
        return json.loads(standard, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as error:
        raise PolicyError("line %d column %d: %s" % (error.lineno, error.colno, error.msg))


def normalise(policy):
    """Canonical text of a parsed policy: what two policies are compared by.

    Keys are sorted, comments and formatting are gone; list order is kept
    (an SSH rule list is evaluated in order, and a reordering is a change a
    reviewer should see).
    """
    return json.dumps(policy, indent=2, sort_keys=True, ensure_ascii=False, separators=(",", ": ")) + "\n"


def member_spans(text):
    """``[(key, key_start, value_end, member_end)]`` of the top-level object.

    Offsets are into ``text`` itself (standardize keeps them); ``member_end``
    is just after the member's comma when it has one.
    """
    parse(text)  # the errors, with positions, come from the full parser
    standard = standardize(text)
    decoder = json.JSONDecoder()
    index = _JSON_SPACE.match(standard, 0).end()
    if standard[index:index + 1] != "{":
        raise PolicyError("the policy must be a JSON object")
    index += 1
    spans = []
    while True:
        index = _JSON_SPACE.match(standard, index).end()
        if standard[index:index + 1] == "}":
            return spans
        key_start = index
        key, index = decoder.raw_decode(standard, index)
        index = _JSON_SPACE.match(standard, index).end() + 1  # the colon
        index = _JSON_SPACE.match(standard, index).end()
        dummy, index = decoder.raw_decode(standard, index)
        value_end = index
        index = _JSON_SPACE.match(standard, index).end()
        if standard[index:index + 1] == ",":
            index += 1
        spans.append((key, key_start, value_end, index))


def remove_members(text, keys):
    """``(new_text, removed)``: ``text`` without the top-level members ``keys``.

    The member's own comment lines (``//`` lines directly above it, a comment
    after it on its last line) go with it; every other byte of the file stays,
    comments included. A trailing comma left behind is valid HuJSON.
    """
    standard = standardize(text)
    removed = []
    cuts = []
    for key, start, dummy, end in member_spans(text):
        if key not in keys:
            continue
        removed.append(key)
        line_start = text.rfind("\n", 0, start) + 1
        if not text[line_start:start].strip():
            start = line_start
            while start > 0:
                previous = text.rfind("\n", 0, start - 1) + 1
                if not text[previous:start].strip().startswith("//"):
                    break
                start = previous
            # One blank line above goes too, so the sections left keep
            # their single blank line between them.
            previous = text.rfind("\n", 0, max(start - 1, 0)) + 1
            if start > 0 and not text[previous:start].strip():
                start = previous
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        if not standard[end:line_end].strip():
            end = min(line_end + 1, len(text))
        else:
            while end < len(text) and text[end] in " \t":
                end += 1
        cuts.append((start, end))
    for start, end in reversed(cuts):
        text = text[:start] + text[end:]
    return text, removed


def without_sections(text, keys):
    """``(text, removed)`` with sections removed, checked against the parsed result.

    The cut is verified: if the text left over does not parse to the policy
    minus those keys, the canonical JSON of that is returned instead (comments
    lost, meaning kept).
    """
    policy = parse(text)
    if not isinstance(policy, dict):
        raise PolicyError("the policy must be a JSON object")
    present = [key for key in keys if key in policy]
    if not present:
        return text, []
    expected = dict((key, value) for key, value in policy.items() if key not in present)
    new_text, removed = remove_members(text, present)
    try:
        if parse(new_text) == expected:
            return new_text, removed
    except PolicyError:
        pass
    return normalise(expected), present


# ---------------------------------------------------------------------------
# Ports, protocols and aliases

def parse_ports(spec):
    """``"22"``, ``"80,443"``, ``"8000-8100"``, ``"*"`` -> list of (first, last)."""
    spec = str(spec).strip()
    if spec == "*":
        return list(ALL_PORTS)
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        if part == "*":
            ranges.append(ALL_PORTS[0])
            continue
        match = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not match:
            raise Unsupported("port %r is not a port, a range or *" % part)
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first > last or last > 65535:
            raise Unsupported("port range %r is out of order or above 65535" % part)
        ranges.append((first, last))
    return ranges


def covers_every_port(ranges):
    """True when ``ranges`` leave no port from 1 to 65535 out (port 0 carries no service)."""
    reach = 0
    for first, last in sorted(ranges):
        if first > reach + 1:
            return False
        reach = max(reach, last)
    return reach >= 65535


def split_destination(entry):
    """``"tag:db:5432"`` -> ``("tag:db", "5432")``; the alias may itself hold colons."""
    entry = str(entry)
    if ":" not in entry:
        raise Unsupported("destination %r has no port (alias:port)" % entry)
    alias, ports = entry.rsplit(":", 1)
    return alias, ports


def protocol_number(proto):
    """``"tcp"``/``"6"``/``6`` -> 6; None for an unset protocol."""
    if proto in (None, ""):
        return None
    text = str(proto).strip().lower()
    if text.isdigit():
        return int(text)
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    raise Unsupported("protocol %r" % proto)


def _network(alias, hosts):
    """The IP network an alias names (a hosts entry, an address or a prefix), or None."""
    target = hosts.get(alias, alias) if isinstance(hosts, dict) else alias
    try:
        return ipaddress.ip_network(str(target), strict=False)
    except ValueError:
        return None


def _covers_tailnet(alias, hosts):
    network = _network(alias, hosts)
    return network is not None and any(
        network.version == tailnet.version and network.supernet_of(tailnet) for tailnet in TAILNET_RANGES)


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


# ---------------------------------------------------------------------------
# Allow-all

def allow_all_findings(policy):
    """Reasons why ``policy`` lets everything reach everything; [] when it does not.

    A policy allows everything when:

    * it has neither ``acls`` nor ``grants`` (both Tailscale and headscale then
      fall back to allowing all traffic), or
    * an accept ACL has a broad source (``*``, ``autogroup:member``,
      ``autogroup:tagged``, ``autogroup:danger-all`` or an address range that
      covers the tailnet's range) and a destination that is ``*`` or such a
      range, on every port (``*``, or ranges covering 1-65535), whatever its
      ``proto``; or
    * a grant has such a source and destination and an ``ip`` entry that
      covers every port (``*``, ``tcp:*``, ``0-65535``...).
    """
    if not isinstance(policy, dict):
        return ["the policy is not a JSON object"]
    hosts = policy.get("hosts") if isinstance(policy.get("hosts"), dict) else {}
    findings = []
    if policy.get("acls") is None and policy.get("grants") is None:
        findings.append("it has no acls and no grants: Tailscale and headscale then allow all traffic")

    def broad_source(alias):
        return alias in BROAD_SOURCES or _covers_tailnet(alias, hosts)

    def broad_destination(alias):
        return alias in BROAD_DESTINATIONS or _covers_tailnet(alias, hosts)

    for number, rule in enumerate(_as_list(policy.get("acls"))):
        if not isinstance(rule, dict) or rule.get("action", "accept") != "accept":
            continue
        sources = [s for s in _as_list(rule.get("src", rule.get("users"))) if broad_source(s)]
        if not sources:
            continue
        for entry in _as_list(rule.get("dst", rule.get("ports"))):
            try:
                alias, ports = split_destination(entry)
                every_port = covers_every_port(parse_ports(ports))
            except Unsupported:
                continue
            if broad_destination(alias) and every_port:
                findings.append("acls[%d] lets %s reach %s (every device, every port)" % (number, sources[0], entry))
                break
    for number, rule in enumerate(_as_list(policy.get("grants"))):
        if not isinstance(rule, dict):
            continue
        sources = [s for s in _as_list(rule.get("src")) if broad_source(s)]
        destinations = [d for d in _as_list(rule.get("dst")) if broad_destination(d)]
        if not sources or not destinations:
            continue
        for entry in _as_list(rule.get("ip")):
            ports = str(entry).split(":", 1)[-1]
            try:
                every_port = covers_every_port(parse_ports(ports))
            except Unsupported:
                continue
            if every_port:
                findings.append("grants[%d] lets %s reach %s with ip %s (every device, every port)"
                                % (number, sources[0], destinations[0], entry))
                break
    return findings


# ---------------------------------------------------------------------------
# The policy's own tests, evaluated locally

class _Identity:
    """Who a test speaks for: a tagged device, a user's device, or an address."""

    def __init__(self, kind, value):
        self.kind = kind      # "tag", "user" or "ip"
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and (self.kind, self.value) == (other.kind, other.value)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.kind, str(self.value)))


class PolicyEvaluator:
    """Answers "may A reach B on port P" for the policy subset described above."""

    def __init__(self, policy):
        if not isinstance(policy, dict):
            raise PolicyError("the policy must be a JSON object")
        self.policy = policy
        self.groups = policy.get("groups") or {}
        self.hosts = policy.get("hosts") or {}
        if not isinstance(self.groups, dict) or not isinstance(self.hosts, dict):
            raise PolicyError("groups and hosts must be JSON objects")

    # -- identities and aliases --------------------------------------------------------
    def identity(self, name):
        name = str(name)
        if name.startswith("tag:"):
            return _Identity("tag", name)
        if name.startswith(("group:", "autogroup:")):
            raise Unsupported("a test source or destination must be a user, a tag, a host or an IP, not %r" % name)
        if "@" in name:
            return _Identity("user", name)
        network = _network(name, self.hosts)
        if network is not None and network.num_addresses == 1:
            return _Identity("ip", network.network_address)
        raise Unsupported("%r is not a tag, a user, a single-address host or an IP" % name)

    def matches(self, alias, who, source=None):
        """Whether ``alias`` (from a rule) includes ``who``; ``source`` is for autogroup:self."""
        alias = str(alias)
        if alias == "*":
            return True
        if alias.startswith("tag:"):
            return who.kind == "tag" and who.value == alias
        if alias.startswith("group:"):
            if alias not in self.groups:
                raise Unsupported("group %r is not defined in groups" % alias)
            return who.kind == "user" and who.value in _as_list(self.groups[alias])
        if alias.startswith("autogroup:"):
            if alias == "autogroup:member":
                return who.kind == "user"
            if alias == "autogroup:tagged":
                return who.kind == "tag"
            if alias == "autogroup:self":
                return who.kind == "user" and source is not None and source == who
            if alias == "autogroup:danger-all":
                return True
            if alias == "autogroup:internet":
                return False  # the internet, through an exit node: never a tailnet device
            raise Unsupported("%s is not modelled by the local evaluator" % alias)
        if "@" in alias:
            return who.kind == "user" and who.value == alias
        network = _network(alias, self.hosts)
        if network is None:
            raise Unsupported("alias %r is not a tag, a group, a user, a host or an IP range" % alias)
        return who.kind == "ip" and who.value in network

    # -- network access ----------------------------------------------------------------
    def _acl_allows(self, rule, source, destination, port, proto):
        if rule.get("action", "accept") != "accept":
            raise Unsupported("ACL action %r" % rule.get("action"))
        if rule.get("srcPosture"):
            raise Unsupported("srcPosture conditions (device posture is not known locally)")
        allowed = protocol_number(rule.get("proto"))
        if allowed is None:
            if proto not in DEFAULT_PROTOCOLS:
                return False
        elif allowed != proto:
            return False
        if not any(self.matches(alias, source) for alias in _as_list(rule.get("src", rule.get("users")))):
            return False
        for entry in _as_list(rule.get("dst", rule.get("ports"))):
            alias, ports = split_destination(entry)
            if self.matches(alias, destination, source) and any(
                    first <= port <= last for first, last in parse_ports(ports)):
                return True
        return False

    def _grant_allows(self, rule, source, destination, port, proto):
        if rule.get("srcPosture") or rule.get("via"):
            raise Unsupported("grants with srcPosture or via")
        if not any(self.matches(alias, source) for alias in _as_list(rule.get("src"))):
            return False
        if not any(self.matches(alias, destination, source) for alias in _as_list(rule.get("dst"))):
            return False
        for entry in _as_list(rule.get("ip")):
            entry = str(entry)
            if entry == "*":
                return True
            if ":" in entry:
                name, ports = entry.split(":", 1)
                if protocol_number(name) != proto:
                    continue
            else:
                ports = entry
                if proto not in (6, 17):
                    continue
            if any(first <= port <= last for first, last in parse_ports(ports)):
                return True
        return False

    def allowed(self, source, destination, proto="tcp"):
        """``(allowed, rule)``: may ``source`` reach ``destination`` ("alias:port")?"""
        who = self.identity(source)
        alias, port_text = split_destination(destination)
        target = self.identity(alias)
        if not port_text.isdigit():
            raise Unsupported("a test destination needs one port, got %r" % destination)
        port = int(port_text)
        number = protocol_number(proto) or 6
        for index, rule in enumerate(_as_list(self.policy.get("acls"))):
            if self._acl_allows(rule, who, target, port, number):
                return True, "acls[%d]" % index
        for index, rule in enumerate(_as_list(self.policy.get("grants"))):
            if self._grant_allows(rule, who, target, port, number):
                return True, "grants[%d]" % index
        if self.policy.get("acls") is None and self.policy.get("grants") is None:
            return True, "the default allow-all (no acls, no grants)"
        return False, None

    # -- Tailscale SSH -----------------------------------------------------------------
    def ssh_action(self, source, destination, user):
        """``(action, rule)``: the first SSH rule that lets ``source`` log in to ``destination`` as ``user``."""
        who = self.identity(source)
        target = self.identity(destination)
        for index, rule in enumerate(_as_list(self.policy.get("ssh"))):
            if not any(self.matches(alias, who) for alias in _as_list(rule.get("src"))):
                continue
            if not any(self.matches(alias, target, who) for alias in _as_list(rule.get("dst"))):
                continue
            for allowed in _as_list(rule.get("users")):
                if allowed == user or (allowed == "autogroup:nonroot" and user != "root"):
                    return rule.get("action", "accept"), "ssh[%d]" % index
                if allowed.startswith("localpart:") or (allowed.startswith("autogroup:")
                                                        and allowed != "autogroup:nonroot"):
                    raise Unsupported("SSH user %r" % allowed)
        return None, None


def run_policy_tests(policy):
    """Evaluate the policy's ``tests`` and ``sshTests``.

    Returns ``(checks, failures)``: how many expectations were evaluated and
    a message for each one that does not hold. Raises ``Unsupported`` when an
    expectation uses something the evaluator does not model.
    """
    evaluator = PolicyEvaluator(policy)
    checks = 0
    failures = []
    for number, test in enumerate(_as_list(policy.get("tests"))):
        if not isinstance(test, dict) or "src" not in test:
            raise PolicyError("tests[%d] needs a src" % number)
        proto = test.get("proto") or "tcp"
        for want, destinations in (("accept", test.get("accept")), ("deny", test.get("deny"))):
            for destination in _as_list(destinations):
                checks += 1
                allowed, rule = evaluator.allowed(test["src"], destination, proto)
                if allowed != (want == "accept"):
                    got = "accept (by %s)" % rule if allowed else "deny (no rule allows it)"
                    failures.append("tests[%d]: %s -> %s: want %s, got %s"
                                    % (number, test["src"], destination, want, got))
    for number, test in enumerate(_as_list(policy.get("sshTests"))):
        if not isinstance(test, dict) or "src" not in test:
            raise PolicyError("sshTests[%d] needs a src" % number)
        for destination in _as_list(test.get("dst")):
            for want in ("accept", "check", "deny"):
                for user in _as_list(test.get(want)):
                    checks += 1
                    action, rule = evaluator.ssh_action(test["src"], destination, user)
                    got = action or "deny"
                    if got != want:
                        failures.append("sshTests[%d]: %s -> %s as %s: want %s, got %s%s"
                                        % (number, test["src"], destination, user, want, got,
                                           " (by %s)" % rule if rule else ""))
    return checks, failures
