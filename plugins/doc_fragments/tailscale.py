# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Options every Tailscale module takes; set them once for a play with
    # module_defaults and group/blackroad.infra.tailscale.
    DOCUMENTATION = r"""
options:
  api:
    description:
      - Which control server API to talk to.
      - V(tailscale) is the Tailscale API v2 (C(/api/v2)), authenticated with O(api_key) or with an OAuth
        client (O(oauth_client_id) and O(oauth_client_secret)).
      - V(headscale) is headscale's REST API v1 (C(/api/v1)), authenticated with O(api_key) (made with
        C(headscale apikeys create)); O(api_base_url) must then name the headscale server.
    type: str
    choices: [tailscale, headscale]
    default: tailscale
  api_base_url:
    description:
      - Base URL of the control server, without the API path (C(/api/v2) or C(/api/v1) is added).
      - If not set, the value of the E(TAILSCALE_API_BASE_URL) environment variable is used.
    type: str
    default: https://api.tailscale.com
  api_key:
    description:
      - A Tailscale API access token (C(tskey-api-...)) or a headscale API key.
      - If not set, the value of the E(TAILSCALE_API_KEY) environment variable is used, then
        E(HEADSCALE_API_KEY).
      - Mutually exclusive with O(oauth_client_id) and O(oauth_client_secret).
    type: str
  oauth_client_id:
    description:
      - Id of a Tailscale OAuth client. With O(oauth_client_secret), exchanged at
        C(/api/v2/oauth/token) for an access token that lasts one hour; the token is kept and
        reused until five minutes before it expires.
      - If not set, the value of the E(TAILSCALE_OAUTH_CLIENT_ID) environment variable is used.
    type: str
  oauth_client_secret:
    description:
      - Secret of the OAuth client (C(tskey-client-...)).
      - If not set, the value of the E(TAILSCALE_OAUTH_CLIENT_SECRET) environment variable is used.
    type: str
  tailnet:
    description:
      - The tailnet, for O(api=tailscale). V(-) is the tailnet of the credentials, which is what an
        OAuth client or an API key almost always means.
      - Ignored by headscale, which has one tailnet.
    type: str
    default: '-'
  request_timeout:
    description: Seconds to wait for each API response.
    type: int
    default: 10
  max_retries:
    description:
      - How many times a read is retried after a rate limit (HTTP 429, honouring C(Retry-After) up to
        30 seconds), a server error (HTTP 5xx) or a connection failure, with a growing delay.
      - Writes are sent once and never retried, so a write cannot apply twice.
    type: int
    default: 3
notes:
  - Every call goes to the control server from the host the task runs on, usually C(localhost).
  - A bad key fails with HTTP 401, a wrong O(tailnet) with HTTP 404, and an unreachable server with
    C(cannot reach <api_base_url>); no message ever contains a key, a secret or a token.
attributes:
  action_group:
    description: Use C(group/blackroad.infra.tailscale) in C(module_defaults) to set the options above once.
    support: full
    membership:
      - blackroad.infra.tailscale
"""
