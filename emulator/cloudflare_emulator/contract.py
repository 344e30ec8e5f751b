"""Contract checks: every request and response is validated against the official
OpenAPI schema where the operation exists there, otherwise against the request and
response types of the official ``cloudflare`` Python SDK.

Both sources are loaded lazily (a background thread starts loading the OpenAPI
file once the server listens) so that startup stays well under a second.
Validators are built per operation on first use and cached.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Iterator

OPENAPI_PATH = os.environ.get(
    "CLOUDFLARE_EMULATOR_OPENAPI", "/work/shared/reference/cloudflare/openapi-2024-08-06.json")

# Arrays longer than this are checked on a sample (first and last SAMPLE/2 items):
# full jsonschema validation of 10,000 KV pairs or DNS records takes seconds.
SAMPLE = 200

# The response envelope from common.yaml, applied to every JSON API response,
# including errors (which the per-operation schemas do not cover).
ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["success", "errors", "messages"],
    "properties": {
        "success": {"type": "boolean"},
        "errors": {"$ref": "#/definitions/messages"},
        "messages": {"$ref": "#/definitions/messages"},
        "result_info": {"type": ["object", "null"]},
    },
    "definitions": {"messages": {"type": "array", "items": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "integer", "minimum": 1000}, "message": {"type": "string"}}}}},
}

# Properties never required in request bodies, whatever the schema says (see CONTRACT.md).
REQUEST_NOT_REQUIRED = {"id"}

# Known defects in the 2024-08-06 schema, relaxed so that valid traffic is not flagged:
# component -> properties that are not actually required.  The catch-all ingress rule
# is sent without a hostname by cloudflared, the dashboard and Terraform alike.
RELAXED_REQUIRED = {"tunnel_ingressRule": {"hostname"}}

# Components replaced because the 2024-08-06 schema predates values the current API
# returns and the current SDK types accept (usage_model "standard"; binding kinds such
# as secret_text/plain_text/d1 that the old oneOf does not list).
COMPONENT_OVERRIDES = {
    "workers_usage_model": {"type": "string", "enum": ["standard", "bundled", "unbound"]},
    "workers_binding": {"type": "object", "required": ["type"],
                        "properties": {"type": {"type": "string"}, "name": {"type": "string"}}},
    "workers_schemas-binding": {"type": "object", "required": ["type"],
                                "properties": {"type": {"type": "string"}, "name": {"type": "string"}}},
    # The current API and SDK (Optional[str] / Optional[list]) accept null to mean
    # "none"; community.general.cloudflare_dns sends "comment": null on every create.
    "dns-records_comment": {"type": "string", "nullable": True},
    "dns-records_tags": {"type": "array", "items": {"type": "string"}, "nullable": True},
    # Its "result" is typed object, which contradicts every D1 list response (arrays).
    "d1_api-response-common": {"type": "object", "required": ["success", "errors", "messages"]},
}

# Per-operation request properties the old schema requires but the current SDK no
# longer sends (Workers custom domains dropped "environment").
OP_NOT_REQUIRED = {("PUT", "/accounts/{account_id}/workers/domains"): {"environment"}}

# Operations missing from the 2024-08-06 schema: the SDK types are the contract.
# (method, template) -> (request TypedDict or None, response model, "list"|"object")
SDK_CONTRACTS = {
    ("POST", "/zones/{zone_id}/dns_records/batch"):
        ("cloudflare.types.dns.record_batch_params:RecordBatchParams",
         "cloudflare.types.dns.record_batch_response:RecordBatchResponse", "object"),
    ("POST", "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/bulk/get"):
        ("cloudflare.types.kv.namespace_bulk_get_params:NamespaceBulkGetParams",
         "cloudflare.types.kv.namespace_bulk_get_response:NamespaceBulkGetResponse", "object"),
    ("GET", "/accounts/{account_id}/r2/buckets"):
        (None, "cloudflare.types.r2.bucket_list_response:BucketListResponse", "object"),
    ("POST", "/accounts/{account_id}/r2/buckets"):
        ("cloudflare.types.r2.bucket_create_params:BucketCreateParams",
         "cloudflare.types.r2.bucket:Bucket", "object"),
    ("GET", "/accounts/{account_id}/r2/buckets/{bucket_name}"):
        (None, "cloudflare.types.r2.bucket:Bucket", "object"),
    ("DELETE", "/accounts/{account_id}/r2/buckets/{bucket_name}"): (None, None, "object"),
    ("PUT", "/accounts/{account_id}/workers/scripts/{script_name}/secrets"):
        ("cloudflare.types.workers.scripts.secret_update_params:SecretUpdateParams",
         "cloudflare.types.workers.scripts.secret_update_response:SecretUpdateResponse", "object"),
    ("GET", "/accounts/{account_id}/workers/scripts/{script_name}/secrets"):
        (None, "cloudflare.types.workers.scripts.secret_list_response:SecretListResponse", "list"),
    ("GET", "/accounts/{account_id}/workers/scripts/{script_name}/secrets/{secret_name}"):
        (None, "cloudflare.types.workers.scripts.secret_get_response:SecretGetResponse", "object"),
    ("DELETE", "/accounts/{account_id}/workers/scripts/{script_name}/secrets/{secret_name}"):
        (None, None, "object"),
}


# Operations in the old schema whose shape has since changed; the SDK wins.  R2 bucket
# listing used to return an array and now returns {"buckets": [...]}.
PREFER_SDK = {("GET", "/accounts/{account_id}/r2/buckets"), ("POST", "/accounts/{account_id}/r2/buckets"),
              ("GET", "/accounts/{account_id}/r2/buckets/{bucket_name}"),
              ("DELETE", "/accounts/{account_id}/r2/buckets/{bucket_name}")}


def _import(spec):
    mod, _sep, name = spec.partition(":")
    return getattr(importlib.import_module(mod), name)


def _sample(items):
    if isinstance(items, list) and len(items) > SAMPLE:
        return items[:SAMPLE // 2] + items[-SAMPLE // 2:]
    return items


def _sample_body(body):
    """Bound the work: sample top-level arrays and arrays one level down."""
    if isinstance(body, list):
        return _sample(body)
    if isinstance(body, dict):
        return {k: _sample(v) for k, v in body.items()}
    return body


class Contract:
    def __init__(self, path=OPENAPI_PATH):
        self.path = path
        self._doc = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self._cache = {}
        self._converted = {"request": {}, "response": {}}
        self._envelope = None
        self.error = None
        self._build_lock = threading.Lock()
        self._skip = set()

    # ------------------------------------------------------------------ loading
    def start_loading(self):
        threading.Thread(target=self._load, name="openapi-loader", daemon=True).start()

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
            self._doc = doc
            import jsonschema  # noqa: F401  (warm the import off the request path)
        except (OSError, ValueError, ImportError) as exc:
            self.error = f"contract checks disabled: {exc}"
        finally:
            self._loaded.set()

    @property
    def doc(self):
        if not self._loaded.is_set():
            with self._lock:
                if self._doc is None and not self._loaded.is_set():
                    self._load()
        self._loaded.wait()
        return self._doc

    def source(self, method, template):
        if (method, template) in PREFER_SDK:
            return "sdk"
        doc = self.doc
        if doc and method.lower() in (doc["paths"].get(template) or {}):
            return "openapi"
        if (method, template) in SDK_CONTRACTS:
            return "sdk"
        return None

    # ------------------------------------------------------------------ conversion
    def _resolve(self, ref):
        node = self._doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _convert(self, node, mode, defs):
        """OpenAPI 3.0 schema -> JSON Schema draft 4, refs moved into ``defs``.

        nullable becomes anyOf [..., null]; oneOf becomes anyOf (the DNS record
        variants overlap, so strict oneOf rejects valid records); readOnly
        properties are not required in requests, writeOnly ones not in responses.
        """
        if isinstance(node, list):
            return [self._convert(n, mode, defs) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            key = ref.rsplit("/", 1)[-1] + "_" + str(abs(hash(ref)) % 10 ** 8)
            if key not in defs:
                defs[key] = {}  # placeholder breaks recursion
                target = COMPONENT_OVERRIDES.get(ref.rsplit("/", 1)[-1]) or self._resolve(ref)
                relaxed = RELAXED_REQUIRED.get(ref.rsplit("/", 1)[-1])
                if relaxed and isinstance(target.get("required"), list):
                    target = dict(target, required=[r for r in target["required"] if r not in relaxed])
                defs[key] = self._convert(target, mode, defs)
            return {"$ref": "#/definitions/" + key}
        out = {}
        # "required" often sits in a different allOf/oneOf member than the property that
        # declares readOnly, so the flag is looked up by name across the document.
        skip_props = self._skip
        for k, v in node.items():
            if k in ("example", "examples", "discriminator", "xml", "externalDocs", "deprecated", "format",
                     "readOnly", "writeOnly", "nullable") or k.startswith("x-"):
                continue
            if k == "oneOf":
                out["anyOf"] = self._convert(v, mode, defs)
            elif k == "properties":
                out[k] = {pk: self._convert(pv, mode, defs) for pk, pv in v.items()}
            elif k == "required" and isinstance(v, list):
                req = [r for r in v if r not in skip_props]
                if req:
                    out[k] = req
            elif k in ("items", "additionalProperties", "not", "allOf", "anyOf"):
                out[k] = self._convert(v, mode, defs)
            else:
                out[k] = v
        if node.get("nullable"):
            return {"anyOf": [out, {"type": "null"}]}
        return out

    def _validator(self, key, schema, mode, extra_skip=()):
        if key in self._cache:
            return self._cache[key]
        import jsonschema
        with self._build_lock:
            defs = {}
            self._skip = _flagged_properties(self._doc, schema, "readOnly" if mode == "request" else "writeOnly")
            if mode == "request":
                # Schema defect: dns-records_dns-record requires the server-assigned "id" in
                # request bodies too; the API assigns ids, so requests never need one.
                self._skip |= REQUEST_NOT_REQUIRED | set(extra_skip)
            root = self._convert(schema, mode, defs)
            if defs:
                root = {"allOf": [root], "definitions": defs}
            v = jsonschema.Draft4Validator(root)
            self._cache[key] = v
        return v

    @staticmethod
    def _errors(validator, instance, limit=5):
        out = []
        for err in validator.iter_errors(instance):
            # anyOf failures are unreadable: report the best branch's reason.
            best = err
            if err.context:
                best = sorted(err.context, key=lambda e: -len(e.path))[0]
            loc = "/".join(str(p) for p in best.absolute_path) or "(root)"
            out.append(f"{loc}: {best.message[:300]}")
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------ checks
    def _op(self, method, template):
        doc = self.doc
        if not doc:
            return None
        item = doc["paths"].get(template) or {}
        op = item.get(method.lower())
        if op is None:
            return None
        params = []
        for p in list(item.get("parameters") or []) + list(op.get("parameters") or []):
            params.append(self._resolve(p["$ref"]) if "$ref" in p else p)
        return op, params

    def check_request(self, method, template, query, body, content_type, path_params):
        """Return a list of problems with the request (empty when it conforms)."""
        src = self.source(method, template)
        if src == "openapi":
            op, params = self._op(method, template)
            problems = []
            for p in params:
                if p.get("in") != "query" or p["name"] not in query:
                    continue
                schema = p.get("schema") or {}
                value = _coerce(query[p["name"]], self._resolve(schema["$ref"]) if "$ref" in schema else schema)
                v = self._validator(("q", method, template, p["name"]), schema, "request")
                problems += [f"query {p['name']}={query[p['name']]!r}: {e.split(': ', 1)[-1]}"
                             for e in self._errors(v, value)]
            rb = op.get("requestBody")
            if rb and "$ref" in rb:
                rb = self._resolve(rb["$ref"])
            if rb and content_type == "application/json":
                media = (rb.get("content") or {}).get("application/json")
                if media and "schema" in media:
                    # Old DELETE operations declare a required "{}" body that no client sends.
                    if body is None and rb.get("required") and method != "DELETE":
                        problems.append("(root): request body is required")
                    elif body is not None:
                        v = self._validator(("req", method, template), media["schema"], "request",
                                            OP_NOT_REQUIRED.get((method, template), ()))
                        problems += [f"body {e}" for e in self._errors(v, _sample_body(body))]
            return problems
        if src == "sdk":
            req_spec = SDK_CONTRACTS[(method, template)][0]
            if req_spec and content_type == "application/json" and isinstance(body, dict):
                return self._pydantic_errors(("sdkreq", req_spec), req_spec,
                                             dict(_sample_body(body), **path_params), typed_dict=True)
        return []

    def check_response(self, method, template, status, body):
        problems = []
        if self._envelope is None:
            import jsonschema
            self._envelope = jsonschema.Draft4Validator(ENVELOPE_SCHEMA)
        problems += [f"envelope {e}" for e in self._errors(self._envelope, body)]
        if not (200 <= status < 300) or not isinstance(body, dict) or not body.get("success"):
            return problems
        src = self.source(method, template)
        if src == "openapi":
            op, _source = self._op(method, template)
            resp = (op.get("responses") or {}).get(str(status)) or (op.get("responses") or {}).get("2XX")
            if resp and "$ref" in resp:
                resp = self._resolve(resp["$ref"])
            media = ((resp or {}).get("content") or {}).get("application/json")
            if media and "schema" in media:
                v = self._validator(("resp", method, template, status), media["schema"], "response")
                sampled = dict(body, result=_sample(body.get("result")))
                problems += [f"result {e}" for e in self._errors(v, sampled)]
        elif src == "sdk":
            _req, resp_spec, shape = SDK_CONTRACTS[(method, template)]
            result = body.get("result")
            if resp_spec and result is not None:
                items = _sample(result) if shape == "list" else [result]
                if shape == "list" and not isinstance(result, list):
                    problems.append("result: expected a list")
                    items = []
                for i, item in enumerate(items):
                    problems += self._pydantic_errors(("sdkresp", resp_spec), resp_spec, item, prefix=f"result[{i}]")
        return problems

    def _pydantic_errors(self, key, spec, value, typed_dict=False, prefix="body"):
        import pydantic
        adapter = self._cache.get(key)
        if adapter is None:
            tp = _import(spec)
            # TypeAdapter handles TypedDicts, models and the SDK's Union aliases alike.
            adapter = pydantic.TypeAdapter(tp)
            self._cache[key] = adapter
        try:
            out = adapter.validate_python(value)
            # pydantic validates Iterable[...] fields lazily (it returns a generator), so
            # drain them to surface item errors (e.g. batch "posts" that is not a list).
            if isinstance(out, dict):
                for k, v in out.items():
                    if isinstance(v, Iterator):
                        try:
                            list(v)
                        except pydantic.ValidationError as exc:
                            return [f"{prefix} {k}/{'/'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                    for e in exc.errors()[:5]]
                    elif k in ("deletes", "patches", "puts", "posts") and isinstance(v, str):
                        return [f"{prefix} {k}: expected a list"]
        except pydantic.ValidationError as exc:
            return [f"{prefix} {'/'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        return []


def _flagged_properties(doc, schema, flag):
    """Names of properties flagged readOnly/writeOnly anywhere in the schema graph reachable
    from ``schema`` (scoped to one operation, following $refs)."""
    schemas = doc["components"]["schemas"]

    def deref(node):
        if isinstance(node, dict) and "$ref" in node:
            return schemas.get(node["$ref"].rsplit("/", 1)[-1], {})
        return node

    out, seen, stack = set(), set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and "$ref" in node:
            if node["$ref"] in seen:
                continue
            seen.add(node["$ref"])
            node = deref(node)
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name, sch in props.items():
                    target = deref(sch)
                    if isinstance(target, dict) and target.get(flag):
                        out.add(name)
            stack.extend(v for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _coerce(raw, schema):
    """Query strings are text; convert to the schema's declared type before validating."""
    t = schema.get("type")
    try:
        if t == "integer":
            return int(raw)
        if t == "number":
            f = float(raw)
            return int(f) if f.is_integer() else f
        if t == "boolean":
            return {"true": True, "false": False}.get(raw.lower(), raw)
    except (TypeError, ValueError):
        return raw
    return raw


def report(routes, contract=None):
    """Markdown table: which contract each implemented operation is checked against."""
    contract = contract or Contract()
    lines = [
        "# Contract coverage",
        "",
        "Generated by `python -m cloudflare_emulator --contract-report`. Every request and every",
        "JSON response of the operations below is validated; a request that fails answers 400 and",
        "is recorded as a `request` violation, a response that fails is recorded as a `response`",
        "violation (an emulator bug).",
        "",
        f"- `openapi`: `{os.path.basename(contract.path)}` (OpenAPI 3.0 converted to JSON Schema",
        "  draft 4: `nullable` → `anyOf [..., null]`, `oneOf` → `anyOf` because the DNS record",
        "  variants overlap, `format` ignored, readOnly/writeOnly honoured). Query parameters are",
        "  coerced to their declared type and validated too.",
        "- `sdk`: the official `cloudflare` SDK types: request bodies through",
        "  `pydantic.TypeAdapter(<Params TypedDict>)` (path parameters merged in), results through",
        "  `<Model>.model_validate`.",
        f"- Arrays longer than {SAMPLE} items (KV bulk bodies, long record lists) are validated on a",
        f"  sample: the first and last {SAMPLE // 2} items. The envelope (common.yaml) is checked on",
        "  every JSON response, errors included.",
        "- Multipart bodies (Worker uploads, KV value writes) and raw-byte responses are not",
        "  schema-checked; the emulator parses them itself and rejects malformed parts.",
        "",
        "Known defects of the 2024-08-06 schema, relaxed so that valid traffic is not flagged:",
        "",
        "- request bodies never need `id` (`dns-records_dns-record` requires the server-assigned id);",
        "- `tunnel_ingressRule.hostname` is optional (the catch-all rule has none);",
        "- `PUT /accounts/{account_id}/workers/domains` does not need `environment` (the SDK dropped it);",
        "- `workers_usage_model` accepts `standard`; Worker bindings accept any `type` (the old oneOf",
        "  lists only a few kinds); `d1_api-response-common` does not constrain `result`;",
        "- DELETE operations may omit the `{}` body the old schema declares required;",
        "- R2 bucket operations use the SDK types (the listing became `{\"buckets\": [...]}`);",
        "- DNS record `comment` and `tags` may be `null` (the current API and SDK accept and return it;",
        "  community.general.cloudflare_dns sends and reads it).",
        "",
        "Other unset optional fields (tunnel `conns_active_at`, ...) are omitted rather than",
        "`null` where the schema types them as non-nullable strings. The SDK's `BatchPatchParam`",
        "requires `name`, `type` and `ttl` in DNS batch patches, so the emulator does too.",
        "",
        "| Method | Path | Contract | Request | Response |",
        "|---|---|---|---|---|",
    ]
    for method, template in routes:
        src = contract.source(method, template)
        if src == "openapi":
            op, _source = contract._op(method, template)
            rb = op.get("requestBody") or {}
            if "$ref" in rb:
                rb = contract._resolve(rb["$ref"])
            kinds = ", ".join(sorted((rb.get("content") or {}).keys())) or "-"
            req, resp = kinds, "schema"
        elif src == "sdk":
            req_spec, resp_spec, _shape = SDK_CONTRACTS[(method, template)]
            req = f"`{req_spec.split(':')[1]}`" if req_spec else "-"
            resp = f"`{resp_spec.split(':')[1]}`" if resp_spec else "envelope only"
        else:
            src, req, resp = "none", "-", "envelope only"
        lines.append(f"| {method} | `{template}` | {src} | {req} | {resp} |")
    return "\n".join(lines) + "\n"
