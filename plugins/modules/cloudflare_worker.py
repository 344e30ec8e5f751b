#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cloudflare_worker
short_description: Manage a Cloudflare Worker (ES modules), its bindings, routes and custom domains
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Uploads an ES-module Worker script with its bindings, compatibility date and flags, and
    manages the Worker routes and custom domains that point at it.
  - The deployed script is compared with the desired one without uploading it again; the module
    reads the script's settings (bindings, compatibility date and flags) and its content, and
    compares every module by SHA-256. A run that changes nothing makes no write call.
  - Secrets (O(bindings[].type=secret_text)) are write-only. With O(secrets_update=on_create) a
    secret that already exists on the Worker is kept as it is and never sent again; its value is
    never compared. Secrets that exist on the Worker but are not in O(bindings) are deleted.
  - When O(routes) or O(domains) is given, the module manages them exclusively for this script;
    routes and custom domains of this script that are not listed are removed. Routes and custom
    domains of other scripts are never changed; listing one of them is an error.
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
options:
  name:
    description:
      - Name of the Worker script (lower-case letters, digits, C(-) and C(_)).
    type: str
    required: true
  state:
    description:
      - V(present) uploads the script when it differs and converges routes and domains.
      - V(absent) removes the script's routes and custom domains (in every zone of the account),
        then the script.
    type: str
    choices: [present, absent]
    default: present
  files:
    description:
      - Absolute paths of the modules to upload, read on the host the task runs on (normally the
        controller, with C(delegate_to=localhost) or a local connection).
      - Each module is uploaded under its file name; file names must be unique.
      - Content types come from the extension. C(.js) and C(.mjs) are
        C(application/javascript+module), C(.wasm) is C(application/wasm), C(.json) is
        C(application/json), and C(.txt) is C(text/plain). Other extensions are rejected.
      - Required when O(state=present).
    type: list
    elements: path
  main_module:
    description:
      - File name (not path) of the entry module, one of the O(files).
      - Defaults to the file name of the first entry of O(files). It must be a C(.js) or C(.mjs) module.
    type: str
  bindings:
    description:
      - The complete list of the Worker's bindings. Bindings on the deployed Worker that are not
        listed are removed on the next upload (secrets too, see O(secrets_update)).
      - Names must be unique valid JavaScript identifiers.
      - Bindings are compared by type and name and their non-secret fields; a secret only by presence.
      - Omit to upload the script with no bindings at all.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: Kind of binding.
        type: str
        required: true
        choices: [kv_namespace, plain_text, secret_text, d1, r2_bucket, service, ratelimit]
      name:
        description: Name of the binding, the variable name on C(env) in the Worker.
        type: str
        required: true
      namespace_id:
        description:
          - For V(kv_namespace), the id of the KV namespace.
            Give this or O(bindings[].namespace).
          - For V(ratelimit), the rate limiter's namespace, a positive integer unique in the account
            (Workers that give the same one share its counters).
        type: str
      namespace:
        description:
          - For V(kv_namespace), the title of the KV namespace, resolved to its id with one list call.
        type: str
      text:
        description:
          - For V(plain_text) and V(secret_text), the value.
          - This option is C(no_log), so a V(plain_text) value is masked in Ansible's output as well.
        type: str
      database_id:
        description:
          - For V(d1), the UUID of the D1 database. Give this or O(bindings[].database).
        type: str
      database:
        description:
          - For V(d1), the name of the D1 database, resolved to its UUID with one list call.
        type: str
      bucket_name:
        description: For V(r2_bucket), the name of the R2 bucket.
        type: str
      service:
        description: For V(service), the name of the Worker the binding calls.
        type: str
      limit:
        description: For V(ratelimit), how many requests a key may make per O(bindings[].period).
        type: int
      period:
        description: For V(ratelimit), the window in seconds, V(10) or V(60).
        type: int
      environment:
        description:
          - For V(service), the environment of that Worker. When not set it is not compared.
        type: str
  compatibility_date:
    description:
      - Compatibility date of the Worker runtime, C(YYYY-MM-DD).
      - When not set, the deployed Worker's date is kept (a new Worker gets Cloudflare's default).
    type: str
  compatibility_flags:
    description:
      - Compatibility flags of the Worker runtime, compared as a set.
      - When not set, the deployed Worker's flags are kept. V([]) removes them all.
    type: list
    elements: str
  secrets_update:
    description:
      - V(on_create) sends a V(secret_text) binding only when the Worker does not have a secret of that
        name yet; an existing secret keeps its value and is never compared.
      - V(always) sends every V(secret_text) binding on every run, uploading the script, and so reports
        V(changed) whenever there is a secret.
    type: str
    choices: [on_create, always]
    default: on_create
  secrets_purge:
    description:
      - Whether secrets on the Worker that O(bindings) does not list are deleted.
      - V(false) keeps them, so that a run without the secret's value at hand (a vault that was not
        loaded) cannot take a working secret away. Delete such a secret with V(true) on purpose.
    type: bool
    default: true
    version_added: 0.4.0
  routes:
    description:
      - The complete list of Worker routes that point at this script. When given, this script's routes
        that are not listed are removed, in every zone of the account. When not given, routes are not
        read or changed.
    type: list
    elements: dict
    suboptions:
      pattern:
        description:
          - Route pattern such as C(example.com/api/*) or C(*.example.com/*). Its host must be the zone
            or a name in it; wildcards only at the start of the host and the end of the path.
        type: str
        required: true
      zone:
        description:
          - Zone of the route, by name or id. When not set, the zone of the account whose name is the
            longest suffix of the pattern's host.
        type: str
  domains:
    description:
      - The complete list of custom domains attached to this script. When given, this script's custom
        domains that are not listed are detached. When not given, custom domains are not read or changed.
    type: list
    elements: dict
    suboptions:
      hostname:
        description: The hostname, the zone apex or a name in the zone.
        type: str
        required: true
      zone:
        description:
          - Zone of the hostname, by name or id. When not set, the zone of the account whose name is the
            longest suffix of O(domains[].hostname).
        type: str
      environment:
        description: Environment of the Worker the domain serves.
        type: str
        default: production
attributes:
  check_mode:
    description: Reads the script, routes and domains, writes nothing, and reports in RV(actions) what would be written.
  diff_mode:
    description: >-
      Shows the script's metadata, bindings (secret values replaced by a marker), modules as name and SHA-256,
      routes and custom domains before and after.
notes:
  - >-
    API calls per run: one to read the script's settings and bindings, one to read its content (every
    module in one answer, multipart when the Worker has several), one KV namespace list when a binding
    names a namespace by title, one D1 list when a binding names a database by name; with O(routes) or
    O(domains) (and always with O(state=absent)), one zone list, one route list per zone of the account
    and one custom domain list.
    Writes happen only for what differs.
  - >-
    Token permissions: Account - Workers Scripts - Edit; with O(routes), Zone - Workers Routes - Edit
    and Zone - Zone - Read; with O(domains), Zone - Zone - Read and Zone - DNS - Edit (attaching a
    custom domain creates its DNS record and certificate); Account - Workers KV Storage - Read and
    Account - D1 - Read when bindings name a namespace or database by title or name.
  - When the content endpoint does not name the entry module (no C(cf-entrypoint) header), a change of
    O(main_module) alone, with identical modules, is not detected.
"""

EXAMPLES = r"""
- name: Deploy the edge worker
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ vault_cloudflare_token }}"
      account: BlackRoad
  tasks:
    - name: Upload the worker with its bindings, routes and a custom domain
      blackroad.infra.cloudflare_worker:
        name: edge-router
        files:
          - "{{ playbook_dir }}/files/edge/index.js"
          - "{{ playbook_dir }}/files/edge/util.mjs"
          - "{{ playbook_dir }}/files/edge/routes.json"
        main_module: index.js
        compatibility_date: "2024-09-23"
        compatibility_flags: [nodejs_compat]
        bindings:
          - {type: kv_namespace, name: CACHE, namespace: edge-cache}
          - {type: plain_text, name: ENVIRONMENT, text: production}
          - {type: secret_text, name: API_KEY, text: "{{ vault_edge_api_key }}"}
          - {type: d1, name: DB, database: edge-db}
          - {type: r2_bucket, name: ASSETS, bucket_name: edge-assets}
          - {type: service, name: AUTH, service: auth-worker}
        routes:
          - {pattern: "example.com/api/*", zone: example.com}
        domains:
          - {hostname: edge.example.com, zone: example.com}
        # To rotate API_KEY: change vault_edge_api_key, then run once with -e rotate_secrets=true
        # ("always" re-sends every secret and always reports a change)
        secrets_update: "{{ 'always' if rotate_secrets | default(false) | bool else 'on_create' }}"

    - name: Remove the worker, its routes and custom domains
      blackroad.infra.cloudflare_worker:
        name: old-worker
        state: absent
"""

RETURN = r"""
script:
  description:
    - The script as it is after the run (or would be, in check mode); empty when absent.
    - Secret bindings show a fixed marker instead of their value.
  returned: always
  type: dict
  contains:
    name:
      description: Script name.
      type: str
    main_module:
      description: Entry module.
      type: str
    files:
      description: Each module's name, SHA-256 and size in bytes (size only for uploaded files).
      type: list
      elements: dict
    bindings:
      description: Bindings by type and name with their non-secret fields.
      type: list
      elements: dict
    compatibility_date:
      description: Compatibility date.
      type: str
    compatibility_flags:
      description: Compatibility flags.
      type: list
      elements: str
  sample:
    name: edge-router
    main_module: index.js
    files: [{name: index.js, sha256: 3b1f0c..., size: 212}]
    bindings: [{type: secret_text, name: API_KEY, text: "(secret, write-only)"}]
    compatibility_date: "2024-09-23"
    compatibility_flags: []
uploaded:
  description: Whether the script was (or in check mode would be) uploaded.
  returned: always
  type: bool
routes:
  description: The script's routes after the run, as C(pattern) and C(zone) (zone name); only with O(routes) or O(state=absent).
  returned: when routes are managed
  type: list
  elements: dict
domains:
  description: The script's custom domains after the run; only with O(domains) or O(state=absent).
  returned: when domains are managed
  type: list
  elements: dict
  sample: [{hostname: edge.example.com, zone: example.com, environment: production}]
actions:
  description: The writes made (or planned in check mode), in order, each a short sentence.
  returned: always
  type: list
  elements: str
  sample: ["upload script edge-router", "create route example.com/api/* in example.com"]
diff:
  description: Before and after of metadata, files (name and SHA-256), routes and domains, with secret values replaced by a marker.
  returned: when diff mode is on
  type: dict
api_calls:
  description: Number of HTTP requests made to the Cloudflare API.
  returned: always
  type: int
"""

import datetime
import email
import email.message
import hashlib
import os
import re

from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import (
    CloudflareError, CloudflareModule, ID_PATTERN, dict_diff)

SECRET_MARKER = "(secret, write-only)"
SCRIPT_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
JS_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
JS_RESERVED = frozenset((
    "await break case catch class const continue debugger default delete do else enum export extends false "
    "finally for function if implements import in instanceof interface let new null package private protected "
    "public return static super switch this throw true try typeof var void while with yield").split())
CONTENT_TYPES = {
    ".js": "application/javascript+module",
    ".mjs": "application/javascript+module",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".txt": "text/plain",
}
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
# The fields that define each binding type (besides type and name), in display order.
BINDING_FIELDS = {
    "kv_namespace": ("namespace_id",),
    "plain_text": ("text",),
    "secret_text": (),
    "d1": ("database_id",),
    "r2_bucket": ("bucket_name",),
    "service": ("service", "environment"),
    "ratelimit": ("namespace_id", "simple"),
}
OPTION_FIELDS = ("namespace_id", "namespace", "text", "database_id", "database", "bucket_name", "service", "environment",
                 "limit", "period")
ALLOWED_FIELDS = {
    "kv_namespace": ("namespace_id", "namespace"),
    "plain_text": ("text",),
    "secret_text": ("text",),
    "d1": ("database_id", "database"),
    "r2_bucket": ("bucket_name",),
    "service": ("service", "environment"),
    "ratelimit": ("namespace_id", "limit", "period"),
}


# ---------------------------------------------------------------------------- validation


def validate(cf):
    """Check every option before any call; return the prepared desired state."""
    p = cf.params
    errors = []
    if not SCRIPT_NAME.match(p["name"] or ""):
        errors.append("name %r: use 1-63 lower-case letters, digits, '-' and '_' (not starting or ending "
                      "with '-' or '_')" % p["name"])
    desired = dict(files=[], bindings=[], routes=None, domains=None)
    if p["state"] == "present":
        desired["files"] = _validate_files(p, errors)
        desired["main_module"] = _validate_main(p, desired["files"], errors)
        desired["bindings"] = _validate_bindings(p["bindings"] or [], errors)
        date = p["compatibility_date"]
        if date is not None:
            try:
                if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
                    raise ValueError()
                datetime.datetime.strptime(date, "%Y-%m-%d")
            except ValueError:
                errors.append("compatibility_date %r: use the format YYYY-MM-DD with a real date" % date)
        for flag in p["compatibility_flags"] or []:
            if not re.match(r"^[a-z0-9_]+$", flag or ""):
                errors.append("compatibility_flags: %r is not a valid flag name" % flag)
        if p["routes"] is not None:
            desired["routes"] = _validate_routes(p["routes"], errors)
        if p["domains"] is not None:
            desired["domains"] = _validate_domains(p["domains"], errors)
    if errors:
        cf.fail("invalid options: " + "; ".join(errors))
    return desired


def _validate_files(p, errors):
    paths = p["files"] or []
    if not paths:
        errors.append("files: give at least one module when state is present")
    files, seen = [], set()
    for path in paths:
        if not path or not os.path.isabs(path):
            errors.append("files: %r is not an absolute path (use e.g. '{{ playbook_dir }}/files/worker.js')" % path)
            continue
        name = os.path.basename(path)
        ext = os.path.splitext(name)[1].lower()
        if ext not in CONTENT_TYPES:
            errors.append("files: %s has an unsupported extension (use %s)" % (path, ", ".join(sorted(CONTENT_TYPES))))
            continue
        if name in seen:
            errors.append("files: two files are named %r; module names must be unique" % name)
            continue
        seen.add(name)
        if not os.path.isfile(path):
            errors.append("files: %s does not exist or is not a regular file" % path)
            continue
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except (IOError, OSError) as error:
            errors.append("files: cannot read %s (%s)" % (path, error.strerror or error))
            continue
        if not data:
            errors.append("files: %s is empty" % path)
            continue
        files.append(dict(name=name, path=path, data=data, content_type=CONTENT_TYPES[ext],
                          sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    return files


def _validate_main(p, files, errors):
    names = [os.path.basename(path or "") for path in p["files"] or []]
    main = p["main_module"] or (names[0] if names else None)
    if main is None:
        return None
    if main not in names:
        errors.append("main_module %r is not the file name of one of files (%s)" % (main, ", ".join(names)))
    elif os.path.splitext(main)[1].lower() not in (".js", ".mjs"):
        errors.append("main_module %r must be a .js or .mjs module" % main)
    return main


def _validate_bindings(bindings, errors):
    out, seen = [], set()
    for index, b in enumerate(bindings):
        kind, name = b.get("type"), b.get("name")
        label = "bindings[%d] (%s)" % (index, name)
        if not name or not JS_IDENTIFIER.match(name) or name in JS_RESERVED:
            errors.append("%s: name must be a valid JavaScript identifier" % label)
        elif name in seen:
            errors.append("%s: binding names must be unique" % label)
        seen.add(name)
        for field in OPTION_FIELDS:
            if b.get(field) is not None and field not in ALLOWED_FIELDS[kind]:
                errors.append("%s: %s is not an option of a %s binding" % (label, field, kind))
        item = dict(type=kind, name=name)
        if kind == "kv_namespace":
            _one_of(b, "namespace_id", "namespace", label, errors)
            if b.get("namespace_id") is not None and not ID_PATTERN.match(b["namespace_id"]):
                errors.append("%s: namespace_id must be 32 hexadecimal digits" % label)
            item.update(namespace_id=b.get("namespace_id"), namespace=b.get("namespace"))
        elif kind in ("plain_text", "secret_text"):
            if b.get("text") is None:
                errors.append("%s: a %s binding needs text" % (label, kind))
            item["text"] = b.get("text")
        elif kind == "d1":
            _one_of(b, "database_id", "database", label, errors)
            item.update(database_id=b.get("database_id"), database=b.get("database"))
        elif kind == "r2_bucket":
            if not b.get("bucket_name"):
                errors.append("%s: a r2_bucket binding needs bucket_name" % label)
            item["bucket_name"] = b.get("bucket_name")
        elif kind == "ratelimit":
            if not re.match(r"^[1-9][0-9]{0,9}$", b.get("namespace_id") or ""):
                errors.append("%s: a ratelimit binding needs namespace_id, a positive integer" % label)
            if not isinstance(b.get("limit"), int) or b["limit"] < 1:
                errors.append("%s: a ratelimit binding needs limit, a positive number" % label)
            if b.get("period") not in (10, 60):
                errors.append("%s: a ratelimit binding needs period 10 or 60 (seconds)" % label)
            item.update(namespace_id=b.get("namespace_id"), simple=dict(limit=b.get("limit"), period=b.get("period")))
        elif kind == "service":
            if not b.get("service"):
                errors.append("%s: a service binding needs service" % label)
            item["service"] = b.get("service")
            if b.get("environment") is not None:
                item["environment"] = b["environment"]
        out.append(item)
    return out


def _one_of(b, first, second, label, errors):
    given = [f for f in (first, second) if b.get(f)]
    if len(given) != 1:
        errors.append("%s: a %s binding needs exactly one of %s and %s" % (label, b["type"], first, second))


def _pattern_host(pattern):
    rest = re.sub(r"^https?://", "", pattern)
    host = rest.split("/", 1)[0]
    return rest, host


def _validate_routes(routes, errors):
    out, seen = [], set()
    for index, r in enumerate(routes):
        pattern = r.get("pattern") or ""
        label = "routes[%d] (%s)" % (index, pattern)
        rest, host = _pattern_host(pattern)
        bare = host[1:] if host.startswith("*") else host
        bare = bare[1:] if bare.startswith(".") else bare
        path = rest[len(host):]
        if not bare or not HOSTNAME.match(bare.lower()):
            errors.append("%s: the pattern must start with a hostname in the zone, e.g. example.com/*" % label)
        elif "*" in path[:-1] or "?" in rest or "#" in rest:
            errors.append("%s: wildcards only at the start of the host and the end of the path; no query" % label)
        elif host != host.lower():
            errors.append("%s: the host must be lower case" % label)
        zone = r.get("zone")
        if zone and not ID_PATTERN.match(zone):
            zone = zone.rstrip(".").lower()
            if bare and not (bare == zone or bare.endswith("." + zone)):
                errors.append("%s: the pattern's host %s is not in zone %s" % (label, bare, zone))
        if pattern in seen:
            errors.append("%s: listed twice" % label)
        seen.add(pattern)
        out.append(dict(pattern=pattern, host=bare, zone=zone))
    return out


def _validate_domains(domains, errors):
    out, seen = [], set()
    for index, d in enumerate(domains):
        hostname = (d.get("hostname") or "").rstrip(".").lower()
        label = "domains[%d] (%s)" % (index, d.get("hostname"))
        if not HOSTNAME.match(hostname):
            errors.append("%s: not a valid hostname (no wildcards, no scheme or path)" % label)
        zone = d.get("zone")
        if zone and not ID_PATTERN.match(zone):
            zone = zone.rstrip(".").lower()
            if not (hostname == zone or hostname.endswith("." + zone)):
                errors.append("%s: the hostname is not in zone %s" % (label, zone))
        if not d.get("environment"):
            errors.append("%s: environment must not be empty" % label)
        if hostname in seen:
            errors.append("%s: listed twice" % label)
        seen.add(hostname)
        out.append(dict(hostname=hostname, zone=zone, environment=d.get("environment")))
    return out


# ---------------------------------------------------------------------------- reading


def read_settings(cf, account_id, name):
    """The script's settings (bindings, compatibility date and flags), or None when it does not exist."""
    envelope = get_or_none(cf, cf.sdk.get, "/accounts/%s/workers/scripts/%s/settings" % (account_id, name),
                           cast_to=object)
    if envelope is None:
        return None
    return (envelope.get("result") if isinstance(envelope, dict) else None) or {}


def get_or_none(cf, func, *args, **kwargs):
    """An idempotent call that answers None on 404 instead of failing."""
    try:
        return cf.client.call(func, *args, **kwargs)
    except CloudflareError as error:
        if error.status == 404:
            return None
        cf.fail(str(error), status=error.status)


def parse_modules(body, content_type):
    """[(name, bytes)] of the parts of a multipart/form-data body, parsed with the stdlib email parser.

    Each part is a module: its name is the part's filename (else its form-data name).
    """
    head = ("Content-Type: %s\r\nMIME-Version: 1.0\r\n\r\n" % content_type).encode("latin-1")
    message = email.message_from_bytes(head + body)
    if not message.is_multipart():
        return None
    modules = []
    for part in message.get_payload():
        name = part.get_filename() or part.get_param("name", header="content-disposition")
        if name and name != "metadata":
            modules.append((name, part.get_payload(decode=True) or b""))
    return modules


def read_content(cf, account_id, name, desired):
    """{module name: sha256} of the deployed script and its entry module (None when unknown).

    One call: content/v2 answers a multi-module Worker with multipart/form-data (one part per
    module) and a single-module Worker with the bare module, ``cf-entrypoint`` naming the entry.
    """
    response = cf.call(cf.sdk.workers.scripts.content.get, name, account_id=account_id)
    body = response.read()
    content_type = response.headers.get("content-type", "")
    entry = response.headers.get("cf-entrypoint")
    modules = None
    if content_type.lower().startswith("multipart/"):
        modules = parse_modules(body, content_type)
    if modules is None:
        disposition = email.message.Message()
        disposition["content-disposition"] = response.headers.get("content-disposition", "")
        modules = [(entry or disposition.get_filename() or desired.get("main_module") or "(entry module)", body)]
    files = [dict(name=n, sha256=hashlib.sha256(data).hexdigest()) for n, data in modules]
    return sorted(files, key=lambda f: f["name"]), entry


# Bindings that may name their target instead of giving its id:
# type -> (option with the name, option with the id, what it is, list call, name and id attributes).
NAMED_TARGETS = {
    "kv_namespace": ("namespace", "namespace_id", "KV namespace titled", lambda sdk: sdk.kv.namespaces.list, "title", "id"),
    "d1": ("database", "database_id", "D1 database", lambda sdk: sdk.d1.database.list, "name", "uuid"),
}


def resolve_bindings(cf, account_id, bindings):
    """Fill namespace_id and database_id from titles and names (one list call each, when needed)."""
    for kind, (ref, id_field, what, lister, name_attr, id_attr) in NAMED_TARGETS.items():
        named = [b for b in bindings if b["type"] == kind and b.get(ref)]
        if not named:
            continue
        ids = {}
        for item in cf.paged(lister(cf.sdk), account_id=account_id, per_page=100):
            ids.setdefault(getattr(item, name_attr), []).append(getattr(item, id_attr))
        for b in named:
            found = ids.get(b[ref], [])
            if not found and cf.check_mode:
                # Made by an earlier task of the same play: its id is not
                # known yet, and the upload is predicted all the same.
                cf.module.warn("bindings %s: %s %r does not exist yet" % (b["name"], what, b[ref]))
                b[id_field] = "(to be created: %s)" % b[ref]
                continue
            if len(found) != 1:
                cf.fail("bindings %s: %s %r %s" % (
                    b["name"], what, b[ref], "not found" if not found else "is not unique; give " + id_field))
            b[id_field] = found[0]


def show_binding(b):
    """A binding as the diff and the result show it: type, name, defining fields, no secret."""
    out = dict(type=b.get("type"), name=b.get("name"))
    if b.get("type") == "secret_text":
        out["text"] = SECRET_MARKER
        return out
    fields = BINDING_FIELDS.get(b.get("type"))
    if fields is None:
        out.update((k, v) for k, v in b.items() if k not in ("type", "name", "text"))
        return out
    for field in fields:
        if b.get(field) is not None:
            out[field] = b[field]
    return out


def binding_key(b):
    return (b.get("type") or "", b.get("name") or "")


def binding_equal(want, have):
    if have is None or binding_key(want) != binding_key(have):
        return False
    for field in BINDING_FIELDS[want["type"]]:
        if want.get(field) is not None and want[field] != have.get(field):
            return False
    return True


class Zones:
    """The account's zones, listed once: names, ids and suffix lookup."""

    def __init__(self, cf, account_id):
        self.cf = cf
        zones = cf.paged(cf.sdk.zones.list, account={"id": account_id}, per_page=50)
        self.by_id = dict((z.id, z.name) for z in zones)
        self.by_name = dict((z.name, z.id) for z in zones)

    def resolve(self, zone, host, label):
        if zone:
            if ID_PATTERN.match(zone):
                if zone not in self.by_id:
                    self.cf.fail("%s: zone id %s is not a zone of this account" % (label, zone))
                name = self.by_id[zone]
                if host and not (host == name or host.endswith("." + name)):
                    self.cf.fail("%s: %s is not in zone %s" % (label, host, name))
                return zone
            if zone not in self.by_name:
                self.cf.fail("%s: zone %r not found in this account (or the token cannot see it)" % (label, zone))
            return self.by_name[zone]
        best = None
        for name in self.by_name:
            if host == name or host.endswith("." + name):
                if best is None or len(name) > len(best):
                    best = name
        if best is None:
            self.cf.fail("%s: no zone of this account contains %s; set zone" % (label, host))
        return self.by_name[best]


def read_routes(cf, zones):
    """Every route of every zone of the account: [{id, pattern, script, zone_id}]."""
    out = []
    for zone_id in sorted(zones.by_id):
        for r in cf.paged(cf.sdk.workers.routes.list, zone_id=zone_id):
            out.append(dict(id=r.id, pattern=r.pattern, script=r.script, zone_id=zone_id))
    return out


def read_domains(cf, account_id):
    out = []
    for d in cf.paged(cf.sdk.workers.domains.list, account_id=account_id):
        out.append(dict(id=d.id, hostname=d.hostname, service=d.service, environment=d.environment,
                        zone_id=d.zone_id, zone_name=d.zone_name))
    return out


# ---------------------------------------------------------------------------- planning


def show_routes(routes, zones):
    return sorted((dict(pattern=r["pattern"], zone=zones.by_id.get(r["zone_id"], r["zone_id"])) for r in routes),
                  key=lambda r: (r["zone"], r["pattern"]))


def show_domains(domains, zones):
    return sorted((dict(hostname=d["hostname"], zone=zones.by_id.get(d["zone_id"], d.get("zone_name") or d["zone_id"]),
                        environment=d["environment"]) for d in domains), key=lambda d: d["hostname"])


def plan_routes(cf, name, desired, zones, existing, actions):
    """(creates, deletes, routes after) for this script's routes."""
    ours = [r for r in existing if r["script"] == name]
    by_key = dict(((r["zone_id"], r["pattern"]), r) for r in existing)
    creates, wanted = [], set()
    for index, r in enumerate(desired or []):
        label = "routes[%d] (%s)" % (index, r["pattern"])
        zone_id = zones.resolve(r["zone"], r["host"], label)
        key = (zone_id, r["pattern"])
        wanted.add(key)
        have = by_key.get(key)
        if have is None:
            creates.append(dict(zone_id=zone_id, pattern=r["pattern"]))
            actions.append("create route %s in %s" % (r["pattern"], zones.by_id[zone_id]))
        elif have["script"] != name:
            cf.fail("%s: the route already exists in zone %s for %s; this module never changes another "
                    "script's route" % (label, zones.by_id[zone_id],
                                        "script %r" % have["script"] if have["script"] else "no script"))
    deletes = [r for r in ours if (r["zone_id"], r["pattern"]) not in wanted]
    for r in deletes:
        actions.append("delete route %s in %s" % (r["pattern"], zones.by_id.get(r["zone_id"], r["zone_id"])))
    after = [r for r in ours if (r["zone_id"], r["pattern"]) in wanted] + creates
    return creates, deletes, ours, after


def plan_domains(cf, name, desired, zones, existing, actions):
    ours = [d for d in existing if d["service"] == name]
    by_host = dict((d["hostname"], d) for d in existing)
    attaches, wanted = [], set()
    for index, d in enumerate(desired or []):
        label = "domains[%d] (%s)" % (index, d["hostname"])
        zone_id = zones.resolve(d["zone"], d["hostname"], label)
        wanted.add(d["hostname"])
        have = by_host.get(d["hostname"])
        want = dict(hostname=d["hostname"], zone_id=zone_id, environment=d["environment"])
        if have is not None and have["service"] != name:
            cf.fail("%s: the custom domain is attached to Worker %r; this module never changes another script's "
                    "domain" % (label, have["service"]))
        if have is None or have["zone_id"] != zone_id or have["environment"] != d["environment"]:
            attaches.append(want)
            actions.append("attach domain %s (%s)" % (d["hostname"], d["environment"]))
    detaches = [d for d in ours if d["hostname"] not in wanted]
    for d in detaches:
        actions.append("detach domain %s" % d["hostname"])
    attached = set(a["hostname"] for a in attaches)
    after = [d for d in ours if d["hostname"] in wanted and d["hostname"] not in attached] + attaches
    return attaches, detaches, ours, after


# ---------------------------------------------------------------------------- main


def main():
    binding_options = dict(
        type=dict(type="str", required=True, choices=list(BINDING_FIELDS)),
        name=dict(type="str", required=True),
        namespace_id=dict(type="str"),
        namespace=dict(type="str"),
        text=dict(type="str", no_log=True),
        database_id=dict(type="str"),
        database=dict(type="str"),
        bucket_name=dict(type="str"),
        service=dict(type="str"),
        environment=dict(type="str"),
        limit=dict(type="int"),
        period=dict(type="int"),
    )
    cf = CloudflareModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            files=dict(type="list", elements="path"),
            main_module=dict(type="str"),
            bindings=dict(type="list", elements="dict", default=[], options=binding_options),
            compatibility_date=dict(type="str"),
            compatibility_flags=dict(type="list", elements="str"),
            secrets_update=dict(type="str", choices=["on_create", "always"], default="on_create"),
            secrets_purge=dict(type="bool", default=True),
            routes=dict(type="list", elements="dict", options=dict(
                pattern=dict(type="str", required=True),
                zone=dict(type="str"),
            )),
            domains=dict(type="list", elements="dict", options=dict(
                hostname=dict(type="str", required=True),
                zone=dict(type="str"),
                environment=dict(type="str", default="production"),
            )),
        ),
        required_if=[("state", "present", ["files"])],
    )
    desired = validate(cf)
    if cf.params["state"] == "absent":
        run_absent(cf)
    run_present(cf, desired)


def run_absent(cf):
    name = cf.params["name"]
    account_id = cf.account_id
    settings = read_settings(cf, account_id, name)
    zones = Zones(cf, account_id)
    routes = [r for r in read_routes(cf, zones) if r["script"] == name]
    domains = [d for d in read_domains(cf, account_id) if d["service"] == name]
    actions = ["delete route %s in %s" % (r["pattern"], zones.by_id.get(r["zone_id"])) for r in routes]
    actions += ["detach domain %s" % d["hostname"] for d in domains]
    if settings is not None:
        actions.append("delete script %s" % name)
    result = dict(script={}, uploaded=False, routes=[], domains=[], actions=actions)
    if cf.diff_mode:
        before = dict(routes=show_routes(routes, zones), domains=show_domains(domains, zones))
        if settings is not None:
            before["script"] = name
        result["diff"] = dict_diff(before, dict(routes=[], domains=[]), header="worker %s" % name)
    if actions and not cf.check_mode:
        for r in routes:
            delete_or_gone(cf, cf.sdk.workers.routes.delete, r["id"], zone_id=r["zone_id"])
        for d in domains:
            delete_or_gone(cf, cf.sdk.workers.domains.with_raw_response.delete, d["id"], account_id=account_id)
        if settings is not None:
            delete_or_gone(cf, cf.sdk.workers.scripts.delete, name, account_id=account_id)
    cf.exit(bool(actions), **result)


def delete_or_gone(cf, func, *args, **kwargs):
    """A delete that counts 'already gone' (404, e.g. after a retried delete landed) as done.

    Custom domain deletes go through ``with_raw_response``: the API may answer them with an
    empty body, which the SDK's typed response cannot parse.
    """
    get_or_none(cf, func, *args, **kwargs)


def run_present(cf, desired):
    p = cf.params
    name = p["name"]
    account_id = cf.account_id
    want_bindings = desired["bindings"]
    resolve_bindings(cf, account_id, want_bindings)

    settings = read_settings(cf, account_id, name)
    exists = settings is not None
    if exists:
        have_files, have_main = read_content(cf, account_id, name, desired)
    else:
        settings, have_files, have_main = {}, [], None
    have_bindings = sorted(settings.get("bindings") or [], key=binding_key)
    have_by_key = dict((binding_key(b), b) for b in have_bindings)
    have_date = settings.get("compatibility_date")
    have_flags = list(settings.get("compatibility_flags") or [])

    # What would be uploaded.
    date = p["compatibility_date"] if p["compatibility_date"] is not None else have_date
    flags = list(p["compatibility_flags"]) if p["compatibility_flags"] is not None else have_flags
    want_files = sorted((dict(name=f["name"], sha256=f["sha256"]) for f in desired["files"]), key=lambda f: f["name"])
    have_secrets = set(b.get("name") for b in have_bindings if b.get("type") == "secret_text")
    send, reasons = [], []
    for b in want_bindings:
        if b["type"] == "secret_text":
            if b["name"] in have_secrets and p["secrets_update"] == "on_create":
                continue  # kept as it is via keep_bindings
            if b["name"] in have_secrets:
                reasons.append("re-send secret %s" % b["name"])
            send.append(b)
            continue
        send.append(b)
        if not binding_equal(b, have_by_key.get(binding_key(b))):
            reasons.append("binding %s" % b["name"])
    wanted_keys = set(binding_key(b) for b in want_bindings)
    unlisted_secrets = [b for b in have_bindings if b.get("type") == "secret_text" and binding_key(b) not in wanted_keys]
    stale_secrets = [b["name"] for b in unlisted_secrets] if p["secrets_purge"] else []
    for b in have_bindings:
        if b.get("type") != "secret_text" and binding_key(b) not in wanted_keys:
            reasons.append("remove binding %s" % b.get("name"))
    for b in want_bindings:
        if b["type"] == "secret_text" and b["name"] not in have_secrets:
            reasons.append("secret %s" % b["name"])
    if not exists:
        reasons = ["create"]
    else:
        if want_files != have_files:
            reasons.append("modules")
        if have_main is not None and have_main != desired["main_module"]:
            reasons.append("main_module")
        if date != have_date:
            reasons.append("compatibility_date")
        if sorted(set(flags)) != sorted(set(have_flags)):
            reasons.append("compatibility_flags")
    upload = bool(reasons)
    actions = []
    if upload:
        actions.append("upload script %s (%s)" % (name, ", ".join(sorted(set(reasons)))))
    for secret in stale_secrets:
        actions.append("delete secret %s" % secret)

    # The script after the run, as shown in the result and the diff.
    after_bindings = [show_binding(b) for b in want_bindings]
    if not p["secrets_purge"]:
        after_bindings += [show_binding(b) for b in unlisted_secrets]
    before_script = {}
    if exists:
        before_script = dict(name=name, main_module=have_main, files=have_files,
                             bindings=[show_binding(b) for b in have_bindings],
                             compatibility_date=have_date, compatibility_flags=have_flags)
    after_script = dict(name=name, main_module=desired["main_module"],
                        files=[dict(name=f["name"], sha256=f["sha256"], size=f["size"]) for f in desired["files"]],
                        bindings=sorted(after_bindings, key=binding_key),
                        compatibility_date=date, compatibility_flags=flags)

    # Routes and custom domains.
    zones = None
    route_plan = domain_plan = None
    if desired["routes"] is not None or desired["domains"] is not None:
        zones = Zones(cf, account_id)
    if desired["routes"] is not None:
        route_plan = plan_routes(cf, name, desired["routes"], zones, read_routes(cf, zones), actions)
    if desired["domains"] is not None:
        domain_plan = plan_domains(cf, name, desired["domains"], zones, read_domains(cf, account_id), actions)

    result = dict(script=after_script, uploaded=upload, actions=actions)
    before, after = dict(script=before_script), dict(script=dict(after_script))
    after["script"]["files"] = want_files
    if route_plan is not None:
        result["routes"] = show_routes(route_plan[3], zones)
        before["routes"], after["routes"] = show_routes(route_plan[2], zones), result["routes"]
    if domain_plan is not None:
        result["domains"] = show_domains(domain_plan[3], zones)
        before["domains"], after["domains"] = show_domains(domain_plan[2], zones), result["domains"]
    if cf.diff_mode:
        result["diff"] = dict_diff(before, after, header="worker %s" % name)

    if cf.check_mode or not actions:
        cf.exit(bool(actions), **result)

    if upload:
        metadata = dict(main_module=desired["main_module"], bindings=[metadata_binding(b) for b in send],
                        keep_bindings=["secret_text"])
        if date:
            metadata["compatibility_date"] = date
        metadata["compatibility_flags"] = flags
        files = [(f["name"], f["data"], f["content_type"]) for f in desired["files"]]
        cf.call(cf.sdk.workers.scripts.update, name, account_id=account_id, metadata=metadata, files=files)
    for secret in stale_secrets:
        delete_or_gone(cf, cf.sdk.workers.scripts.secrets.delete, secret, account_id=account_id, script_name=name)
    if route_plan is not None:
        creates, deletes = route_plan[:2]
        for r in deletes:
            delete_or_gone(cf, cf.sdk.workers.routes.delete, r["id"], zone_id=r["zone_id"])
        for r in creates:
            cf.create(cf.sdk.workers.routes.create, zone_id=r["zone_id"], pattern=r["pattern"], script=name,
                      find=route_finder(cf, r["zone_id"], r["pattern"], name))
    if domain_plan is not None:
        attaches, detaches = domain_plan[:2]
        for d in detaches:
            delete_or_gone(cf, cf.sdk.workers.domains.with_raw_response.delete, d["id"], account_id=account_id)
        for d in attaches:
            cf.call(cf.sdk.workers.domains.update, account_id=account_id, hostname=d["hostname"], service=name,
                    zone_id=d["zone_id"], extra_body={"environment": d["environment"]})
    cf.exit(True, **result)


def metadata_binding(b):
    out = dict(type=b["type"], name=b["name"])
    # A rate limiter is sent as Cloudflare spells it: limit and period inside "simple".
    fields = BINDING_FIELDS["ratelimit"] if b["type"] == "ratelimit" else ALLOWED_FIELDS[b["type"]]
    for field in fields:
        if field in ("namespace", "database"):
            continue
        if b.get(field) is not None:
            out[field] = b[field]
    return out


def route_finder(cf, zone_id, pattern, name):
    def find():
        for r in cf.paged(cf.sdk.workers.routes.list, zone_id=zone_id):
            if r.pattern == pattern and r.script == name:
                return r
        return None
    return find


if __name__ == "__main__":
    main()
