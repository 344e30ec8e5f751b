#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cloudflare_kv_entries
short_description: Manage many keys of a Cloudflare Workers KV namespace in bulk
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Writes, deletes and purges keys of a Workers KV namespace with the bulk endpoints (10,000 keys a call),
    and copies the entries of one namespace into another.
  - Finds out which entries differ without reading any value back. Every value this module writes carries
    the SHA-256 of the value in the key's metadata, under the reserved field C(_sha256) (and the declared
    C(expiration_ttl), if any, under C(_ttl)), next to the user's own metadata. Listing the keys
    (1,000 a call, metadata included) is then enough to compare 10,000 entries in 10 calls.
  - A key that exists without C(_sha256) (written by something else) counts as different and is rewritten
    once; the module warns how many there were.
  - Create the namespace itself with M(blackroad.infra.cloudflare_kv_namespace).
options:
  namespace:
    description:
      - Title or id of the namespace to manage.
      - Giving the id saves the call that lists the namespaces of the account.
    type: str
    required: true
  entries:
    description:
      - The keys to manage, as a dict of key name to value.
      - A value is either a string, or a dict with C(value) (string, required), C(metadata) (a dict,
        stored as JSON with the key; at most 1024 bytes together with the reserved fields) and
        C(expiration_ttl) (seconds, at least 60; the key expires that long after it was written).
      - Key names are 1 to 512 bytes of UTF-8, not C(.) or C(..); with O(prefix) they must start with it.
      - Values are stored as UTF-8 text. Numbers and booleans are refused; quote them in YAML.
      - A key whose declared C(expiration_ttl) is unchanged is not rewritten on later runs, so
        its expiry is not pushed back; once it has expired, the next run writes it again.
      - With O(state=absent) only the key names matter; the values are ignored.
      - This option is not marked C(no_log) because the module reports key names, counts and hashes, never
        values. When values are secret, set C(no_log) to C(true) on the task, so that Ansible does not print
        the module arguments with C(-vvv) or on failure.
    type: dict
  state:
    description:
      - V(present) writes the keys of O(entries) whose value, metadata or expiration_ttl differ.
      - V(absent) deletes the keys named in O(entries) (those that exist).
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=present), delete every key of the namespace that is neither in O(entries) nor copied
        by O(copy_from).
      - Only keys that start with O(prefix) are considered when O(prefix) is set.
    type: bool
    default: false
  prefix:
    description:
      - Only keys starting with this string are considered (by O(purge) and O(copy_from)); every key of
        O(entries) must start with it.
    type: str
  copy_from:
    description:
      - Title or id of another namespace of the same account whose entries (keys starting with O(prefix))
        are copied into this one, with their metadata and expiration. Use it to merge two namespaces.
      - Keys of O(entries) take precedence over copied ones.
      - Keys that already exist in this namespace are kept as they are unless O(overwrite=true).
      - Values are read with the bulk get endpoint, 100 keys a call, and only for the keys that must be
        written. It returns text only, so a value that is not valid UTF-8 makes the module fail.
      - Only with O(state=present).
    type: str
  overwrite:
    description:
      - With O(copy_from), replace keys that exist in both namespaces by the source's entry.
      - Source keys written by this module (with C(_sha256)) that match the destination are not read.
    type: bool
    default: false
  diff_values:
    description:
      - In diff mode, show values. By default the diff shows key names, metadata and the SHA-256 of each
        value, never the value, because values are often secrets.
      - Showing the values of changed and removed keys costs one bulk get per 100 such keys.
    type: bool
    default: false
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
attributes:
  check_mode:
    description: Lists (and with O(copy_from), reads) as usual, writes nothing, and reports what would change.
  diff_mode:
    description: Shows each changed key with its metadata and the SHA-256 of its value (the value itself with O(diff_values=true)).
notes:
  - "API token permission: Account / Workers KV Storage / Edit (Read is enough in check mode)."
  - "Calls per run: one to resolve O(namespace) by title (none when given by id), one per 1,000 keys listed,
    one per 10,000 keys written, one per 10,000 keys deleted, and with O(copy_from) one list per 1,000
    source keys plus one bulk get per 100 values that must be copied."
  - Only keys that start with the longest common prefix of O(entries) are listed unless O(purge) or
    O(copy_from) is set, so managing a few keys of a large namespace stays cheap.
  - The reserved metadata fields C(_sha256) and C(_ttl) may not be used in C(metadata) of O(entries).
  - Workers KV is eventually consistent; a key written at another location may take up to 60 seconds to
    appear in listings.
seealso:
  - module: blackroad.infra.cloudflare_kv_namespace
"""

EXAMPLES = r"""
- name: KV entries
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ vault_cloudflare_api_token }}"
      account: 0123456789abcdef0123456789abcdef
  tasks:
    - name: Feature flags, exactly these under flags/
      blackroad.infra.cloudflare_kv_entries:
        namespace: app-config
        prefix: flags/
        purge: true
        entries:
          flags/new-ui: "on"
          flags/beta:
            value: "off"
            metadata: {owner: web-team}
          flags/banner:
            value: "Maintenance on Sunday"
            expiration_ttl: 86400

    - name: Secrets (no_log keeps the values out of the output)
      blackroad.infra.cloudflare_kv_entries:
        namespace: app-secrets
        entries: "{{ vault_app_secrets }}"
      no_log: true

    - name: Remove two keys
      blackroad.infra.cloudflare_kv_entries:
        namespace: app-config
        state: absent
        entries:
          old-key: ""
          older-key: ""

    - name: Merge the old namespace into the new one, keeping keys that exist there
      blackroad.infra.cloudflare_kv_entries:
        namespace: app-config
        copy_from: legacy-config
"""

RETURN = r"""
namespace:
  description: The namespace. C(title) is null when O(namespace) was given by id.
  returned: always
  type: dict
  contains:
    id:
      description: Namespace id.
      type: str
    title:
      description: Namespace title.
      type: str
  sample: {"id": "0f2ac74b498b48028cb68387c421e279", "title": "app-config"}
created:
  description:
    - Keys written that did not exist (or, in check mode, that would be).
    - When more than 1,000 keys, the first 100 in sorted order only; see RV(truncated) and RV(created_count).
  returned: always
  type: list
  elements: str
  sample: ["flags/new-ui"]
updated:
  description: Keys rewritten because value, metadata, expiration_ttl or the content hash differed. Truncated like RV(created).
  returned: always
  type: list
  elements: str
  sample: ["flags/beta"]
deleted:
  description: Keys deleted (by O(state=absent) or O(purge)). Truncated like RV(created).
  returned: always
  type: list
  elements: str
  sample: ["flags/old"]
created_count:
  description: Number of keys created.
  returned: always
  type: int
  sample: 1
updated_count:
  description: Number of keys updated.
  returned: always
  type: int
  sample: 1
deleted_count:
  description: Number of keys deleted.
  returned: always
  type: int
  sample: 1
unchanged:
  description: Number of declared or copied keys that already matched.
  returned: always
  type: int
  sample: 9998
kept:
  description:
    - Number of keys of O(copy_from) that exist in this namespace too and were left as they are because O(overwrite=false).
    - Keys whose content hash is the same on both sides count as RV(unchanged) instead.
  returned: always
  type: int
  sample: 0
unhashed:
  description: Number of existing keys without the C(_sha256) metadata field that were (or would be) rewritten.
  returned: always
  type: int
  sample: 0
truncated:
  description: Whether one of RV(created), RV(updated) or RV(deleted) holds only a sample because it had more than 1,000 keys.
  returned: always
  type: bool
  sample: false
api_calls:
  description: Number of HTTP requests the task made to the Cloudflare API.
  returned: always
  type: int
  sample: 11
"""

import hashlib
import json
import os
import re
import time

from ansible.module_utils.six import string_types
from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import CloudflareModule, dict_diff

HASH_FIELD = "_sha256"
TTL_FIELD = "_ttl"
RESERVED = (HASH_FIELD, TTL_FIELD)
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
PER_PAGE = 100
LIST_LIMIT = 1000
BULK_MAX_PAIRS = 10000
BULK_MAX_BYTES = 90 * 1024 * 1024  # the API takes 100 MB a request; leave room for the JSON around values
BULK_GET_MAX = 100
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
RESULT_LIST_MAX = 1000
RESULT_SAMPLE = 100
DIFF_MAX = 1000
ENTRY_FIELDS = ("value", "metadata", "expiration_ttl")


def short(key):
    return key if len(key) <= 60 else key[:57] + "..."


def sha256(value):
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def user_metadata(metadata):
    if not isinstance(metadata, dict):
        return {}
    return dict((k, v) for k, v in metadata.items() if k not in RESERVED)


def validate_key(cf, key, prefix):
    if not isinstance(key, string_types):
        cf.fail("entries: key %r is not a string" % (key,))
    if key in ("", ".", ".."):
        cf.fail("entries: %r is not a valid key name (must be 1-512 bytes, not '.' or '..')" % key)
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        cf.fail("entries: key %r is %d bytes long; the limit is %d bytes" % (short(key), size, MAX_KEY_BYTES))
    if prefix and not key.startswith(prefix):
        cf.fail("entries: key %r does not start with prefix %r" % (short(key), prefix))


def parse_entries(cf, entries, prefix, check_values):
    """Validate every entry before any call; values never appear in a message."""
    desired = {}
    for key in sorted(entries or {}, key=str):
        validate_key(cf, key, prefix)
        if not check_values:
            desired[key] = None
            continue
        spec = entries[key]
        where = "entries[%r]" % short(key)
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - set(ENTRY_FIELDS))
            if unknown:
                cf.fail("%s: unknown field(s) %s; use %s" % (where, ", ".join(map(str, unknown)), ", ".join(ENTRY_FIELDS)))
            if "value" not in spec:
                cf.fail("%s: a dict entry needs a 'value'" % where)
            value, metadata, ttl = spec.get("value"), spec.get("metadata"), spec.get("expiration_ttl")
        else:
            value, metadata, ttl = spec, None, None
        if not isinstance(value, string_types):
            cf.fail("%s: the value must be a string, not %s (quote numbers and booleans in YAML)"
                    % (where, "null" if value is None else type(value).__name__))
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            cf.fail("%s: the value is larger than 25 MiB" % where)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            cf.fail("%s: metadata must be a dict, not %s" % (where, type(metadata).__name__))
        clash = sorted(set(metadata) & set(RESERVED))
        if clash:
            cf.fail("%s: metadata field(s) %s are reserved for this module" % (where, ", ".join(clash)))
        if ttl is not None:
            if isinstance(ttl, bool):
                cf.fail("%s: expiration_ttl must be a number of seconds, not a boolean" % where)
            try:
                ttl_int = int(ttl)
            except (TypeError, ValueError):
                cf.fail("%s: expiration_ttl must be a whole number of seconds" % where)
            if isinstance(ttl, float) and ttl != ttl_int:
                cf.fail("%s: expiration_ttl must be a whole number of seconds" % where)
            if ttl_int < 60:
                cf.fail("%s: expiration_ttl is %d; Cloudflare requires at least 60 seconds" % (where, ttl_int))
            ttl = ttl_int
        digest = sha256(value)
        stored = dict(metadata)
        stored[HASH_FIELD] = digest
        if ttl is not None:
            stored[TTL_FIELD] = ttl
        try:
            size = len(compact(stored).encode("utf-8"))
        except (TypeError, ValueError):
            cf.fail("%s: metadata must be JSON (strings, numbers, booleans, lists, dicts)" % where)
        if size > MAX_METADATA_BYTES:
            cf.fail("%s: metadata is %d bytes as JSON with the reserved fields; the limit is %d"
                    % (where, size, MAX_METADATA_BYTES))
        desired[key] = dict(value=value, metadata=metadata, ttl=ttl, sha256=digest, stored=stored)
    return desired


def list_namespaces(cf, account_id):
    found = []
    page_number = 1
    while True:
        page = cf.call(cf.sdk.kv.namespaces.list, account_id=account_id, page=page_number, per_page=PER_PAGE,
                       order="id", direction="asc")
        items = list(page.result or [])
        found.extend(items)
        info = page.result_info
        total_pages = getattr(info, "total_pages", None) if info is not None else None
        if len(items) < PER_PAGE or (total_pages is not None and page_number >= total_pages):
            return found
        page_number += 1


def list_keys(cf, account_id, namespace_id, prefix):
    """name -> (metadata dict or None, expiration) for every key starting with prefix; 1,000 a call."""
    kwargs = dict(account_id=account_id, limit=LIST_LIMIT)
    if prefix:
        kwargs["prefix"] = prefix
    found = {}
    for key in cf.paged(cf.sdk.kv.namespaces.keys.list, namespace_id, **kwargs):
        found[key.name] = (key.metadata if isinstance(key.metadata, dict) else None, key.expiration)
    return found


def bulk_get(cf, account_id, namespace_id, keys):
    """key -> {value, metadata, expiration} (or None when gone), 100 keys a call."""
    path = "/accounts/%s/storage/kv/namespaces/%s/bulk/get" % (account_id, namespace_id)
    values = {}
    for start in range(0, len(keys), BULK_GET_MAX):
        batch = keys[start:start + BULK_GET_MAX]
        envelope = cf.request("POST", path, body={"keys": batch, "type": "text", "withMetadata": True})
        result = (envelope or {}).get("result") or {}
        got = result.get("values") or {}
        for key in batch:
            values[key] = got.get(key)
    return values


def batches(items):
    """Bulk write bodies: at most 10,000 pairs and about 90 MB each."""
    batch, size = [], 0
    for item in items:
        item_size = len(item["value"]) * 2 + 1200
        if batch and (len(batch) >= BULK_MAX_PAIRS or size + item_size > BULK_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def check_bulk_result(cf, response, what, done):
    unsuccessful = list(getattr(response, "unsuccessful_keys", None) or [])
    if unsuccessful:
        cf.fail("bulk %s: Cloudflare did not apply %d key(s): %s%s" % (
            what, len(unsuccessful), ", ".join(repr(short(str(k))) for k in unsuccessful[:10]),
            " ..." if len(unsuccessful) > 10 else ""), **done)


def trimmed(keys):
    keys = sorted(keys)
    if len(keys) > RESULT_LIST_MAX:
        return keys[:RESULT_SAMPLE], True
    return keys, False


def show_desired(d, diff_values):
    out = {"sha256": d["sha256"]}
    if d["metadata"]:
        out["metadata"] = d["metadata"]
    if d.get("ttl") is not None:
        out["expiration_ttl"] = d["ttl"]
    if d.get("expiration") is not None:
        out["expiration"] = d["expiration"]
    if diff_values:
        out["value"] = d["value"]
    return out


def show_existing(metadata, value, diff_values):
    metadata = metadata if isinstance(metadata, dict) else {}
    out = {"sha256": metadata.get(HASH_FIELD) or "(unknown: written without %s)" % HASH_FIELD}
    if user_metadata(metadata):
        out["metadata"] = user_metadata(metadata)
    if metadata.get(TTL_FIELD) is not None:
        out["expiration_ttl"] = metadata[TTL_FIELD]
    if diff_values:
        out["value"] = value
    return out


def main():
    cf = CloudflareModule(
        argument_spec=dict(
            namespace=dict(type="str", required=True),
            entries=dict(type="dict", no_log=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            purge=dict(type="bool", default=False),
            prefix=dict(type="str"),
            copy_from=dict(type="str"),
            overwrite=dict(type="bool", default=False),
            diff_values=dict(type="bool", default=False),
        ),
    )
    p = cf.params
    state, prefix, copy_from = p["state"], p["prefix"] or "", p["copy_from"]
    diff_values = p["diff_values"] and cf.diff_mode
    if not p["namespace"]:
        cf.fail("namespace must not be empty")
    if state == "absent" and (p["purge"] or copy_from):
        cf.fail("purge and copy_from are only valid with state=present")
    if copy_from is not None and not copy_from:
        cf.fail("copy_from must not be empty")
    desired = parse_entries(cf, p["entries"], prefix, check_values=(state == "present"))

    # Resolve the namespaces: one list call, or none when both are given by id.
    account_id = cf.account_id
    wanted = [p["namespace"]] + ([copy_from] if copy_from else [])
    resolved = {}
    if all(ID_PATTERN.match(w) for w in wanted):
        for w in wanted:
            resolved[w] = {"id": w, "title": None}
    else:
        namespaces = list_namespaces(cf, account_id)
        for w in wanted:
            match = next((n for n in namespaces if n.title == w), None) or next((n for n in namespaces if n.id == w), None)
            if match is None and w == p["namespace"] and (cf.check_mode or state == "absent"):
                # In check mode the namespace may be created by an earlier task
                # of the same play: predict from an empty namespace. A missing
                # namespace holds none of the keys to delete.
                if state == "present":
                    cf.module.warn("KV namespace %r does not exist yet: every entry counts as created" % w)
                resolved[w] = {"id": None, "title": w}
                continue
            if match is None:
                cf.fail("KV namespace %r not found in the account (create it with blackroad.infra.cloudflare_kv_namespace)" % w)
            resolved[w] = {"id": match.id, "title": match.title}
    namespace = resolved[p["namespace"]]
    nid = namespace["id"]
    source = resolved.get(copy_from) if copy_from else None
    if source is not None and source["id"] == nid:
        cf.fail("copy_from names the same namespace as namespace (%s)" % nid)

    # List what is there: only under the common prefix of the declared keys unless every key counts.
    if p["purge"] or copy_from:
        list_prefix = prefix
    else:
        list_prefix = os.path.commonprefix(list(desired)) if desired else None
    current = {} if list_prefix is None or nid is None else list_keys(cf, account_id, nid, list_prefix)

    created, updated, deleted = [], [], []
    writes = {}          # key -> bulk write item
    shown = {}           # key -> desired description for the diff
    unchanged = kept = unhashed = 0

    if state == "absent":
        deleted = [k for k in desired if k in current]
    else:
        for key, d in desired.items():
            existing = current.get(key)
            if existing is None:
                created.append(key)
            else:
                metadata = existing[0] or {}
                if HASH_FIELD not in metadata:
                    unhashed += 1
                elif (metadata.get(HASH_FIELD) == d["sha256"] and user_metadata(metadata) == d["metadata"]
                      and metadata.get(TTL_FIELD) == d["ttl"]):
                    unchanged += 1
                    continue
                updated.append(key)
            item = {"key": key, "value": d["value"], "metadata": d["stored"]}
            if d["ttl"] is not None:
                item["expiration_ttl"] = d["ttl"]
            writes[key] = item
            shown[key] = d

        keep = set(desired)
        if source is not None:
            source_keys = list_keys(cf, account_id, source["id"], prefix)
            to_read = []
            for key, (smeta, _exp) in source_keys.items():
                if key in desired:
                    continue
                keep.add(key)
                existing = current.get(key)
                dmeta = (existing[0] or {}) if existing is not None else {}
                if (existing is not None and smeta and smeta.get(HASH_FIELD) and smeta.get(HASH_FIELD) == dmeta.get(HASH_FIELD)
                        and user_metadata(smeta) == user_metadata(dmeta)):
                    unchanged += 1  # same content hash on both sides: no need to read the value
                    continue
                if existing is not None and not p["overwrite"]:
                    kept += 1
                    continue
                if existing is None and cf.check_mode and not diff_values:
                    created.append(key)  # created whatever the value is: no need to read it
                    shown[key] = {"sha256": (smeta or {}).get(HASH_FIELD) or "(not read in check mode)",
                                  "metadata": user_metadata(smeta), "value": None}
                    continue
                to_read.append(key)
            now = time.time()
            for key, got in sorted(bulk_get(cf, account_id, source["id"], to_read).items()):
                if not isinstance(got, dict) or not isinstance(got.get("value"), string_types):
                    continue  # deleted or expired since the listing
                expiration = got.get("expiration")
                if expiration and float(expiration) < now + 60:
                    continue  # about to expire: the API refuses expirations under 60 seconds away
                value, meta = got["value"], user_metadata(got.get("metadata"))
                digest = sha256(value)
                existing = current.get(key)
                if existing is not None:
                    dmeta = existing[0] or {}
                    if dmeta.get(HASH_FIELD) == digest and user_metadata(dmeta) == meta:
                        unchanged += 1
                        continue
                    if HASH_FIELD not in dmeta:
                        unhashed += 1
                    updated.append(key)
                else:
                    created.append(key)
                stored = dict(meta)
                stored[HASH_FIELD] = digest
                item = {"key": key, "value": value, "metadata": stored}
                if expiration:
                    item["expiration"] = int(expiration)
                writes[key] = item
                shown[key] = dict(value=value, metadata=meta, ttl=None, sha256=digest,
                                  expiration=int(expiration) if expiration else None)
        if p["purge"]:
            deleted = [k for k in current if k not in keep]

    changed = bool(writes or deleted)
    if unhashed:
        cf.module.warn("%d existing key(s) had no %s metadata (written outside this module) and %s rewritten"
                       % (unhashed, HASH_FIELD, "would be" if cf.check_mode else "were"))

    # Diff: key names with hashes and metadata; values only with diff_values.
    diff = None
    if cf.diff_mode and changed:
        old_values = {}
        if diff_values:
            old_values = bulk_get(cf, account_id, nid, sorted(updated + deleted)[:DIFF_MAX])
        before, after = {}, {}
        changed_keys = sorted(set(created) | set(updated) | set(deleted))
        for key in changed_keys[:DIFF_MAX]:
            if key in current:
                got = old_values.get(key)
                before[key] = show_existing(current[key][0], got.get("value") if isinstance(got, dict) else None,
                                            diff_values)
            if key in shown:
                after[key] = show_desired(shown[key], diff_values)
        if len(changed_keys) > DIFF_MAX:
            note = "... %d more changed key(s) not shown" % (len(changed_keys) - DIFF_MAX)
            before["..."] = after["..."] = note
        diff = dict_diff(before, after, "KV namespace %s" % (namespace["title"] or nid))

    result = dict(namespace=namespace, unchanged=unchanged, kept=kept, unhashed=unhashed)
    truncated = False
    for name, keys in (("created", created), ("updated", updated), ("deleted", deleted)):
        result[name], cut = trimmed(keys)
        result[name + "_count"] = len(keys)
        truncated = truncated or cut
    result["truncated"] = truncated
    if diff is not None:
        result["diff"] = diff

    if not cf.check_mode:
        done = dict((k, v) for k, v in result.items() if k != "diff")
        for batch in batches([writes[k] for k in sorted(writes)]):
            response = cf.call(cf.sdk.kv.namespaces.bulk_update, nid, account_id=account_id, body=batch)
            check_bulk_result(cf, response, "write", done)
        ordered = sorted(deleted)
        for start in range(0, len(ordered), BULK_MAX_PAIRS):
            response = cf.call(cf.sdk.kv.namespaces.bulk_delete, nid, account_id=account_id,
                               body=ordered[start:start + BULK_MAX_PAIRS])
            check_bulk_result(cf, response, "delete", done)
    cf.exit(changed, **result)


if __name__ == "__main__":
    main()
