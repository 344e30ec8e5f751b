# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: cloudflare_plan
short_description: Plan the consolidation of a Cloudflare account from what it has and what is declared
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Compares an account inventory (the result of M(blackroad.infra.cloudflare_info)) with a declared
    desired state and says, for each Worker, KV namespace, D1 database and R2 bucket, whether it stays,
    is merged into another, is deleted, is missing, or is not named by the plan at all.
  - Only resources the desired state names (by exact name or by a shell-style pattern) are ever put on
    the delete list. Everything else is reported as C(unplanned) and left alone.
  - A Worker folded into another is deleted only once the Worker it folds into exists, so traffic is not
    dropped before its replacement is deployed.
options:
  _input:
    description: The registered result of M(blackroad.infra.cloudflare_info).
    type: dict
    required: true
  desired:
    description:
      - The declared state. Keys C(workers), C(kv_namespaces), C(d1_databases), C(r2_buckets).
      - C(workers.keep) lists Workers that stay; C(workers.fold) maps a name or pattern to the Worker
        that absorbs it; C(workers.delete) lists names or patterns to delete.
      - C(kv_namespaces.keep) maps each target namespace title to the titles merged into it
        (C(from)); C(kv_namespaces.delete) lists titles or patterns to delete without merging.
      - C(d1_databases) and C(r2_buckets) take C(keep) and C(delete) lists.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Plan the consolidation
  ansible.builtin.set_fact:
    plan: "{{ account | blackroad.infra.cloudflare_plan(cloudflare_desired_account) }}"
"""

RETURN = r"""
_value:
  description:
    - C(workers), C(kv_namespaces), C(d1_databases), C(r2_buckets), each with the lists C(stays),
      C(missing), C(merges) (KV and folded Workers), C(deletes) and C(unplanned).
    - C(kv_namespaces.creates) lists target namespaces to create or rename into (C(rename_from)) and
      C(kv_namespaces.copies) the copies of entries that must happen before a merged namespace goes.
    - C(summary) gives the counts and C(lines) a readable plan, one line per resource.
  type: dict
"""

import fnmatch

from ansible.errors import AnsibleFilterError


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns or [])


def _names(items, key="name"):
    return [item[key] for item in items or []]


def _plan_simple(existing, spec, what):
    keep = list(spec.get("keep") or [])
    delete = list(spec.get("delete") or [])
    both = [name for name in existing if name in keep and _matches(name, delete)]
    if both:
        raise AnsibleFilterError("%s both kept and deleted by the plan: %s" % (what, ", ".join(sorted(both))))
    plan = dict(stays=[], missing=[], deletes=[], unplanned=[])
    for name in sorted(existing):
        if name in keep:
            plan["stays"].append(name)
        elif _matches(name, delete):
            plan["deletes"].append(name)
        else:
            plan["unplanned"].append(name)
    plan["missing"] = sorted(name for name in keep if name not in existing)
    return plan


def _plan_workers(existing, spec):
    keep = list(spec.get("keep") or [])
    fold = dict(spec.get("fold") or {})
    delete = list(spec.get("delete") or [])
    plan = dict(stays=[], missing=[], merges=[], deletes=[], unplanned=[], waiting=[])
    for target in fold.values():
        if target not in keep:
            raise AnsibleFilterError("worker fold target %r is not in workers.keep" % target)
    for name in sorted(existing):
        if name in keep:
            plan["stays"].append(name)
            continue
        target = next((t for pattern, t in sorted(fold.items()) if fnmatch.fnmatchcase(name, pattern)), None)
        if target is not None:
            plan["merges"].append(dict(name=name, into=target))
            if target in existing:
                plan["deletes"].append(name)
            else:
                plan["waiting"].append(dict(name=name, into=target))
        elif _matches(name, delete):
            plan["deletes"].append(name)
        else:
            plan["unplanned"].append(name)
    plan["missing"] = sorted(name for name in keep if name not in existing)
    return plan


def _plan_kv(existing, spec):
    """existing: {title: id}."""
    keep = dict(spec.get("keep") or {})
    delete = list(spec.get("delete") or [])
    plan = dict(stays=[], missing=[], creates=[], merges=[], copies=[], deletes=[], unplanned=[])
    sources = {}
    for target, target_spec in sorted(keep.items()):
        for source in (target_spec or {}).get("from") or []:
            if source in keep:
                raise AnsibleFilterError("KV namespace %r is both a target and merged into %r" % (source, target))
            if source in sources:
                raise AnsibleFilterError("KV namespace %r is merged into both %r and %r"
                                         % (source, sources[source], target))
            sources[source] = target
    for target, target_spec in sorted(keep.items()):
        present = [s for s in (target_spec or {}).get("from") or [] if s in existing]
        if target in existing:
            plan["stays"].append(target)
        elif present:
            # Renaming keeps the data where it is: cheaper and safer than a copy.
            plan["creates"].append(dict(title=target, rename_from=present[0]))
            plan["merges"].append(dict(title=present[0], into=target, how="rename"))
            present = present[1:]
        else:
            plan["creates"].append(dict(title=target))
            plan["missing"].append(target)
        for source in present:
            plan["merges"].append(dict(title=source, into=target, how="copy"))
            plan["copies"].append(dict(source=source, source_id=existing[source], target=target))
            plan["deletes"].append(source)
    for title in sorted(existing):
        if title in keep or title in sources:
            continue
        if _matches(title, delete):
            plan["deletes"].append(title)
        else:
            plan["unplanned"].append(title)
    plan["deletes"].sort()
    return plan


def cloudflare_plan(info, desired):
    if not isinstance(info, dict) or not isinstance(desired, dict):
        raise AnsibleFilterError("cloudflare_plan expects the cloudflare_info result and a desired-state dict")
    unknown = set(desired) - {"workers", "kv_namespaces", "d1_databases", "r2_buckets"}
    if unknown:
        raise AnsibleFilterError("unknown keys in the desired state: %s" % ", ".join(sorted(unknown)))
    kv_existing = {}
    for namespace in info.get("kv_namespaces") or []:
        if namespace["title"] in kv_existing:
            raise AnsibleFilterError("two KV namespaces are titled %r" % namespace["title"])
        kv_existing[namespace["title"]] = namespace["id"]
    plan = dict(
        workers=_plan_workers(_names(info.get("workers")), desired.get("workers") or {}),
        kv_namespaces=_plan_kv(kv_existing, desired.get("kv_namespaces") or {}),
        d1_databases=_plan_simple(_names(info.get("d1_databases")), desired.get("d1_databases") or {},
                                  "D1 databases"),
        r2_buckets=_plan_simple(_names(info.get("r2_buckets")), desired.get("r2_buckets") or {}, "R2 buckets"),
    )
    # R2 buckets hold data the plan cannot copy: they are reported, never deleted here.
    if plan["r2_buckets"]["deletes"]:
        raise AnsibleFilterError("R2 buckets cannot be deleted by this plan (empty them by hand first): %s"
                                 % ", ".join(plan["r2_buckets"]["deletes"]))
    lines = []
    for kind in ("workers", "kv_namespaces", "d1_databases", "r2_buckets"):
        part = plan[kind]
        for name in part["stays"]:
            lines.append("%s %s: stays" % (kind, name))
        for name in part["missing"]:
            lines.append("%s %s: missing (to be created or deployed)" % (kind, name))
        for merge in part.get("merges", []):
            name = merge.get("name", merge.get("title"))
            how = merge.get("how", "fold")
            lines.append("%s %s: merges into %s (%s)" % (kind, name, merge["into"], how))
        for item in part.get("waiting", []):
            lines.append("%s %s: kept until %s exists" % (kind, item["name"], item["into"]))
        for name in part["deletes"]:
            lines.append("%s %s: deleted" % (kind, name))
        for name in part["unplanned"]:
            lines.append("%s %s: not in the plan, left alone" % (kind, name))
    plan["lines"] = lines
    plan["summary"] = dict((kind, dict((key, len(value)) for key, value in plan[kind].items()))
                           for kind in ("workers", "kv_namespaces", "d1_databases", "r2_buckets"))
    return plan


class FilterModule(object):
    def filters(self):
        return {"cloudflare_plan": cloudflare_plan}
