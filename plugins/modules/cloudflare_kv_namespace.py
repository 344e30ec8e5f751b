#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cloudflare_kv_namespace
short_description: Create, rename and delete Cloudflare Workers KV namespaces
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Makes sure a Workers KV namespace with a given title exists in an account, or does not.
  - Namespace titles are unique within an account, so the title identifies the namespace.
  - An existing namespace can be renamed with O(rename_from); its id and its keys are kept.
  - Manage the keys of a namespace with M(blackroad.infra.cloudflare_kv_entries).
options:
  title:
    description:
      - Title of the namespace.
    type: str
    required: true
  state:
    description:
      - V(present) creates the namespace (or renames O(rename_from) to O(title)) when it does not exist.
      - V(absent) deletes the namespace with this title, and every key in it.
    type: str
    choices: [present, absent]
    default: present
  rename_from:
    description:
      - Title or id of an existing namespace to rename to O(title).
      - When no namespace is called O(title) and O(rename_from) exists, it is renamed (a PUT; id and keys kept).
      - When O(title) exists already and O(rename_from) does not, nothing is done (the rename happened on an
        earlier run).
      - When both exist the module fails rather than guess which one to keep.
      - When neither exists a new namespace called O(title) is created.
      - Only valid with O(state=present).
    type: str
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
attributes:
  check_mode:
    description: Lists the namespaces, writes nothing, and reports what would change (a namespace to be created has a null RV(namespace.id)).
  diff_mode:
    description: Shows the namespace's id and title before and after.
notes:
  - "API token permission: Account / Workers KV Storage / Edit (Read is enough in check mode)."
  - One call lists the namespaces of the account (up to 100; one more per further 100), then at most one
    write (create, rename or delete).
seealso:
  - module: blackroad.infra.cloudflare_kv_entries
"""

EXAMPLES = r"""
- name: KV namespaces
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ vault_cloudflare_api_token }}"
      account: 0123456789abcdef0123456789abcdef
  tasks:
    - name: Make sure the sessions namespace exists
      blackroad.infra.cloudflare_kv_namespace:
        title: sessions
      register: sessions

    - name: Rename the old config namespace, keeping its keys
      blackroad.infra.cloudflare_kv_namespace:
        title: app-config
        rename_from: config

    - name: Delete a namespace and all its keys
      blackroad.infra.cloudflare_kv_namespace:
        title: scratch
        state: absent
"""

RETURN = r"""
namespace:
  description:
    - The namespace after the run (for O(state=absent), the one that was deleted).
    - Empty when O(state=absent) and no such namespace existed.
  returned: always
  type: dict
  contains:
    id:
      description: Namespace id (use it in Worker bindings).
      type: str
      sample: 0f2ac74b498b48028cb68387c421e279
    title:
      description: Namespace title.
      type: str
      sample: sessions
api_calls:
  description: Number of HTTP requests the task made to the Cloudflare API.
  returned: always
  type: int
  sample: 2
"""

from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import CloudflareError, CloudflareModule, dict_diff

PER_PAGE = 100


def list_namespaces(cf, account_id):
    """Every namespace of the account, one call per 100 (the schema's maximum page size)."""
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


def delete(cf, account_id, namespace_id):
    """DELETE, where a 404 means done: a retry after a lost reply finds the namespace already gone."""
    try:
        cf.client.call(cf.sdk.kv.namespaces.delete, namespace_id, account_id=account_id)
    except CloudflareError as error:
        if error.status != 404:
            cf.fail(str(error), status=error.status)


def public(ns):
    if ns is None:
        return {}
    return {"id": ns.id, "title": ns.title}


def main():
    cf = CloudflareModule(
        argument_spec=dict(
            title=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            rename_from=dict(type="str"),
        ),
    )
    title = cf.params["title"]
    state = cf.params["state"]
    rename_from = cf.params["rename_from"]
    if not title or not title.strip():
        cf.fail("title must not be empty")
    if len(title.encode("utf-8")) > 512:
        cf.fail("title is longer than 512 bytes")
    if rename_from is not None and state != "present":
        cf.fail("rename_from is only valid with state=present")
    if rename_from is not None and not rename_from.strip():
        cf.fail("rename_from must not be empty")

    account_id = cf.account_id
    namespaces = list_namespaces(cf, account_id)
    current = next((n for n in namespaces if n.title == title), None)

    def find_created():
        return next((n for n in list_namespaces(cf, account_id) if n.title == title), None)

    header = "KV namespace %s" % title
    if state == "absent":
        if current is None:
            cf.exit(False, namespace={})
        if not cf.check_mode:
            delete(cf, account_id, current.id)
        result = dict(namespace=public(current))
        if cf.diff_mode:
            result["diff"] = dict_diff(public(current), {}, header)
        cf.exit(True, **result)

    source = None
    if rename_from is not None:
        source = next((n for n in namespaces if rename_from in (n.title, n.id)), None)
        if source is not None and current is not None and source.id != current.id:
            cf.fail("cannot rename %r to %r: a namespace titled %r exists already (id %s) and so does %r (id %s); "
                    "delete one of them first" % (rename_from, title, title, current.id, rename_from, source.id))
    if current is not None:
        cf.exit(False, namespace=public(current))

    if source is not None:
        before = public(source)
        after = dict(before, title=title)
        if not cf.check_mode:
            renamed = cf.call(cf.sdk.kv.namespaces.update, source.id, account_id=account_id, title=title)
            after = public(renamed) if renamed is not None and getattr(renamed, "id", None) else after
    else:
        before = {}
        after = {"id": None, "title": title}
        if not cf.check_mode:
            created = cf.create(cf.sdk.kv.namespaces.create, account_id=account_id, title=title, find=find_created)
            if created is None:
                created = find_created()
            if created is None:
                cf.fail("creating namespace %r reported success but it cannot be found" % title)
            after = public(created)
    result = dict(namespace=after)
    if cf.diff_mode:
        result["diff"] = dict_diff(before, after, header)
    cf.exit(True, **result)


if __name__ == "__main__":
    main()
