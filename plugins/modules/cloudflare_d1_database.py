#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cloudflare_d1_database
short_description: Create or delete a Cloudflare D1 database
version_added: 0.2.0
description:
  - Makes sure a D1 database with a given name exists in a Cloudflare account, or that it does not.
  - The database is found by name with one list call; it is created only when it is missing, so a
    second run changes nothing and makes no write call.
  - It manages the database itself, not its tables or data.
author: BlackRoad infrastructure team (@blackroad)
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
options:
  name:
    description:
      - Name of the database.
      - Lower-case letters, digits, C(-) and C(_), starting with a letter or digit (the API's rule).
    type: str
    required: true
  state:
    description:
      - V(present) creates the database if it is missing.
      - V(absent) deletes it, with all its data, if it exists.
    type: str
    choices: [present, absent]
    default: present
  location_hint:
    description:
      - Region to place the database's primary in, when it is created.
      - Used only at creation; the API does not report it back, so an existing database is never
        compared with it or moved.
    type: str
    choices: [wnam, enam, weur, eeur, apac, oc]
attributes:
  check_mode:
    description: Makes the same read and no write; RV(ignore:changed) predicts the real run.
  diff_mode:
    description: Shows the database (uuid, name, created_at, version) before and after; V({}) when there is none.
notes:
  - "Token permission: D1 Edit (plus Account Settings Read when O(account) is a name or is not set)."
  - "Calls per run: one list (filtered by name); plus one create or one delete when something changes."
  - Deleting a database deletes its data; there is no undo.
seealso:
  - module: blackroad.infra.cloudflare_info
"""

EXAMPLES = r"""
- name: D1 databases of the platform
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ lookup('env', 'CLOUDFLARE_API_TOKEN') }}"
      account: BlackRoad
  tasks:
    - name: The application database, in western Europe
      blackroad.infra.cloudflare_d1_database:
        name: app
        location_hint: weur
      register: app_db

    - name: Its id, for the Worker binding
      ansible.builtin.debug:
        msg: "{{ app_db.database.uuid }}"

    - name: The old staging database is gone
      blackroad.infra.cloudflare_d1_database:
        name: staging-old
        state: absent
"""

RETURN = r"""
database:
  description:
    - The database as the API describes it, after the task (before it, for V(absent)).
    - Empty when there is no such database. In check mode a database that would be created has only its name.
  returned: always
  type: dict
  contains:
    uuid:
      description: Database id; use it in a Worker's D1 binding.
      type: str
    name:
      description: Database name.
      type: str
    created_at:
      description: When it was created.
      type: str
    version:
      description: Database version.
      type: str
  sample: {uuid: 1f3c5a44-8a65-4d36-bd5c-1c26a0d1f6bb, name: app, created_at: "2024-09-01T10:00:00.000Z", version: production}
diff:
  description: The database before and after, in diff mode.
  returned: when diff mode is on
  type: dict
api_calls:
  description: Number of HTTP requests the task made.
  returned: always
  type: int
  sample: 1
"""

import re

from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import CloudflareError, CloudflareModule, dict_diff

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
LIST_PER_PAGE = 10000  # the largest page the list endpoint allows
FIELDS = ("uuid", "name", "created_at", "version", "jurisdiction")  # what both the list and the create return


def describe(db):
    """A database (SDK model) as a small plain dict."""
    if db is None:
        return {}
    data = db.to_dict(mode="json") if hasattr(db, "to_dict") else dict(db)
    return dict((k, data[k]) for k in FIELDS if data.get(k) is not None)


def find(cf, aid, name):
    """The database called ``name``, or None (one call: the list takes a name filter)."""
    matches, page = [], 1
    while True:
        resp = cf.call(cf.sdk.d1.database.list, account_id=aid, name=name, page=page, per_page=LIST_PER_PAGE)
        batch = list(resp.result or [])
        matches.extend(d for d in batch if d.name == name)  # the filter is a search, not an exact match
        info = resp.result_info.to_dict() if getattr(resp, "result_info", None) is not None else {}
        if not batch or (info.get("total_pages") is not None and page >= int(info["total_pages"])) \
                or (info.get("total_pages") is None and len(batch) < LIST_PER_PAGE):
            break
        page += 1
    if len(matches) > 1:
        cf.fail("%d D1 databases are called %r; remove the extra ones by hand" % (len(matches), name))
    return matches[0] if matches else None


def main():
    cf = CloudflareModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            location_hint=dict(type="str", choices=["wnam", "enam", "weur", "eeur", "apac", "oc"]),
        ),
    )
    params = cf.params
    name = params["name"]
    if not NAME_PATTERN.match(name or ""):
        cf.fail("name %r is not a valid D1 database name: use lower-case letters, digits, '-' and '_', "
                "starting with a letter or digit" % (name,))

    aid = cf.account_id
    existing = find(cf, aid, name)
    before = describe(existing)
    changed = False
    after = before

    if params["state"] == "present" and existing is None:
        changed = True
        after = dict(name=name)
        if not cf.check_mode:
            kwargs = dict(account_id=aid, name=name)
            if params["location_hint"]:
                kwargs["primary_location_hint"] = params["location_hint"]
            created = cf.create(cf.sdk.d1.database.create, find=lambda: find(cf, aid, name), **kwargs)
            after = describe(created) or dict(name=name)
    elif params["state"] == "absent" and existing is not None:
        changed = True
        after = {}
        if not cf.check_mode:
            try:
                cf.client.call(cf.sdk.d1.database.delete, existing.uuid, account_id=aid)
            except CloudflareError as error:
                # Listed a moment ago: a 404 now means an earlier attempt (whose answer was lost) deleted it.
                if error.status != 404:
                    cf.fail(str(error), status=error.status)

    result = dict(database=before if params["state"] == "absent" else after)
    if cf.diff_mode:
        result["diff"] = dict_diff(before, after, header="D1 database %s" % name)
    cf.exit(changed, **result)


if __name__ == "__main__":
    main()
