# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One HTTP client for the Tailscale API v2 and the headscale REST API v1.

Used by the ``blackroad.infra.tailscale`` inventory plugin and by the Tailscale
modules. Standard library only, so the inventory plugin needs nothing beyond
ansible-core. The client owns authentication (API key, or an OAuth client
exchanged for a short-lived token), the retry policy for reads and the
wording of every failure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import os
import socket
import tempfile
import time
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from ansible.module_utils.basic import env_fallback

DEFAULT_BASE_URL = "https://api.tailscale.com"
API_ROOTS = {"tailscale": "/api/v2", "headscale": "/api/v1"}
TOKEN_PATH = "/api/v2/oauth/token"
# A token is refreshed this many seconds before the expiry the server gave, so
# a request never goes out with a token that dies on the way.
TOKEN_MARGIN = 300
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_BACKOFF = 30.0
READ_METHODS = ("GET", "HEAD")
# Long enough to say what the server complained about, short enough for one line.
BODY_EXCERPT = 300

STATUS_HINTS = {
    400: "the request was rejected as invalid",
    401: "not authenticated: check api_key/oauth credentials (an expired or revoked key, or a key for another server)",
    403: "forbidden: the credentials lack a permission or OAuth scope this needs",
    404: "not found",
    409: "conflict",
    412: "precondition failed: the resource changed since it was read",
    429: "rate limited; still limited after retrying",
}


class TailscaleError(Exception):
    """A failed call, phrased for the person running Ansible; never holds a secret."""

    def __init__(self, message, status=None, body=None):
        super(TailscaleError, self).__init__(message)
        self.message = message
        self.status = status
        self.body = body

    def __str__(self):
        return self.message


class Response:
    """What came back: status, headers with lower-case names, and the body text."""

    def __init__(self, status, headers, text):
        self.status = status
        self.headers = headers
        self.text = text

    def json(self):
        if not self.text or not self.text.strip():
            return None
        try:
            return json.loads(self.text)
        except ValueError:
            raise TailscaleError("the server answered HTTP %s with a body that is not JSON: %s"
                                 % (self.status, _excerpt(self.text)), self.status, self.text)


def _excerpt(text):
    text = " ".join((text or "").split())
    if len(text) > BODY_EXCERPT:
        text = text[:BODY_EXCERPT] + "..."
    return text


def _server_message(text):
    """The server's own explanation from an error body ("message" in both APIs)."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return _excerpt(text)
    if isinstance(data, dict):
        for key in ("message", "error"):
            if isinstance(data.get(key), str) and data[key]:
                return _excerpt(data[key])
    return _excerpt(text)


class _NoCrossHostAuthRedirect(HTTPRedirectHandler):
    """Follow redirects within the server's origin only, credentials included.

    The credentials go in an unredirected header, which urllib drops on any
    redirect. Within the same origin they are carried over by hand; a redirect
    elsewhere is refused with a clear error, so a key never reaches a host the
    user did not name.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise TailscaleError("the server redirected %s to another host (%s://%s); refusing to follow"
                                 % (old.path, new.scheme, new.netloc), code)
        follow = HTTPRedirectHandler.redirect_request(self, req, fp, code, msg, headers, newurl)
        authorization = req.unredirected_hdrs.get("Authorization")
        if follow is not None and authorization:
            follow.add_unredirected_header("Authorization", authorization)
        return follow


class ControlClient:
    """A client for one control server: Tailscale (SaaS API v2) or headscale (API v1).

    ``request()`` takes a path relative to the API root (``/tailnet/-/devices``
    or ``/node``). Reads are retried on 429, 5xx and connection errors with an
    exponential backoff that honours ``Retry-After``; writes are sent once,
    because a retried write can apply twice.
    """

    def __init__(self, base_url, api_key=None, oauth_client_id=None, oauth_client_secret=None, tailnet="-",
                 api="tailscale", timeout=10, retries=3, oauth_scope=None, token_cache_path=None,
                 sleep=time.sleep, clock=time.time):
        if api not in API_ROOTS:
            raise TailscaleError("api must be one of %s, not %r" % (", ".join(sorted(API_ROOTS)), api))
        if not base_url:
            raise TailscaleError("the control server's base URL is empty")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise TailscaleError("the base URL must start with http:// or https://, got %r" % self.base_url)
        self.api = api
        self.api_root = API_ROOTS[api]
        # The root is part of the documented API, so a base URL that already
        # ends with it is accepted rather than doubled.
        if self.base_url.endswith(self.api_root):
            self.base_url = self.base_url[: -len(self.api_root)]
        self.api_key = api_key or None
        self.oauth_client_id = oauth_client_id or None
        self.oauth_client_secret = oauth_client_secret or None
        self.oauth_scope = oauth_scope or None
        self.tailnet = tailnet or "-"
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.token_cache_path = token_cache_path
        self.calls = 0
        self.token_exchanges = 0
        self._sleep = sleep
        self._clock = clock
        self._token = None
        self._token_expires = 0.0
        self._opener = build_opener(_NoCrossHostAuthRedirect)
        if api == "headscale":
            if not self.api_key:
                raise TailscaleError("headscale needs an API key (headscale apikeys create); OAuth clients are "
                                     "a Tailscale SaaS feature")
            if self.oauth_client_id or self.oauth_client_secret:
                raise TailscaleError("headscale takes an API key only, not OAuth client credentials")
        else:
            if bool(self.oauth_client_id) != bool(self.oauth_client_secret):
                raise TailscaleError("OAuth needs both oauth_client_id and oauth_client_secret")
            if self.api_key and self.oauth_client_id:
                raise TailscaleError("give either api_key or oauth_client_id/oauth_client_secret, not both")
            if not self.api_key and not self.oauth_client_id:
                raise TailscaleError("no credentials: set api_key (TAILSCALE_API_KEY) or oauth_client_id and "
                                     "oauth_client_secret (TAILSCALE_OAUTH_CLIENT_ID/_SECRET)")

    # -- secrets ---------------------------------------------------------------------------
    def _secrets(self):
        return [s for s in (self.api_key, self.oauth_client_secret, self._token) if s]

    def _scrub(self, text):
        for secret in self._secrets():
            text = text.replace(secret, "********")
        return text

    # -- OAuth -----------------------------------------------------------------------------
    def _cache_key(self):
        # The file may be shared by several configs: a token is reused only for
        # the same server, client and scope. The hash keeps the client id out
        # of the file, though it is not a secret.
        raw = "\n".join([self.base_url, self.oauth_client_id or "", self.oauth_scope or ""])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def _load_cached_token(self):
        if not self.token_cache_path:
            return False
        try:
            with open(self.token_cache_path) as handle:
                data = json.load(handle)
        except (IOError, OSError, ValueError):
            return False
        if not isinstance(data, dict) or data.get("key") != self._cache_key():
            return False
        expires = data.get("expires_at")
        token = data.get("access_token")
        if not token or not isinstance(expires, (int, float)) or expires - TOKEN_MARGIN <= self._clock():
            return False
        self._token, self._token_expires = token, float(expires)
        return True

    def _store_token(self):
        if not self.token_cache_path:
            return
        directory = os.path.dirname(os.path.abspath(self.token_cache_path))
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o700)
            # Written to a 0600 temp file and renamed, so the token is never
            # readable by others, not even for a moment, and a reader never
            # sees half a file.
            handle, temp = tempfile.mkstemp(dir=directory, prefix=".tailscale-token-")
            try:
                with os.fdopen(handle, "w") as out:
                    json.dump({"key": self._cache_key(), "access_token": self._token,
                               "expires_at": self._token_expires}, out)
                os.chmod(temp, 0o600)
                os.rename(temp, self.token_cache_path)
            except Exception:
                os.unlink(temp)
                raise
        except (IOError, OSError):
            # A cache that cannot be written costs one exchange per run, no more.
            pass

    def _drop_token(self):
        self._token, self._token_expires = None, 0.0
        if self.token_cache_path:
            try:
                os.unlink(self.token_cache_path)
            except OSError:
                pass  # already gone, or never written

    def _exchange(self):
        form = {"grant_type": "client_credentials", "client_id": self.oauth_client_id,
                "client_secret": self.oauth_client_secret}
        if self.oauth_scope:
            form["scope"] = self.oauth_scope
        # Minting a token changes nothing on the server, so the exchange is
        # retried like a read although it is a POST.
        response = self._send("POST", self.base_url + TOKEN_PATH, urlencode(form).encode("ascii"),
                              {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
                              expect=(200,), retry=True, label="OAuth token exchange")
        data = response.json()
        if not isinstance(data, dict) or not data.get("access_token"):
            raise TailscaleError("OAuth token exchange: the answer has no access_token", response.status)
        try:
            lifetime = float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        self.token_exchanges += 1
        self._token = data["access_token"]
        self._token_expires = self._clock() + lifetime
        self._store_token()

    def _bearer(self):
        if self._token and self._token_expires - TOKEN_MARGIN > self._clock():
            return self._token
        if not self._load_cached_token():
            self._exchange()
        return self._token

    def _auth_header(self):
        if self.api == "headscale":
            return "Bearer " + self.api_key
        if self.api_key:
            # A personal API key goes as the Basic user name with no password,
            # which is what Tailscale documents for keys.
            return "Basic " + base64.b64encode((self.api_key + ":").encode("utf-8")).decode("ascii")
        return "Bearer " + self._bearer()

    # -- HTTP ------------------------------------------------------------------------------
    def url(self, path, raw=False):
        """The full URL of ``path``: under the API root, or under the base URL with ``raw``."""
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + ("" if raw else self.api_root) + path

    def request(self, method, path, body=None, headers=None, expect=(200,), raw=False):
        """Send one request and return its ``Response``.

        ``path`` is relative to the API root (``/api/v2`` or ``/api/v1``); with
        ``raw=True`` it is relative to the base URL instead (``/health``).
        ``body``: a dict or list is sent as JSON; str or bytes as they are
        (give the Content-Type in ``headers``). A status not in ``expect``
        raises ``TailscaleError``.
        """
        method = method.upper()
        send_headers = {"Accept": "application/json"}
        data = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode("utf-8")
            send_headers["Content-Type"] = "application/json"
        elif isinstance(body, bytes):
            data = body
        elif body is not None:
            data = body.encode("utf-8")
        for name, value in (headers or {}).items():
            send_headers[name] = value
        url = self.url(path, raw=raw)
        retry = method in READ_METHODS
        exchanges = self.token_exchanges
        try:
            return self._send(method, url, data, send_headers, expect, retry, authenticate=True)
        except TailscaleError as error:
            # A cached OAuth token can be revoked before it expires: one fresh
            # exchange, one more try, then the error stands. A token minted for
            # this very request is not exchanged again.
            if error.status == 401 and self.oauth_client_id and self._token and exchanges == self.token_exchanges:
                self._drop_token()
                return self._send(method, url, data, send_headers, expect, retry, authenticate=True)
            raise

    def _delay(self, attempt, retry_after):
        delay = min(0.5 * (2 ** attempt), MAX_BACKOFF)
        if retry_after:
            try:
                delay = min(max(float(retry_after), 0.0), MAX_BACKOFF)
            except ValueError:
                pass  # an HTTP-date: keep the exponential delay
        return delay

    def _send(self, method, url, data, headers, expect, retry, authenticate=False, label=None):
        label = label or "%s %s" % (method, url[len(self.base_url):].split("?", 1)[0])
        attempt = 0
        while True:
            request = Request(url, data=data, method=method)
            for name, value in headers.items():
                request.add_header(name, value)
            if authenticate:
                request.add_unredirected_header("Authorization", self._auth_header())
            self.calls += 1
            status, retry_after, failure = None, None, None
            try:
                with self._opener.open(request, timeout=self.timeout) as answer:
                    status = answer.status
                    text = answer.read().decode("utf-8", "replace")
                    answer_headers = dict((k.lower(), v) for k, v in answer.headers.items())
            except HTTPError as error:
                status = error.code
                try:
                    text = error.read().decode("utf-8", "replace")
                except Exception:  # pylint: disable=broad-except
                    text = ""
                answer_headers = dict((k.lower(), v) for k, v in (error.headers or {}).items())
                retry_after = answer_headers.get("retry-after")
            except TailscaleError:
                raise
            except (URLError, socket.timeout, OSError, HTTPException, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                if isinstance(reason, socket.timeout) or "timed out" in str(reason):
                    reason = "timed out after %ss" % self.timeout
                failure = "cannot reach %s: %s" % (self.base_url, reason)
            if failure is None and status in expect:
                return Response(status, answer_headers, text)
            retryable = failure is not None or status in RETRY_STATUSES
            if retry and retryable and attempt < self.retries:
                self._sleep(self._delay(attempt, retry_after))
                attempt += 1
                continue
            if failure is not None:
                tries = " (%d attempts)" % (attempt + 1) if attempt else ""
                raise TailscaleError(self._scrub("%s: %s%s" % (label, failure, tries)))
            raise TailscaleError(self._scrub(self._describe(label, status, text, attempt)), status, text)

    def _describe(self, label, status, text, attempts):
        hint = STATUS_HINTS.get(status)
        if status == 404 and self.api == "tailscale" and "/tailnet/" in label:
            hint = "not found: wrong tailnet? (tailnet %r; '-' means the credentials' own tailnet)" % self.tailnet
        elif status == 404 and self.api == "headscale":
            hint = "not found: is %s a headscale server (API v1)?" % self.base_url
        elif status is not None and status >= 500:
            hint = "server error"
        message = "%s failed with HTTP %s" % (label, status)
        if hint:
            message += " (%s)" % hint
        if attempts:
            message += " after %d attempts" % (attempts + 1)
        detail = _server_message(text)
        if detail:
            message += ": " + detail
        return message

    # -- helpers for callers -----------------------------------------------------------------
    def tailnet_path(self, suffix=""):
        """``/tailnet/<tailnet><suffix>``, the tailnet quoted for the URL."""
        return "/tailnet/%s%s" % (quote(self.tailnet, safe=""), suffix)

    def get_json(self, path):
        return self.request("GET", path).json()


def tailscale_argument_spec():
    """Options every Tailscale module takes (documented in the doc fragment)."""
    return dict(
        api=dict(type="str", choices=["tailscale", "headscale"], default="tailscale"),
        api_base_url=dict(type="str", default=DEFAULT_BASE_URL, fallback=(env_fallback, ["TAILSCALE_API_BASE_URL"])),
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["TAILSCALE_API_KEY", "HEADSCALE_API_KEY"])),
        oauth_client_id=dict(type="str", fallback=(env_fallback, ["TAILSCALE_OAUTH_CLIENT_ID"])),
        oauth_client_secret=dict(type="str", no_log=True, fallback=(env_fallback, ["TAILSCALE_OAUTH_CLIENT_SECRET"])),
        tailnet=dict(type="str", default="-"),
        request_timeout=dict(type="int", default=10),
        max_retries=dict(type="int", default=3),
    )


def client_from_module(module, oauth_scope=None):
    """A ``ControlClient`` from a module's parameters; fails the module on a bad combination."""
    params = module.params
    api = params.get("api") or "tailscale"
    base_url = params.get("api_base_url") or DEFAULT_BASE_URL
    if api == "headscale" and base_url.rstrip("/") == DEFAULT_BASE_URL:
        module.fail_json(msg="api=headscale needs api_base_url: the URL of the headscale server "
                             "(or TAILSCALE_API_BASE_URL)")
    if params.get("request_timeout") is not None and params["request_timeout"] <= 0:
        module.fail_json(msg="request_timeout must be a positive number of seconds")
    if params.get("max_retries") is not None and params["max_retries"] < 0:
        module.fail_json(msg="max_retries must be 0 or more")
    try:
        return ControlClient(
            base_url, api_key=params.get("api_key"), oauth_client_id=params.get("oauth_client_id"),
            oauth_client_secret=params.get("oauth_client_secret"), tailnet=params.get("tailnet") or "-", api=api,
            timeout=params.get("request_timeout") or 10, retries=params.get("max_retries", 3),
            oauth_scope=oauth_scope)
    except TailscaleError as error:
        module.fail_json(msg=str(error))
    return None  # not reached: fail_json exits
