#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tailscale_policy
short_description: Manage the tailnet policy file (ACLs, grants, SSH rules) of Tailscale or headscale
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Makes the tailnet's policy file the one given in O(policy), a HuJSON (JSON with comments and trailing
    commas) or JSON document, as kept in version control and reviewed like code.
  - "The stored policy and the desired one are compared by meaning: both are parsed, comments and layout
    are dropped and keys are sorted. A policy that differs only in comments or formatting is not written
    again, and a run that changes nothing makes no write."
  - Refuses a policy that would allow everything unless O(allow_all=true); see O(allow_all) for the
    exact rule.
  - With O(api=tailscale) the policy is read with its ETag, checked by Tailscale's validate endpoint
    (which also runs the policy's C(tests)), and written with C(If-Match), so an edit made in the admin
    console since the read is never overwritten.
  - With O(api=headscale) the policy is read and written through headscale's API (C(/api/v1/policy),
    headscale in C(policy.mode=database)). headscale has no ETag; the module reads the policy again just
    before writing and stops if it changed since the first read.
  - With O(headscale_policy_path) the module writes headscale's policy file instead (headscale in
    C(policy.mode=file), where the API cannot write). Run the task on the headscale server.
  - headscale (0.28) rejects the C(tests) and C(sshTests) sections as unknown fields. For headscale they
    are left out of what is stored, and, with O(validate=true), the module evaluates them itself; see
    O(validate).
extends_documentation_fragment:
  - blackroad.infra.tailscale
options:
  policy:
    description:
      - The whole policy file, as HuJSON or JSON text (typically
        C("{{ lookup('ansible.builtin.file', 'tailnet-policy.hujson') }}")), or as a dictionary.
      - The text is sent as it is, comments included; Tailscale keeps them and shows them in the admin
        console.
      - The default fleet policy of this collection is C(playbooks/files/tailnet-policy.hujson).
    type: raw
    required: true
  state:
    description:
      - V(present) is the only state; a tailnet always has a policy file.
    type: str
    choices: [present]
    default: present
  allow_all:
    description:
      - Allow a policy that lets everything reach everything. Off by default, and the module fails on
        such a policy.
      - "A policy allows everything when it has neither C(acls) nor C(grants) (Tailscale and headscale
        then allow all traffic), or when an accept rule has a broad source and reaches every device on
        every port. Broad sources are C(*), C(autogroup:member), C(autogroup:tagged),
        C(autogroup:danger-all) and any address range (or C(hosts) alias of one) that covers the tailnet's
        range C(100.64.0.0/10) or C(fd7a:115c:a1e0::/48). Every device is C(*) or such a range; every port
        is C(*) or ranges that cover 1-65535, whatever the rule's C(proto). For grants the same holds with
        an C(ip) entry that covers every port (V(*), V(tcp:*)...)."
      - With V(true) such a policy is applied with a warning that names the rule.
    type: bool
    default: false
  validate:
    description:
      - Check the policy before writing it.
      - With O(api=tailscale), the policy is sent to Tailscale's validate endpoint, which parses it and
        runs its C(tests) and C(sshTests); the module fails with the messages it returns. This call writes
        nothing and is also made in check mode.
      - For headscale, the module runs the policy's C(tests) and C(sshTests) itself, with an evaluator for
        the rules a tag-based fleet uses (users, groups, tags, hosts and addresses, ports, protocols,
        ACLs, grants' C(ip), SSH rules). A test that uses anything else fails with a message saying so
        rather than being skipped. headscale then checks the rest when the policy is written (or, with
        O(headscale_policy_path), C(headscale policy check) does).
      - With V(false) none of this happens, and for headscale the test sections are still left out.
    type: bool
    default: true
  expected_etag:
    description:
      - Write only if the stored policy still has this ETag, as returned in RV(etag) by an earlier run
        (for example a check-mode run whose diff was reviewed). Fails, writing nothing, when the policy has
        changed since.
      - For headscale the ETag is the SHA-256 of the stored policy text.
    type: str
  headscale_policy_path:
    description:
      - Path of headscale's policy file (C(policy.path) in its configuration) on the host the task runs on.
        When set, the file is managed instead of the API, and no API option is used.
      - The new file is written next to the old one, given mode C(0640) and the old file's owner and group,
        checked with C(headscale policy check) when O(headscale_binary) is found, and renamed over the old
        one in one step. Check mode writes nothing but a temporary file for that check, removed at once.
      - headscale reads the file at start and on C(SIGHUP); see O(headscale_reload_command).
    type: path
  headscale_binary:
    description:
      - The headscale program used to check a policy file before it replaces the old one, a path or a name
        looked up in E(PATH). When it cannot be found the file is written unchecked, with a warning.
      - Only used with O(headscale_policy_path).
    type: str
    default: headscale
  headscale_reload_command:
    description:
      - Command (program and arguments, no shell) run after the policy file changed, to make headscale load
        it, for example V([systemctl, reload, headscale]) or V([kill, -HUP, "<pid>"]).
      - Without it the module warns that headscale still runs with the old policy.
      - Only used with O(headscale_policy_path); not run in check mode.
    type: list
    elements: str
attributes:
  check_mode:
    description:
      - Reads the policy and reports whether it would change. Nothing is written; with O(api=tailscale)
        and O(validate=true) the validate endpoint is still called, as it changes nothing.
    support: full
  diff_mode:
    description: The stored and the desired policy as normalised JSON (sorted keys, no comments).
    support: full
  platform:
    description: Runs on any host that can reach the control server, or on the headscale server for
      O(headscale_policy_path).
    support: full
    platforms: posix
notes:
  - "Tailscale API key or OAuth client scopes: C(policy_file:read) to read and validate, C(policy_file) to
    write; Tailscale also asks for C(devices:core:read) and C(devices:posture_attributes:read) for policy
    operations."
  - "API calls per run (O(api=tailscale)): 1 when nothing changes (C(GET /tailnet/{tailnet}/acl)); 3 for a
    change (the read, C(POST .../acl/validate), C(POST .../acl) with C(If-Match)); 2 in check mode."
  - "API calls per run (O(api=headscale)): 1 when nothing changes (C(GET /api/v1/policy)); 3 for a change
    (the read, a second read just before the write, C(PUT /api/v1/policy)); 1 in check mode."
  - Comments are not compared. To publish a change that only touches comments, change something else too,
    or edit it in the console.
seealso:
  - name: Tailscale policy file syntax
    description: The sections and rules a policy file can hold.
    link: https://tailscale.com/kb/1337/policy-syntax
  - name: The default fleet policy, explained
    description: docs/tailnet-policy.md in this collection.
    link: https://github.com/blackroad/infra/blob/main/docs/tailnet-policy.md
"""

EXAMPLES = r"""
- name: Tailnet policy
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.tailscale:
      oauth_client_id: "{{ vault_tailscale_oauth_client_id }}"
      oauth_client_secret: "{{ vault_tailscale_oauth_client_secret }}"
  tasks:
    - name: Apply the fleet's policy file
      blackroad.infra.tailscale_policy:
        policy: "{{ lookup('ansible.builtin.file', 'files/tailnet-policy.hujson') }}"

- name: The same policy on a headscale server
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Apply it through headscale's API
      blackroad.infra.tailscale_policy:
        api: headscale
        api_base_url: https://headscale.example.com
        api_key: "{{ vault_headscale_api_key }}"
        policy: "{{ lookup('ansible.builtin.file', 'files/tailnet-policy.hujson') }}"

- name: Review, then apply exactly what was reviewed
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.tailscale:
      oauth_client_id: "{{ vault_tailscale_oauth_client_id }}"
      oauth_client_secret: "{{ vault_tailscale_oauth_client_secret }}"
  tasks:
    - name: Show what would change
      blackroad.infra.tailscale_policy:
        policy: "{{ lookup('ansible.builtin.file', 'files/tailnet-policy.hujson') }}"
      check_mode: true
      diff: true
      register: preview

    - name: Apply it, unless someone changed the policy since the preview
      blackroad.infra.tailscale_policy:
        policy: "{{ lookup('ansible.builtin.file', 'files/tailnet-policy.hujson') }}"
        expected_etag: "{{ preview.etag }}"

- name: A headscale server with its policy in a file
  hosts: headscale
  tasks:
    - name: Write the policy file and reload headscale
      become: true
      blackroad.infra.tailscale_policy:
        policy: "{{ lookup('ansible.builtin.file', 'files/tailnet-policy.hujson') }}"
        headscale_policy_path: /etc/headscale/policy.hujson
        headscale_reload_command: [systemctl, reload, headscale]
"""

RETURN = r"""
etag:
  description:
    - Version of the stored policy after the run.
    - With O(api=tailscale), the ETag Tailscale returned (without quotes). For headscale, the SHA-256 of the
      stored policy text (empty text when there is none). Give it to O(expected_etag) to pin a later write.
  returned: always
  type: str
  sample: e0b2816b418b3f266309d94426ac7668ab3c1fa87798785bf82f1085cc2f6d9c
sections_left_out:
  description: Top-level sections of O(policy) that were not stored, because headscale rejects them.
  returned: always
  type: list
  elements: str
  sample: [tests, sshTests]
policy_tests:
  description: The local run of the policy's C(tests) and C(sshTests) (headscale with O(validate=true)).
  returned: always
  type: dict
  contains:
    ran:
      description: Whether the module evaluated the tests itself.
      type: bool
      sample: true
    checks:
      description: Number of expectations evaluated (one per destination and port, or per SSH user).
      type: int
      sample: 92
allow_all:
  description: Why the policy allows everything (empty for a least-privilege policy).
  returned: always
  type: list
  elements: str
  sample: []
reloaded:
  description: Whether O(headscale_reload_command) ran.
  returned: when O(headscale_policy_path) is set
  type: bool
  sample: true
api_calls:
  description: Number of HTTP requests made to the control server.
  returned: always
  type: int
  sample: 1
"""

import hashlib
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.blackroad.infra.plugins.module_utils.tailscale import (
    TailscaleError, client_from_module, tailscale_argument_spec)
from ansible_collections.blackroad.infra.plugins.module_utils.tailscale_policy import (
    ASSERTION_SECTIONS, PolicyError, Unsupported, allow_all_findings, normalise, parse, run_policy_tests,
    without_sections)

HUJSON = "application/hujson"
NO_POLICY_MARKER = "policy not found"
FILE_MODE_MARKER = "update is disabled"


class PolicyRun:
    """One run of the module: the desired policy, the result so far, and how to fail."""

    def __init__(self, module):
        self.module = module
        self.client = None
        self.result = dict(changed=False, etag="", sections_left_out=[], allow_all=[],
                           policy_tests=dict(ran=False, checks=0))

    def calls(self):
        return self.client.calls if self.client is not None else 0

    def fail(self, msg, **extra):
        self.result.update(extra)
        self.result["api_calls"] = self.calls()
        self.module.fail_json(msg=msg, **self.result)

    def exit(self, **extra):
        self.result.update(extra)
        self.result["api_calls"] = self.calls()
        self.module.exit_json(**self.result)

    # -- the desired policy --------------------------------------------------------------
    def desired_text(self):
        value = self.module.params["policy"]
        if isinstance(value, (dict, list)):
            return json.dumps(value, indent=2, sort_keys=False) + "\n"
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        return to_native(value)

    def load(self, headscale):
        """``(text to store, parsed policy to store)``, after the allow-all and test checks."""
        text = self.desired_text()
        try:
            policy = parse(text)
        except PolicyError as error:
            self.fail("the policy is not valid HuJSON: %s" % error)
        if not isinstance(policy, dict):
            self.fail("the policy must be a JSON object, not %s" % type(policy).__name__)

        findings = allow_all_findings(policy)
        self.result["allow_all"] = findings
        if findings and not self.module.params["allow_all"]:
            self.fail("refusing a policy that allows everything: %s. Narrow the rule, or set allow_all: true "
                      "if this is really wanted." % "; ".join(findings))
        if findings:
            self.module.warn("this policy allows everything (allow_all=true): %s" % "; ".join(findings))

        if not headscale:
            return text, policy
        if self.module.params["validate"]:
            try:
                checks, failures = run_policy_tests(policy)
            except (Unsupported, PolicyError) as error:
                self.fail("cannot run the policy's tests locally: %s. headscale has no validate endpoint, so the "
                          "module evaluates the tests itself; simplify the test, or set validate: false" % error)
            self.result["policy_tests"] = dict(ran=True, checks=checks)
            if failures:
                self.fail("the policy's own tests fail (%d of %d):\n%s" % (len(failures), checks, "\n".join(failures)),
                          test_failures=failures)
        try:
            stored_text, removed = without_sections(text, ASSERTION_SECTIONS)
        except PolicyError as error:
            self.fail("cannot remove the test sections: %s" % error)
        self.result["sections_left_out"] = removed
        if removed and not self.module.params["validate"]:
            self.module.warn("%s left out of the headscale policy (headscale rejects them) and not run "
                             "(validate=false)" % ", ".join(removed))
        stored = dict((key, value) for key, value in policy.items() if key not in removed)
        return stored_text, stored

    # -- comparison and reporting -----------------------------------------------------------
    def compare(self, current_text, desired, where):
        """``(changed, diff)`` between the stored text and the desired parsed policy."""
        if current_text and current_text.strip():
            try:
                before = normalise(parse(current_text))
            except PolicyError as error:
                self.module.warn("the stored policy does not parse (%s); it will be replaced" % error)
                before = current_text
        else:
            before = ""
        after = normalise(desired)
        diff = dict(before=before, after=after, before_header="%s (stored)" % where,
                    after_header="%s (desired)" % where)
        return before != after, diff

    def check_expected(self, etag):
        expected = self.module.params["expected_etag"]
        if expected is not None and bare_etag(expected) != bare_etag(etag):
            self.fail("the policy changed since the run that returned ETag %s (it is now %s); review the new diff "
                      "and run again" % (bare_etag(expected), bare_etag(etag) or "empty"), etag=bare_etag(etag))

    def report(self, changed, diff):
        self.result["changed"] = changed
        if self.module._diff:  # pylint: disable=protected-access
            self.result["diff"] = diff


def bare_etag(value):
    """``W/"abc"`` and ``"abc"`` -> ``abc``: the part that identifies the version."""
    value = (value or "").strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def quoted_etag(value):
    value = (value or "").strip()
    if value.startswith(("W/", '"')):
        return value
    return '"%s"' % value


def content_etag(text):
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def validate_messages(data):
    """The lines of a validate or write error: Tailscale's message, then each user's errors."""
    if not isinstance(data, dict):
        return []
    lines = []
    for item in data.get("data") or []:
        if not isinstance(item, dict):
            continue
        who = item.get("user") or item.get("src") or ""
        for error in item.get("errors") or []:
            lines.append("%s: %s" % (who, error) if who else str(error))
    return lines


def error_details(error):
    try:
        data = json.loads(error.body or "")
    except (TypeError, ValueError):
        return []
    return validate_messages(data)


# -- Tailscale ---------------------------------------------------------------------------------

def run_tailscale(run, text, desired):
    module = run.module
    client = run.client = client_from_module(module)
    path = client.tailnet_path("/acl")
    where = "tailnet policy (%s, tailnet %s)" % (client.base_url, client.tailnet)
    try:
        response = client.request("GET", path, headers={"Accept": HUJSON})
    except TailscaleError as error:
        run.fail("reading the policy: %s" % error)
    etag = response.headers.get("etag") or ""
    run.result["etag"] = bare_etag(etag)
    run.check_expected(etag)
    changed, diff = run.compare(response.text, desired, where)
    run.report(changed, diff)
    if not changed:
        run.exit()

    if module.params["validate"]:
        try:
            answer = client.request("POST", path + "/validate", body=text,
                                    headers={"Content-Type": HUJSON, "Accept": "application/json"})
        except TailscaleError as error:
            run.fail("validating the policy: %s" % error, validation_errors=error_details(error))
        data = answer.json() if answer.text.strip() else None
        if isinstance(data, dict) and data.get("message"):
            lines = validate_messages(data)
            run.fail("Tailscale rejects the policy: %s%s" % (data["message"], "".join("\n" + line for line in lines)),
                     validation_errors=lines)
    if module.check_mode:
        run.exit()

    headers = {"Content-Type": HUJSON, "Accept": "application/json"}
    if etag:
        headers["If-Match"] = quoted_etag(etag)
    else:
        module.warn("Tailscale sent no ETag with the policy; writing without If-Match")
    try:
        written = client.request("POST", path, body=text, headers=headers)
    except TailscaleError as error:
        if error.status == 412:
            run.fail("the policy was changed by someone else since it was read (ETag %s); nothing was written. "
                     "Re-run to see the new diff." % bare_etag(etag))
        run.fail("writing the policy: %s" % error, validation_errors=error_details(error))
    run.result["etag"] = bare_etag(written.headers.get("etag") or "")
    run.exit()


# -- headscale API -------------------------------------------------------------------------------

def headscale_read(run):
    """``(text, updatedAt)`` of the stored policy; ``("", None)`` when headscale has none yet."""
    client = run.client
    try:
        # headscale answers 500 "acl policy not found" before any policy was
        # set; asked for as expected, that answer is not retried like an outage.
        response = client.request("GET", "/policy", expect=(200, 500))
        if response.status == 500:
            if NO_POLICY_MARKER in response.text:
                return "", None
            response = client.request("GET", "/policy")
        data = response.json()
    except TailscaleError as error:
        run.fail("reading the policy: %s" % error)
    if not isinstance(data, dict):
        run.fail("headscale answered GET /api/v1/policy with something other than an object")
    return data.get("policy") or "", data.get("updatedAt")


def run_headscale_api(run, text, desired):
    module = run.module
    run.client = client_from_module(module)
    where = "headscale policy (%s)" % run.client.base_url
    current, updated_at = headscale_read(run)
    run.result["etag"] = content_etag(current)
    run.check_expected(run.result["etag"])
    changed, diff = run.compare(current, desired, where)
    run.report(changed, diff)
    if not changed or module.check_mode:
        run.exit()

    # headscale has no If-Match: the closest it allows is to read again right
    # before the write and stop if anything moved in between.
    again, again_updated_at = headscale_read(run)
    if again != current or again_updated_at != updated_at:
        run.fail("the policy was changed by someone else since it was read (updatedAt %s, now %s); nothing was "
                 "written. Re-run to see the new diff." % (updated_at, again_updated_at),
                 etag=content_etag(again))
    try:
        response = run.client.request("PUT", "/policy", body={"policy": text})
    except TailscaleError as error:
        if FILE_MODE_MARKER in (error.body or ""):
            run.fail("headscale keeps its policy in a file (policy.mode: file), which the API cannot change: "
                     "run this task on the headscale server with headscale_policy_path")
        run.fail("headscale rejects the policy: %s" % error)
    data = response.json() or {}
    run.result["etag"] = content_etag(data.get("policy") if isinstance(data, dict) and "policy" in data else text)
    run.exit()


# -- headscale policy file -----------------------------------------------------------------------

def headscale_binary(module):
    name = module.params["headscale_binary"]
    if os.path.sep in name:
        return name if os.access(name, os.X_OK) else None
    return module.get_bin_path(name)


def headscale_check(run, binary, path):
    rc, out, err = run.module.run_command([binary, "policy", "check", "--file", path])
    if rc != 0:
        message = " ".join((out + " " + err).split()) or "exit status %d" % rc
        return message
    return None


def write_temp(directory, text, like=None):
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".tailnet-policy-", suffix=".hujson")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temp, 0o640)
        if like is not None:
            try:
                os.chown(temp, like.st_uid, like.st_gid)
            except OSError:
                pass  # not root: the file stays ours, as the old one would have been written
    except Exception:
        os.unlink(temp)
        raise
    return temp


def read_file(run, path):
    try:
        with open(path) as handle:
            return handle.read(), os.stat(path)
    except FileNotFoundError:
        return None, None
    except (IOError, OSError) as error:
        run.fail("cannot read %s: %s" % (path, error))
    return None, None


def run_headscale_file(run, text, desired):
    module = run.module
    path = module.params["headscale_policy_path"]
    run.result["reloaded"] = False
    current, stat = read_file(run, path)
    run.result["etag"] = content_etag(current)
    run.check_expected(run.result["etag"])
    changed, diff = run.compare(current, desired, path)
    run.report(changed, diff)
    if not changed:
        run.exit()
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        run.fail("the directory of %s does not exist" % path)

    binary = headscale_binary(module)
    if binary is None:
        module.warn("%s not found: the policy file is written without `headscale policy check`"
                    % module.params["headscale_binary"])
    if module.check_mode:
        if binary is not None:
            temp = write_temp(tempfile.gettempdir(), text)
            try:
                problem = headscale_check(run, binary, temp)
            finally:
                os.unlink(temp)
            if problem:
                run.fail("headscale rejects the policy: %s" % problem)
        run.exit()

    try:
        temp = write_temp(directory, text, stat)
    except (IOError, OSError) as error:
        run.fail("cannot write a new policy file in %s: %s" % (directory, error))
    try:
        if binary is not None:
            problem = headscale_check(run, binary, temp)
            if problem:
                run.fail("headscale rejects the policy; %s was not changed: %s" % (path, problem))
        again, dummy = read_file(run, path)
        if again != current:
            run.fail("%s was changed by someone else while this task ran; nothing was written. Re-run to see the "
                     "new diff." % path, etag=content_etag(again))
        os.rename(temp, path)
        temp = None
    finally:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
    run.result["etag"] = content_etag(text)

    command = module.params["headscale_reload_command"]
    if command:
        rc, out, err = module.run_command(command)
        if rc != 0:
            run.fail("the policy file was written but the reload command failed (exit status %d): %s"
                     % (rc, " ".join((out + " " + err).split())))
        run.result["reloaded"] = True
    else:
        module.warn("headscale reads its policy file at start and on SIGHUP: reload it (systemctl reload "
                    "headscale), or set headscale_reload_command")
    run.exit()


def main():
    argument_spec = tailscale_argument_spec()
    argument_spec.update(
        policy=dict(type="raw", required=True),
        state=dict(type="str", choices=["present"], default="present"),
        allow_all=dict(type="bool", default=False),
        validate=dict(type="bool", default=True),
        expected_etag=dict(type="str"),
        headscale_policy_path=dict(type="path"),
        headscale_binary=dict(type="str", default="headscale"),
        headscale_reload_command=dict(type="list", elements="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run = PolicyRun(module)
    file_mode = bool(module.params["headscale_policy_path"])
    headscale = file_mode or module.params["api"] == "headscale"
    text, desired = run.load(headscale)
    if file_mode:
        run_headscale_file(run, text, desired)
    elif headscale:
        run_headscale_api(run, text, desired)
    else:
        run_tailscale(run, text, desired)


if __name__ == "__main__":
    main()
