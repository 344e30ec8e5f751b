#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cloudflare_dns_records
short_description: A declarative set of DNS records in one Cloudflare zone
version_added: 0.2.0
author: BlackRoad infrastructure team (@blackroad)
description:
  - Makes a Cloudflare zone hold the DNS records you declare, reading the zone once and writing every change
    through the DNS batch endpoint (up to O(batch_size) changes per call).
  - Records are grouped by name and type. Within a declared group, an existing record with the same value is
    kept (and updated if its TTL, proxy status, priority, comment or tags differ); a declared value that does
    not exist yet replaces, in place, an existing record of the group that this collection owns (so changing
    an A or TXT value never leaves a duplicate behind); only when there is none is a new record created.
  - A record is owned by this collection when it carries O(owner_tag). Every record the module creates or
    updates gets that tag. O(purge) and the clean-up of extra records only ever delete owned records; other
    records are left alone with a warning.
  - Every record is validated before any API call, and all bad records are reported in one message.
options:
  zone:
    description:
      - The zone, by name (V(example.com)) or by id (32 hexadecimal characters).
    type: str
    required: true
  records:
    description:
      - The DNS records of this set.
      - May be empty, for example with O(purge=true) to delete every owned record of the zone.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Required. The record name, relative to the zone (V(www)), V(@) for the zone apex, or a fully
            qualified name inside the zone (V(www.example.com) or V(www.example.com.)).
          - Wildcards are allowed as the first label (V(*) or V(*.dev)). Names are case-insensitive.
        type: str
      type:
        description:
          - Required. The record type, one of V(A), V(AAAA), V(CNAME), V(TXT), V(MX), V(SRV), V(CAA), V(NS), V(PTR).
        type: str
      content:
        description:
          - The record value. Required with O(state=present) except for V(SRV) and V(CAA) records given by
            O(records[].data).
          - V(A) an IPv4 address, V(AAAA) an IPv6 address (compared in canonical form), V(CNAME), V(NS), V(PTR)
            and V(MX) a hostname (a trailing dot is ignored), V(TXT) any text (up to 2048 characters; surrounding
            quotes are optional and compared as Cloudflare returns them).
          - V(SRV) as in a zone file, V(priority weight port target); V(CAA) as V(flags tag "value").
          - With O(state=absent) it may be left out to remove every owned record of the name and type.
        type: str
      data:
        description:
          - Only for V(SRV) (keys C(priority), C(weight), C(port), C(target)) and V(CAA) (keys C(flags),
            C(tag), C(value)) records, instead of O(records[].content).
        type: dict
      ttl:
        description:
          - Time to live in seconds, V(1) for automatic, otherwise 60 to 86400.
          - Proxied records always have an automatic TTL, so it must be V(1) with O(records[].proxied=true).
        type: int
        default: 1
      proxied:
        description:
          - Whether Cloudflare proxies the traffic. Only for V(A), V(AAAA) and V(CNAME) records.
        type: bool
        default: false
      priority:
        description:
          - Required for V(MX) records (0 to 65535), not allowed for other types (SRV takes it in O(records[].data)).
        type: int
      comment:
        description:
          - A note kept with the record. Left out, the record has no comment (an existing one is removed).
        type: str
      tags:
        description:
          - Tags of the form V(name:value); the name may contain letters, digits, V(-) and V(_) and is
            case-insensitive.
          - O(owner_tag) is added to these; a tag with the same name as O(owner_tag) is not allowed.
        type: list
        elements: str
        default: []
  state:
    description:
      - V(present) creates or updates the declared records.
      - V(absent) deletes the declared records (those with the same name, type and value, whoever owns them;
        without a value, the owned records of that name and type).
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=present), also delete every record of the zone that carries O(owner_tag) and is not
        declared, including owned extras in a declared name and type.
      - Records without O(owner_tag) are never purged.
    type: bool
    default: false
  owner_tag:
    description:
      - The tag (V(name:value)) that marks the records this collection owns.
      - Use a different value per set when several plays manage records of the same zone with O(purge=true).
    type: str
    default: managed-by:blackroad-infra
  batch_size:
    description:
      - Changes (deletes, updates and creates together) per batch call. 200 is the Free plan's limit; paid
        plans allow more.
    type: int
    default: 200
extends_documentation_fragment:
  - blackroad.infra.cloudflare
  - blackroad.infra.cloudflare.account
notes:
  - O(account) only narrows the lookup of a zone given by name (zone names are unique per account); it is not
    needed otherwise, and the token's only account is not looked up.
  - "API token permission: Zone / DNS / Edit for the zone (Zone / DNS / Read is enough in check mode); when
    O(zone) is a name, also Zone / Zone / Read to look it up."
  - "Calls per run: 1 to look the zone up (none when O(zone) is an id), 1 to list every record of the zone, and
    one batch call per O(batch_size) changes. A run that changes nothing makes no write."
  - When O(zone) is an id and a record name is not absolute, the zone name comes with the listed records;
    an API that does not return it costs one more read.
  - In diff mode the before and after texts list the records that change, one per line, in zone-file
    form (C(www.example.com. 300 IN A 192.0.2.1)), with C(proxied), the comment and the tags other than
    O(owner_tag) after them; C(; not owned) marks a record without O(owner_tag).
  - Each batch is one transaction. If a later batch fails, earlier ones stay applied and a re-run converges.
    After an error that may have left a batch applied (a server error or a lost connection), the module
    lists the zone again and sends only what is still missing.
seealso:
  - name: Cloudflare DNS record batch API
    description: How batched changes are applied (deletes, then updates, then creates, in one transaction).
    link: https://developers.cloudflare.com/dns/manage-dns-records/how-to/batch-record-changes/
"""

EXAMPLES = r"""
- name: DNS for example.com
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/blackroad.infra.cloudflare:
      api_token: "{{ vault_cloudflare_api_token }}"
  tasks:
    - name: Web, mail and policy records
      blackroad.infra.cloudflare_dns_records:
        zone: example.com
        records:
          - {name: "@", type: A, content: 192.0.2.10, proxied: true}
          - {name: "@", type: AAAA, content: "2001:db8::10", proxied: true}
          - {name: www, type: CNAME, content: example.com, proxied: true}
          - {name: "@", type: MX, content: mx1.mail.example.net, priority: 10}
          - {name: "@", type: MX, content: mx2.mail.example.net, priority: 20}
          - {name: "@", type: TXT, content: "v=spf1 include:_spf.mail.example.net -all", ttl: 3600}
          - {name: _sip._tcp, type: SRV, data: {priority: 10, weight: 5, port: 5060, target: sip.example.com}}
          - {name: "@", type: CAA, data: {flags: 0, tag: issue, value: letsencrypt.org}}
          - name: status
            type: CNAME
            content: status.example.net
            comment: Status page, owned by the SRE team
            tags: ["team:sre"]

    - name: Exactly these records, deleting owned records that are no longer declared
      blackroad.infra.cloudflare_dns_records:
        zone: example.com
        purge: true
        records: "{{ example_com_records }}"

    - name: Remove an old host
      blackroad.infra.cloudflare_dns_records:
        zone: example.com
        state: absent
        records:
          - {name: legacy, type: A}
"""

RETURN = r"""
records:
  description:
    - The declared records as they are after the run (in check mode, as they would be), in the order
      declared. Empty with O(state=absent).
    - A record that would be created in check mode has no C(id).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Record id.
      type: str
      sample: 372e67954025e0ba6aaa6d586b9e0b59
    name:
      description: Fully qualified name, lower case, without a trailing dot.
      type: str
      sample: www.example.com
    type:
      description: Record type.
      type: str
      sample: A
    content:
      description: The value as Cloudflare stores it; for SRV and CAA records in zone-file form (V(priority weight port target), V(flags tag "value")).
      type: str
      sample: 192.0.2.1
    ttl:
      description: TTL in seconds, 1 for automatic.
      type: int
      sample: 300
    proxied:
      description: Whether the record is proxied.
      type: bool
      sample: false
    priority:
      description: MX priority (MX records only).
      type: int
      sample: 10
    data:
      description: SRV or CAA components (SRV and CAA records only).
      type: dict
      sample: {"flags": 0, "tag": "issue", "value": "letsencrypt.org"}
    comment:
      description: The comment, or null.
      type: str
      sample: Main web server
    tags:
      description: Tags, sorted, including O(owner_tag).
      type: list
      elements: str
      sample: ["managed-by:blackroad-infra"]
changes:
  description: The records this run created, updated (as they are after the update) and deleted.
  returned: always
  type: dict
  contains:
    created:
      description: Records created.
      type: list
      elements: dict
    updated:
      description: Records updated in place.
      type: list
      elements: dict
    deleted:
      description: Records deleted.
      type: list
      elements: dict
  sample: {"created": [], "updated": [], "deleted": []}
zone_id:
  description: Id of the zone.
  returned: always
  type: str
  sample: 023e105f4ecef8ad9ca31a8372d0c353
api_calls:
  description: Number of HTTP requests the task made to the Cloudflare API.
  returned: always
  type: int
  sample: 2
"""

import ipaddress
import re

from ansible.module_utils.six import string_types, integer_types
from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import (
    CloudflareError,
    CloudflareModule,
    ID_PATTERN,
    dict_diff,
)

# The schema's maximum page size for GET /zones/{zone_id}/dns_records
# (components.schemas.dns-records_per_page: maximum 5000000), so one call lists a zone.
PER_PAGE = 5000000
SUPPORTED_TYPES = ("A", "AAAA", "CAA", "CNAME", "MX", "NS", "PTR", "SRV", "TXT")
PROXIABLE_TYPES = ("A", "AAAA", "CNAME")
HOSTNAME_TYPES = ("CNAME", "NS", "PTR", "MX")
MAX_TXT = 2048
LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
HOST_RE = re.compile(r"^%s(?:\.%s)*$" % (LABEL, LABEL))
TAG_RE = re.compile(r"^([A-Za-z0-9_-]+):(.*)$", re.DOTALL)
CAA_TAG_RE = re.compile(r"^[a-z0-9]{1,15}$")
QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*')
BATCH_INDEX_RE = re.compile(r"\b(deletes|patches|puts|posts)\[(\d+)\]")
DONE = object()


# --------------------------------------------------------------------------- normalising

def is_host(value):
    value = value.lower().rstrip(".")
    return bool(value) and len(value) <= 253 and bool(HOST_RE.match(value))


def norm_host(value):
    return str(value).strip().lower().rstrip(".")


def txt_value(content):
    """TXT text without the zone-file quoting Cloudflare may add ("a" "b" is ab)."""
    text = content.strip()
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        pos, parts = 0, []
        while pos < len(text):
            match = QUOTED_RE.match(text, pos)
            if not match:
                return content
            parts.append(re.sub(r"\\(.)", r"\1", match.group(1)))
            pos = match.end()
        return "".join(parts)
    return content


def norm_tag(tag):
    match = TAG_RE.match(tag)
    if not match:
        return tag
    return match.group(1).lower() + ":" + match.group(2)


def as_int(value):
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, integer_types):
        return int(value)
    if isinstance(value, float) and value == int(value):
        return int(value)
    if isinstance(value, string_types) and re.match(r"^\s*\d+\s*$", value):
        return int(value)
    raise ValueError(value)


def parse_srv(content):
    """'priority weight port target' (zone-file order) as SRV data."""
    parts = content.split()
    if len(parts) != 4:
        raise ValueError("SRV content must be 'priority weight port target'")
    return {"priority": parts[0], "weight": parts[1], "port": parts[2], "target": parts[3]}


def parse_caa(content):
    match = re.match(r'^\s*(\d+)\s+([A-Za-z0-9]+)\s+(.*?)\s*$', content)
    if not match:
        raise ValueError('CAA content must be \'flags tag "value"\'')
    value = match.group(3)
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return {"flags": match.group(1), "tag": match.group(2), "value": value}


def check_srv(data):
    """Validated SRV data, or raise ValueError naming the bad field."""
    out = {}
    for field, high in (("priority", 65535), ("weight", 65535), ("port", 65535)):
        if field not in data or data[field] is None:
            raise ValueError("SRV data needs %s" % field)
        try:
            out[field] = as_int(data[field])
        except ValueError:
            raise ValueError("SRV %s must be an integer, got %r" % (field, data[field]))
        if not 0 <= out[field] <= high:
            raise ValueError("SRV %s must be 0 to %d" % (field, high))
    target = data.get("target")
    if not isinstance(target, string_types) or not (target.strip() == "." or is_host(target.strip())):
        raise ValueError("SRV target must be a hostname, got %r" % (target,))
    out["target"] = norm_host(target) or "."
    extra = sorted(set(data) - set(("priority", "weight", "port", "target")))
    if extra:
        raise ValueError("SRV data has unknown keys %s" % ", ".join(extra))
    return out


def check_caa(data):
    out = {}
    try:
        out["flags"] = as_int(data.get("flags", 0))
    except ValueError:
        raise ValueError("CAA flags must be an integer, got %r" % (data.get("flags"),))
    if not 0 <= out["flags"] <= 255:
        raise ValueError("CAA flags must be 0 to 255")
    tag = data.get("tag")
    if not isinstance(tag, string_types) or not CAA_TAG_RE.match(tag.lower()):
        raise ValueError("CAA tag must be a word such as issue, issuewild or iodef, got %r" % (tag,))
    out["tag"] = tag.lower()
    value = data.get("value")
    if not isinstance(value, string_types) or not value:
        raise ValueError("CAA value must be a non-empty string")
    out["value"] = value
    extra = sorted(set(data) - set(("flags", "tag", "value")))
    if extra:
        raise ValueError("CAA data has unknown keys %s" % ", ".join(extra))
    return out


def value_key(rtype, content, data):
    """What tells two records of one name and type apart, normalised."""
    if rtype == "A":
        return str(ipaddress.IPv4Address(content.strip()))
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(content.strip()))
    if rtype in HOSTNAME_TYPES:
        return norm_host(content)
    if rtype == "TXT":
        return txt_value(content)
    if rtype == "SRV":
        data = check_srv(data)
        return (data["priority"], data["weight"], data["port"], data["target"])
    if rtype == "CAA":
        data = check_caa(data)
        return (data["flags"], data["tag"], data["value"])
    return content


def fqdn(name, zone_name):
    name = name.strip().lower()
    absolute = name.endswith(".")
    name = name.rstrip(".")
    if name in ("@", ""):
        return zone_name
    if not zone_name:
        return name
    if name == zone_name or name.endswith("." + zone_name):
        return name
    if absolute:
        return None
    return name + "." + zone_name


# --------------------------------------------------------------------------- records

class Record(object):
    """A record, declared or existing, in the form the diff compares."""

    def __init__(self, name, rtype, key, ttl=1, proxied=False, priority=None, comment=None, tags=(),
                 content=None, data=None, rid=None, raw=None, index=None):
        self.name = name
        self.type = rtype
        self.key = key
        self.ttl = ttl
        self.proxied = proxied
        self.priority = priority
        self.comment = comment or None
        self.tags = tuple(sorted(set(norm_tag(t) for t in tags)))
        self.content = content
        self.data = data
        self.id = rid
        self.raw = raw
        self.index = index

    @property
    def group(self):
        return (self.name, self.type)

    def attrs(self):
        return (self.ttl, self.proxied, self.priority if self.type == "MX" else None, self.comment or "", self.tags)

    def owned_by(self, owner):
        return owner in self.tags

    def payload(self):
        body = {"name": self.name, "type": self.type, "ttl": self.ttl, "tags": list(self.tags)}
        if self.type in PROXIABLE_TYPES:
            body["proxied"] = self.proxied
        if self.comment:
            body["comment"] = self.comment
        if self.type in ("SRV", "CAA"):
            body["data"] = dict(self.data)
        else:
            body["content"] = self.content
        if self.type == "MX":
            body["priority"] = self.priority
        return body

    def display_content(self):
        if self.type == "SRV":
            return "%d %d %d %s" % self.key
        if self.type == "CAA":
            return '%d %s "%s"' % self.key
        return self.content

    def public(self, with_id=True):
        out = {"name": self.name, "type": self.type, "content": self.display_content(), "ttl": self.ttl,
               "proxied": self.proxied, "comment": self.comment, "tags": list(self.tags)}
        if with_id and self.id:
            out = dict(id=self.id, **out)
        if self.type == "MX":
            out["priority"] = self.priority
        if self.type in ("SRV", "CAA"):
            out["data"] = dict(self.data) if self.data else None
        return out

    def line(self, owner):
        if self.type in ("CNAME", "NS", "PTR"):
            value = self.key + "."
        elif self.type == "MX":
            value = "%s %s." % (self.priority, self.key)
        elif self.type == "SRV":
            value = "%d %d %d %s." % self.key
        elif self.type == "TXT":
            value = '"%s"' % self.key.replace("\\", "\\\\").replace('"', '\\"')
        else:
            value = self.display_content()
        text = "%s. %s IN %s %s" % (self.name, "auto" if self.ttl == 1 else self.ttl, self.type, value)
        if self.proxied:
            text += " proxied"
        notes = []
        if self.comment:
            notes.append("comment=%r" % self.comment)
        tags = [t for t in self.tags if t != owner]
        if tags:
            notes.append("tags=" + ",".join(tags))
        if owner not in self.tags:
            notes.append("not owned")
        if notes:
            text += " ; " + " ; ".join(notes)
        return text


def from_api(raw):
    """A Record from a record the API returned (a dict)."""
    rtype = str(raw.get("type") or "").upper()
    content = raw.get("content")
    content = "" if content is None else str(content)
    data = raw.get("data") if isinstance(raw.get("data"), dict) else None
    priority = raw.get("priority")
    try:
        priority = as_int(priority) if priority is not None else None
    except ValueError:
        priority = None
    key = content
    try:
        if rtype == "SRV":
            if data is None:
                weight, port, target = content.split()
                data = {"priority": priority or 0, "weight": weight, "port": port, "target": target}
            data = check_srv(data)
        elif rtype == "CAA":
            data = check_caa(data if data is not None else parse_caa(content))
        key = value_key(rtype, content, data)
    except ValueError:
        data = None
    ttl = raw.get("ttl")
    try:
        ttl = as_int(ttl) if ttl is not None else 1
    except ValueError:
        ttl = 1
    return Record(str(raw.get("name") or "").lower().rstrip("."), rtype, key, ttl=ttl,
                  proxied=bool(raw.get("proxied")), priority=priority, comment=raw.get("comment"),
                  tags=raw.get("tags") or [], content=content, data=data, rid=raw.get("id"), raw=raw)


# --------------------------------------------------------------------------- validation

def check_input(records, state, owner_tag, batch_size):
    """Errors (one line each) for everything wrong with the options; nothing needs the API."""
    errors = []
    if not TAG_RE.match(owner_tag or "") or not TAG_RE.match(owner_tag).group(2):
        errors.append("owner_tag must be 'name:value' with a name of letters, digits, '-' and '_', got %r" % owner_tag)
        owner_tag = None
    owner_name = owner_tag.split(":", 1)[0].lower() if owner_tag else None
    if batch_size < 1:
        errors.append("batch_size must be at least 1")
    for index, rec in enumerate(records):
        problems = []
        where = "records[%d]" % index
        name, rtype = rec.get("name"), rec.get("type")
        if not name or not isinstance(name, string_types):
            problems.append("name is required")
        else:
            bare = name.strip().lower().rstrip(".")
            wild = bare[2:] if bare.startswith("*.") else ("" if bare == "*" else bare)
            if bare != "@" and wild and not (len(bare) <= 253 and HOST_RE.match(wild)):
                problems.append("name %r is not a valid DNS name (letters, digits, '-', '_', dots; punycode for "
                                "international names)" % name)
        if not rtype:
            problems.append("type is required")
        elif str(rtype).upper() not in SUPPORTED_TYPES:
            problems.append("type %r is not one of %s" % (rtype, ", ".join(SUPPORTED_TYPES)))
        rtype = str(rtype or "").upper()
        content, data = rec.get("content"), rec.get("data")
        if data is not None and rtype not in ("SRV", "CAA"):
            problems.append("data is only for SRV and CAA records; give content")
        if data is not None and content is not None:
            problems.append("give content or data, not both")
        if content is None and data is None and state == "present" and rtype in SUPPORTED_TYPES:
            problems.append("content is required" + (" (or data)" if rtype in ("SRV", "CAA") else ""))
        if content is not None and rtype in SUPPORTED_TYPES:
            try:
                if rtype == "A":
                    ipaddress.IPv4Address(content.strip())
                elif rtype == "AAAA":
                    ipaddress.IPv6Address(content.strip())
                elif rtype in HOSTNAME_TYPES:
                    if not is_host(content.strip()):
                        raise ValueError()
                elif rtype == "TXT":
                    if not content or len(content) > MAX_TXT:
                        problems.append("TXT content must be 1 to %d characters" % MAX_TXT)
                elif rtype == "SRV":
                    check_srv(parse_srv(content))
                elif rtype == "CAA":
                    check_caa(parse_caa(content))
            except ValueError as error:
                what = {"A": "an IPv4 address", "AAAA": "an IPv6 address"}.get(rtype, "a hostname")
                detail = str(error) if rtype in ("SRV", "CAA") else "content %r is not %s" % (content, what)
                problems.append(detail)
        if data is not None and rtype in ("SRV", "CAA"):
            try:
                (check_srv if rtype == "SRV" else check_caa)(data)
            except ValueError as error:
                problems.append(str(error))
        priority = rec.get("priority")
        if rtype == "MX" and state == "present" and priority is None:
            problems.append("MX records need a priority")
        if priority is not None and rtype != "MX":
            problems.append("priority is only for MX records" + (" (give it in data)" if rtype == "SRV" else ""))
        if priority is not None and not 0 <= priority <= 65535:
            problems.append("priority must be 0 to 65535, got %d" % priority)
        ttl = rec.get("ttl")
        if ttl is None:
            ttl = rec["ttl"] = 1
        if ttl != 1 and not 60 <= ttl <= 86400:
            problems.append("ttl must be 1 (automatic) or 60 to 86400, got %d" % ttl)
        if rec.get("proxied"):
            if rtype not in PROXIABLE_TYPES:
                problems.append("only A, AAAA and CNAME records can be proxied")
            elif ttl != 1:
                problems.append("a proxied record always has an automatic TTL: set ttl to 1 or proxied to false")
        comment = rec.get("comment")
        if comment is not None and ("\n" in comment or "\r" in comment):
            problems.append("comment must be one line")
        for tag in rec.get("tags") or []:
            match = TAG_RE.match(tag)
            if not match:
                problems.append("tag %r is not 'name:value' with a name of letters, digits, '-' and '_'" % tag)
            elif owner_name and match.group(1).lower() == owner_name:
                problems.append("tag %r has the name of owner_tag, which the module sets itself" % tag)
        extra = sorted(set(rec) - set(("name", "type", "content", "data", "ttl", "proxied", "priority", "comment",
                                       "tags")))
        if extra:
            problems.append("unknown keys %s" % ", ".join(extra))
        if problems:
            errors.append("%s (%s %s): %s" % (where, name or "?", rtype or "?", "; ".join(problems)))
    return errors


def declared_records(records, state, zone_name, owner_tag):
    """(Records, errors) once the zone name is known: names, duplicates and CNAME exclusivity."""
    out, errors = [], []
    seen = {}
    for index, rec in enumerate(records):
        rtype = rec["type"].upper()
        name = fqdn(rec["name"], zone_name)
        if name is None:
            errors.append("records[%d] (%s %s): name is outside the zone %s" % (index, rec["name"], rtype, zone_name))
            continue
        content, data = rec.get("content"), rec.get("data")
        key = None
        if rtype == "SRV" and (content is not None or data is not None):
            data = check_srv(data if data is not None else parse_srv(content))
        elif rtype == "CAA" and (content is not None or data is not None):
            data = check_caa(data if data is not None else parse_caa(content))
        if content is not None or data is not None:
            key = value_key(rtype, content or "", data)
        if content is not None:
            if rtype in ("A", "AAAA") or rtype in HOSTNAME_TYPES:
                content = key
        tags = list(rec.get("tags") or []) + [owner_tag]
        record = Record(name, rtype, key, ttl=rec["ttl"], proxied=bool(rec["proxied"]), priority=rec.get("priority"),
                        comment=rec.get("comment"), tags=tags, content=content, data=data, index=index)
        ident = (name, rtype, key if key is not None else "*")
        if ident in seen:
            errors.append("records[%d] (%s %s): declared twice, also as records[%d]" % (index, name, rtype, seen[ident]))
            continue
        seen[ident] = index
        out.append(record)
    if state == "present":
        by_name = {}
        for record in out:
            by_name.setdefault(record.name, []).append(record)
        for name, group in sorted(by_name.items()):
            cnames = [r for r in group if r.type == "CNAME"]
            if cnames and len(group) > 1:
                errors.append("records[%s] (%s): a CNAME cannot share its name with any other record"
                              % (",".join(str(r.index) for r in group), name))
    return out, errors


# --------------------------------------------------------------------------- planning

class Plan(object):
    def __init__(self):
        self.deletes = []        # existing Records
        self.updates = []        # (existing Record, declared Record)
        self.creates = []        # declared Records
        self.matched = {}        # declared index -> existing Record kept as it is or updated
        self.warnings = []

    def ops(self):
        """(kind, item, declared or existing Record): deletes, then updates, then creates."""
        out = [("deletes", {"id": e.id}, e) for e in self.deletes]
        out += [("puts", dict(d.payload(), id=e.id), d) for e, d in self.updates]
        out += [("posts", d.payload(), d) for d in self.creates]
        return out


def make_plan(declared, existing, state, purge, owner):
    plan = Plan()
    groups = {}
    for record in existing:
        groups.setdefault(record.group, []).append(record)
    declared_groups = {}
    for record in declared:
        declared_groups.setdefault(record.group, []).append(record)
    if state == "absent":
        for group, wanted in declared_groups.items():
            present = groups.get(group, [])
            doomed = []
            for d in wanted:
                if d.key is None:
                    doomed += [e for e in present if e.owned_by(owner)]
                    foreign = [e for e in present if not e.owned_by(owner)]
                    if foreign:
                        plan.warnings.append("%s %s: %d record(s) without the tag %s left alone"
                                             % (group[0], group[1], len(foreign), owner))
                else:
                    doomed += [e for e in present if e.key == d.key]
            seen = set()
            for e in doomed:
                if e.id not in seen:
                    seen.add(e.id)
                    plan.deletes.append(e)
        return plan
    for group, wanted in sorted(declared_groups.items()):
        remaining = sorted(groups.get(group, []), key=lambda e: (not e.owned_by(owner), str(e.key), e.id))
        leftovers = []
        for d in wanted:
            match = next((e for e in remaining if e.key == d.key), None)
            if match is None:
                leftovers.append(d)
                continue
            remaining.remove(match)
            plan.matched[d.index] = match
            if match.attrs() != d.attrs():
                plan.updates.append((match, d))
        owned = [e for e in remaining if e.owned_by(owner)]
        for d in leftovers:
            if owned:
                e = owned.pop(0)
                remaining.remove(e)
                plan.matched[d.index] = e
                plan.updates.append((e, d))
            else:
                plan.creates.append(d)
        foreign = [e for e in remaining if not e.owned_by(owner)]
        if foreign:
            plan.warnings.append("%s %s: %d existing record(s) without the tag %s left alone: %s"
                                 % (group[0], group[1], len(foreign), owner,
                                    ", ".join(e.display_content() for e in foreign)))
        if owned:
            if purge:
                plan.deletes += owned
            else:
                plan.warnings.append("%s %s: %d owned record(s) not declared kept (purge is false): %s"
                                     % (group[0], group[1], len(owned), ", ".join(e.display_content() for e in owned)))
    plan.updates.sort(key=lambda pair: pair[1].index)
    plan.creates.sort(key=lambda d: d.index)
    if purge:
        for group, present in sorted(groups.items()):
            if group not in declared_groups:
                plan.deletes += [e for e in present if e.owned_by(owner)]
    return plan


def cname_conflicts(plan, existing):
    """Names that would hold a CNAME next to other records after the plan."""
    gone = set(e.id for e in plan.deletes)
    final = {}
    for e in existing:
        if e.id not in gone:
            final.setdefault(e.name, set()).add(e.type)
    for d in plan.creates:
        final.setdefault(d.name, set()).add(d.type)
    problems = []
    for name, types in sorted(final.items()):
        if "CNAME" in types and len(types) > 1:
            problems.append("%s would hold a CNAME and %s records" % (name, ", ".join(sorted(types - set(["CNAME"])))))
    return problems


# --------------------------------------------------------------------------- API

def list_records(cf, zone_id):
    """Every record of the zone: one call with the largest page size the schema allows, paging only if needed.

    A raw GET: the SDK would build a model from its 21-way record union for each record, which costs more
    than the call itself on a large zone, and the module wants plain dicts anyway.
    """
    found = []
    number = 1
    while True:
        params = {"per_page": PER_PAGE}
        if number > 1:
            params["page"] = number
        envelope = cf.request("GET", "/zones/%s/dns_records" % zone_id, params=params) or {}
        items = [item for item in (envelope.get("result") or []) if isinstance(item, dict)]
        found.extend(items)
        info = envelope.get("result_info") or {}
        total_pages, total_count = info.get("total_pages"), info.get("total_count")
        if not items:
            return found
        if total_pages is not None:
            if number >= int(total_pages):
                return found
        elif total_count is None or len(found) >= int(total_count):
            return found
        number += 1


class Runner(object):
    def __init__(self, cf, zone_id, declared, state, purge, owner):
        self.cf = cf
        self.zone_id = zone_id
        self.declared = declared
        self.state = state
        self.purge = purge
        self.owner = owner
        self.batch_size = cf.params["batch_size"]
        self.model = {}
        self.pending = []
        self.applied = 0
        self.replans = 0

    def load(self, raw_records):
        self.model = dict((r["id"], r) for r in raw_records)

    def existing(self):
        return [from_api(r) for r in self.model.values()]

    def plan(self):
        return make_plan(self.declared, self.existing(), self.state, self.purge, self.owner)

    def _send(self):
        chunk = self.pending[:self.batch_size]
        body = {"deletes": [], "puts": [], "posts": []}
        for kind, item, dummy in chunk:
            body[kind].append(item)
        # POST /zones/{zone_id}/dns_records/batch, what sdk.dns.records.batch() sends, taken raw so that the
        # response is not parsed into the SDK's record models (plain dicts are what the module keeps).
        body = dict((k, v) for k, v in body.items() if v)
        envelope = self.cf.sdk.post("/zones/%s/dns_records/batch" % self.zone_id, cast_to=object, body=body)
        return (envelope or {}).get("result") or {}

    def _find(self):
        """After an error that may have left the batch applied: list again, send only what is missing."""
        self.replans += 1
        self.load(list_records(self.cf, self.zone_id))
        self.pending = self.plan().ops()
        return DONE if not self.pending else None

    def apply(self, ops):
        self.pending = list(ops)
        while self.pending:
            try:
                response = self.cf.client.create(self._send, find=self._find)
            except CloudflareError as error:
                self.cf.fail(self._explain(error), status=error.status, changes_applied=self.applied)
            if response is DONE:
                return
            chunk, self.pending = self.pending[:self.batch_size], self.pending[self.batch_size:]
            self.applied += len(chunk)
            for kind, item, dummy in chunk:
                if kind == "deletes":
                    self.model.pop(item["id"], None)
            for kind in ("patches", "puts", "posts"):
                for result in response.get(kind) or []:
                    if isinstance(result, dict) and result.get("id"):
                        self.model[result["id"]] = result

    def _explain(self, error):
        text = str(error)
        match = BATCH_INDEX_RE.search(text)
        if match:
            kind, position = match.group(1), int(match.group(2))
            items = [record for k, item, record in self.pending[:self.batch_size] if k == kind]
            if position < len(items):
                record = items[position]
                where = ("records[%d] " % record.index) if record.index is not None else ""
                text += " (%s%s %s %s)" % (where, record.name, record.type, record.display_content())
        if self.applied:
            text += "; %d earlier change(s) were applied, run again to finish" % self.applied
        return text


def lookup_zone(cf, zone):
    """The zone id: no call for an id, one list call (filtered by name, and by account if given) for a name.

    The client base's zone_id() pages until an empty page, which is a second call for every lookup.
    """
    if ID_PATTERN.match(zone):
        return zone
    name = zone.rstrip(".").lower()
    scope = {}
    account = cf.params.get("account")
    if account:
        scope = {"account": {"id": account} if ID_PATTERN.match(account) else {"name": account}}
    page = cf.call(cf.sdk.zones.list, name=name, per_page=50, **scope)
    found = [z for z in (page.result or []) if str(z.name).lower() == name]
    if not found:
        cf.fail("zone %r not found (or the API token cannot see it); nothing was changed" % zone)
    return found[0].id


def zone_name_for(cf, zone, zone_id, raw_records):
    if not ID_PATTERN.match(zone):
        return zone.rstrip(".").lower()
    for raw in raw_records:
        if raw.get("zone_name"):
            return str(raw["zone_name"]).lower()
    found = cf.call(cf.sdk.zones.get, zone_id=zone_id)
    return found.name.lower()


def needs_zone_name(records):
    for rec in records:
        name = (rec.get("name") or "").strip()
        if not name.endswith("."):
            return True
    return False


def fail_input(cf, errors):
    calls = {} if cf._client is not None else {"api_calls": 0}
    cf.fail("invalid records, nothing was changed:\n" + "\n".join(errors), **calls)


def main():
    record_options = dict(
        name=dict(type="str"),
        type=dict(type="str"),
        content=dict(type="str"),
        data=dict(type="dict"),
        ttl=dict(type="int", default=1),
        proxied=dict(type="bool", default=False),
        priority=dict(type="int"),
        comment=dict(type="str"),
        tags=dict(type="list", elements="str", default=[]),
    )
    cf = CloudflareModule(
        argument_spec=dict(
            zone=dict(type="str", required=True),
            records=dict(type="list", elements="dict", required=True, options=record_options),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            purge=dict(type="bool", default=False),
            owner_tag=dict(type="str", default="managed-by:blackroad-infra"),
            batch_size=dict(type="int", default=200),
        ),
    )
    params = cf.params
    records, state, purge = params["records"], params["state"], params["purge"]
    owner = norm_tag(params["owner_tag"] or "")
    zone = params["zone"].strip()

    errors = check_input(records, state, params["owner_tag"] or "", params["batch_size"])
    if errors:
        fail_input(cf, errors)

    # Zone names are known before any call; a zone id needs the records (or one zone read) for relative names.
    zone_name = None if ID_PATTERN.match(zone) else zone.rstrip(".").lower()
    if zone_name is not None:
        dummy, errors = declared_records(records, state, zone_name, owner)
        if errors:
            fail_input(cf, errors)

    zone_id = lookup_zone(cf, zone)
    raw = list_records(cf, zone_id)
    if zone_name is None:
        zone_name = zone_name_for(cf, zone, zone_id, raw) if needs_zone_name(records) else ""
    declared, errors = declared_records(records, state, zone_name, owner)
    if errors:
        fail_input(cf, errors)

    runner = Runner(cf, zone_id, declared, state, purge, owner)
    runner.load(raw)
    existing = runner.existing()
    plan = runner.plan()
    for warning in plan.warnings:
        cf.module.warn(warning)
    if state == "present":
        conflicts = cname_conflicts(plan, existing)
        if conflicts:
            cf.fail("these records cannot coexist (a CNAME must be the only record of its name); nothing was changed: "
                    + "; ".join(conflicts))
    ops = plan.ops()
    changed = bool(ops)

    if changed and not cf.check_mode:
        runner.apply(ops)
        final = make_plan(declared, runner.existing(), state, purge, owner)
        now = dict((d.index, final.matched.get(d.index)) for d in declared)
    else:
        now = {}
        updated = dict((d.index, (e, d)) for e, d in plan.updates)
        for d in declared:
            if d.index in updated:
                e, d = updated[d.index]
                predicted = Record(d.name, d.type, d.key, d.ttl, d.proxied, d.priority, d.comment, d.tags,
                                   d.content, d.data, rid=e.id)
                now[d.index] = predicted
            elif d.index in plan.matched:
                now[d.index] = plan.matched[d.index]
            else:
                now[d.index] = d

    def current(d):
        record = now.get(d.index)
        return (record or d).public()

    result_records = [current(d) for d in declared] if state == "present" else []
    changes = dict(
        created=[current(d) for d in plan.creates],
        updated=[current(d) for e, d in plan.updates],
        deleted=[e.public() for e in plan.deletes],
    )
    result = dict(zone_id=zone_id, records=result_records, changes=changes)
    if cf.diff_mode:
        before = sorted(e.line(owner) for e in plan.deletes) + sorted(e.line(owner) for e, d in plan.updates)
        after = sorted(d.line(owner) for e, d in plan.updates) + sorted(d.line(owner) for d in plan.creates)
        result["diff"] = dict_diff("\n".join(sorted(before)) + ("\n" if before else ""),
                                   "\n".join(sorted(after)) + ("\n" if after else ""),
                                   header="zone %s" % (zone_name or zone_id))
    cf.exit(changed, **result)


if __name__ == "__main__":
    main()
