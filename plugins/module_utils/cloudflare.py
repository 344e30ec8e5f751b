# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One client base for every Cloudflare module of this collection.

It builds the official SDK client, merges the shared options that the
``blackroad.infra.cloudflare`` doc fragment documents, resolves accounts and
zones by name or id, owns the retry policy, and turns every API failure into
one ``fail_json`` message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

SDK_REQUIREMENT = "cloudflare>=5.9,<5.10"

try:
    import cloudflare
    import httpx
except ImportError:
    HAS_CLOUDFLARE = False
    CLOUDFLARE_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDFLARE = True
    CLOUDFLARE_IMPORT_ERROR = None

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

# What each failing status most likely means for the person running the play.
STATUS_HINTS = {
    400: "the request was rejected as invalid",
    401: "the API token is missing or invalid",
    403: "the API token is invalid or lacks a permission this module needs",
    404: "the resource does not exist or the token cannot see it",
    409: "it conflicts with an existing resource",
    429: "rate limited (1,200 requests per 5 minutes per token); still limited after retrying",
}


def cloudflare_argument_spec():
    """Options every Cloudflare module takes (documented in the doc fragment)."""
    return dict(
        api_token=dict(type="str", no_log=True, fallback=(env_fallback, ["CLOUDFLARE_API_TOKEN"])),
        api_base_url=dict(type="str", fallback=(env_fallback, ["CLOUDFLARE_BASE_URL"]), default=DEFAULT_BASE_URL),
        request_timeout=dict(type="float", default=30.0),
        max_retries=dict(type="int", default=4),
    )


def account_argument_spec():
    """The ``account`` option of modules that work on account resources."""
    return dict(account=dict(type="str", fallback=(env_fallback, ["CLOUDFLARE_ACCOUNT_ID"])))


class CloudflareError(Exception):
    """An API failure, already phrased for the user."""

    def __init__(self, message, status=None, errors=None):
        super(CloudflareError, self).__init__(message)
        self.status = status
        self.errors = errors or []


def _error_text(errors):
    parts = []
    for error in errors or []:
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
        else:
            code, message = getattr(error, "code", None), getattr(error, "message", None)
        parts.append("[%s] %s" % (code, message) if code is not None else str(message))
    return "; ".join(parts)


def _describe(method, url, status, errors):
    path = str(url)
    marker = path.find("/client/v4")
    if marker >= 0:
        path = path[marker + len("/client/v4"):]
    path = path.split("?", 1)[0]
    hint = STATUS_HINTS.get(status)
    if hint is None and status is not None and status >= 500:
        hint = "Cloudflare had a server error; still failing after retrying"
    text = "Cloudflare API %s %s failed" % (method, path)
    if status is not None:
        text += " with HTTP %s" % status
    if hint:
        text += " (%s)" % hint
    details = _error_text(errors)
    if details:
        text += ": " + details
    return text


class CloudflareClient:
    """The SDK client plus the retry policy and the call count.

    The SDK's own retries are turned off: it retries a POST with no
    idempotency key, which can create a resource twice. Here reads and
    whole-resource writes (GET, PUT, PATCH, DELETE) are retried, and a create
    is retried only after ``find`` has confirmed that the first attempt did not
    land.
    """

    RETRY_STATUSES = (408, 409, 429, 500, 502, 503, 504)
    MAX_BACKOFF = 60.0

    def __init__(self, api_token, base_url=DEFAULT_BASE_URL, timeout=30.0, max_retries=4, sleep=time.sleep):
        self.calls = 0
        self.writes = 0
        self.max_retries = max_retries
        self._sleep = sleep
        self._failed_envelope = None
        http_client = httpx.Client(
            timeout=timeout,
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )
        self.sdk = cloudflare.Cloudflare(
            api_token=api_token, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client)

    def _on_request(self, request):
        self.calls += 1
        if request.method != "GET":
            self.writes += 1

    def _on_response(self, response):
        # The SDK hands back None for a 200 whose envelope says success: false;
        # remember the envelope so call() can report it instead.
        if response.status_code >= 400 or "json" not in response.headers.get("content-type", ""):
            return
        response.read()
        try:
            body = json.loads(response.content)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("success") is False:
            self._failed_envelope = (response.request.method, response.request.url, response.status_code,
                                     body.get("errors"))

    def _wait(self, attempt, error):
        delay = min(2.0 ** attempt * 0.5, self.MAX_BACKOFF)
        response = getattr(error, "response", None)
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    delay = min(float(retry_after), self.MAX_BACKOFF)
                except ValueError:
                    pass
        self._sleep(delay)

    def _retryable(self, error):
        if isinstance(error, (cloudflare.APIConnectionError, cloudflare.APITimeoutError)):
            return True
        return isinstance(error, cloudflare.APIStatusError) and error.status_code in self.RETRY_STATUSES

    def call(self, func, *args, **kwargs):
        """Run an idempotent SDK call (read, PUT, PATCH, DELETE) with retries."""
        return self._run(func, args, kwargs, find=None, create=False)

    def create(self, func, *args, **kwargs):
        """Run a create (POST) that must never happen twice.

        ``find`` (keyword) is called before each retry after an error that may
        have left the create applied (5xx, dropped connection, timeout): what it
        returns, if anything, is the created resource. A 429 means the request
        was refused, so it is retried without looking.
        """
        find = kwargs.pop("find")
        return self._run(func, args, kwargs, find=find, create=True)

    def _run(self, func, args, kwargs, find, create):
        attempt = 0
        while True:
            self._failed_envelope = None
            try:
                result = func(*args, **kwargs)
            except cloudflare.APIStatusError as error:
                if attempt >= self.max_retries or not self._retryable(error):
                    raise self._as_error(error)
                if create and error.status_code != 429:
                    self._wait(attempt, error)
                    found = find()
                    if found is not None:
                        return found
                else:
                    self._wait(attempt, error)
                attempt += 1
                continue
            except (cloudflare.APIConnectionError, cloudflare.APITimeoutError) as error:
                if attempt >= self.max_retries:
                    raise self._as_error(error)
                self._wait(attempt, error)
                if create:
                    found = find()
                    if found is not None:
                        return found
                attempt += 1
                continue
            except (cloudflare.CloudflareError, ValueError) as error:
                # A response the SDK could not read (e.g. not JSON): not retried,
                # reported like any other failure.
                raise CloudflareError("Cloudflare API call failed: the response could not be read (%s: %s)"
                                      % (error.__class__.__name__, error))
            if self._failed_envelope is not None:
                method, url, status, errors = self._failed_envelope
                raise CloudflareError(_describe(method, url, status, errors), status, errors)
            return result

    def _as_error(self, error):
        request = getattr(error, "request", None)
        method = request.method if request is not None else "?"
        url = request.url if request is not None else "?"
        if isinstance(error, cloudflare.APIStatusError):
            body = error.body if isinstance(error.body, dict) else {}
            errors = body.get("errors") or [{"message": str(error.body or error.message)}]
            return CloudflareError(_describe(method, url, error.status_code, errors), error.status_code, errors)
        return CloudflareError(_describe(method, url, None, [])
                               + ": could not reach the API (%s: %s)" % (error.__class__.__name__, error))

    def request(self, method, path, body=None, params=None):
        """A raw call for endpoints the SDK types poorly; returns the whole envelope."""
        options = {}
        if params:
            options["params"] = params
        func = getattr(self.sdk, method.lower())
        if method.upper() in ("GET", "DELETE"):
            return self.call(func, path, cast_to=object, options=options)
        return self.call(func, path, cast_to=object, body=body, options=options)


class CloudflareModule:
    """An AnsibleModule with a Cloudflare client, account and zone lookups."""

    def __init__(self, argument_spec, **kwargs):
        # Every module takes ``account``, even one that only scopes a zone
        # lookup with it: module_defaults for the action group passes the same
        # options to all of them.
        spec = cloudflare_argument_spec()
        spec.update(account_argument_spec())
        spec.update(argument_spec)
        kwargs.setdefault("supports_check_mode", True)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode
        self.diff_mode = self.module._diff
        self._account_id = None
        self._zones = {}
        self._client = None

    @property
    def client(self):
        if self._client is None:
            if not HAS_CLOUDFLARE:
                self.module.fail_json(msg=missing_required_lib(SDK_REQUIREMENT), exception=CLOUDFLARE_IMPORT_ERROR)
            if not self.params["api_token"]:
                self.fail("api_token is required: set it, or CLOUDFLARE_API_TOKEN, or module_defaults for "
                          "group/blackroad.infra.cloudflare")
            self._client = CloudflareClient(
                self.params["api_token"], base_url=self.params["api_base_url"],
                timeout=self.params["request_timeout"], max_retries=self.params["max_retries"])
        return self._client

    @property
    def sdk(self):
        return self.client.sdk

    def fail(self, msg, **result):
        result.setdefault("changed", False)
        if self._client is not None:
            result.setdefault("api_calls", self._client.calls)
        self.module.fail_json(msg=msg, **result)

    def exit(self, changed, **result):
        if self._client is not None:
            result.setdefault("api_calls", self._client.calls)
        else:
            result.setdefault("api_calls", 0)
        self.module.exit_json(changed=changed, **result)

    def call(self, func, *args, **kwargs):
        try:
            return self.client.call(func, *args, **kwargs)
        except CloudflareError as error:
            self.fail(str(error), status=error.status)

    def create(self, func, *args, **kwargs):
        try:
            return self.client.create(func, *args, **kwargs)
        except CloudflareError as error:
            self.fail(str(error), status=error.status)

    def request(self, method, path, body=None, params=None):
        try:
            return self.client.request(method, path, body=body, params=params)
        except CloudflareError as error:
            self.fail(str(error), status=error.status)

    def paged(self, func, *args, **kwargs):
        """All items of a list endpoint, each page fetched with retries.

        The SDK asks for pages until one comes back empty; the envelope's
        result_info (or a short page) says when the last page has been read,
        which saves that call.
        """
        page = self.call(func, *args, **kwargs)
        items = list(page.result if hasattr(page, "result") else page)
        while True:
            got = len(page.result if hasattr(page, "result") else page)
            info = getattr(page, "result_info", None)
            total_pages = getattr(info, "total_pages", None)
            total_count = getattr(info, "total_count", None)
            number = getattr(info, "page", None)
            per_page = getattr(info, "per_page", None) or kwargs.get("per_page")
            if (got == 0 or (total_pages is not None and number is not None and number >= total_pages)
                    or (total_count is not None and len(items) >= total_count) or (per_page and got < per_page)):
                break
            if not page.has_next_page():
                break
            page = self.call(page.get_next_page)
            items.extend(page.result if hasattr(page, "result") else page)
        return items

    @property
    def account_id(self):
        """The account from ``account`` (id or name), or the token's only account."""
        if self._account_id is None:
            wanted = self.params.get("account")
            if wanted and ID_PATTERN.match(wanted):
                self._account_id = wanted
            else:
                if wanted:
                    found = self.paged(self.sdk.accounts.list, name=wanted)
                    found = [a for a in found if a.name == wanted]
                else:
                    found = self.paged(self.sdk.accounts.list)
                if len(found) != 1:
                    if wanted:
                        self.fail("account %r: %s" % (wanted, "not found (or the API token cannot see it)" if not found
                                                      else "%d accounts have that name; give its id" % len(found)))
                    self.fail("account is required: the API token can see %d accounts" % len(found))
                self._account_id = found[0].id
        return self._account_id

    def zone_id(self, zone):
        """The id of a zone given by name or id."""
        if ID_PATTERN.match(zone):
            return zone
        name = zone.rstrip(".").lower()
        if name not in self._zones:
            # Zone names are unique only per account: with an account given,
            # the lookup is scoped to it at no extra call.
            scope = {}
            account = self.params.get("account")
            if account:
                scope = {"account": {"id": account} if ID_PATTERN.match(account) else {"name": account}}
            found = [z for z in self.paged(self.sdk.zones.list, name=name, **scope) if z.name == name]
            if not found:
                self.fail("zone %r not found (or the API token cannot see it)" % zone)
            self._zones[name] = found[0].id
        return self._zones[name]


def dict_diff(before, after, header=None):
    """An Ansible diff dict for two JSON-able documents."""
    diff = dict(before=before, after=after)
    if header:
        diff["before_header"] = diff["after_header"] = header
    return diff
