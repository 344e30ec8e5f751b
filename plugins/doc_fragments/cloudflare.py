# -*- coding: utf-8 -*-
# Copyright: Contributors to the blackroad.infra collection
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Options every Cloudflare module takes; set them once for a play with
    # module_defaults and group/blackroad.infra.cloudflare.
    DOCUMENTATION = r"""
options:
  api_token:
    description:
      - Cloudflare API token (not the global API key).
      - If not set, the value of the E(CLOUDFLARE_API_TOKEN) environment variable is used.
      - Each module's page lists the token permissions it needs.
    type: str
  api_base_url:
    description:
      - Base URL of the Cloudflare API, including C(/client/v4).
      - Point it at the local emulator for tests and the lab.
      - If not set, the value of the E(CLOUDFLARE_BASE_URL) environment variable is used.
    type: str
    default: https://api.cloudflare.com/client/v4
  request_timeout:
    description: Seconds to wait for each API response.
    type: float
    default: 30
  max_retries:
    description:
      - How many times a failed call is retried after a rate limit (HTTP 429, honouring C(Retry-After)),
        a server error or a dropped connection.
      - Reads and whole-resource writes are retried as they are. A create is retried only after
        the module has read back that the first attempt did not create the resource, so a retry
        never duplicates one.
    type: int
    default: 4
requirements:
  - cloudflare >= 5.9, < 5.10 (the official Cloudflare Python SDK)
notes:
  - Every call goes to the Cloudflare API from the host the task runs on, usually C(localhost).
  - Results include RV(ignore:api_calls), the number of HTTP requests the task made.
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the account.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
  action_group:
    description: Use C(group/blackroad.infra.cloudflare) in C(module_defaults) to set the options above once.
    support: full
    membership:
      - blackroad.infra.cloudflare
"""

    ACCOUNT = r"""
options:
  account:
    description:
      - The Cloudflare account, by id or by name.
      - If not set, the value of the E(CLOUDFLARE_ACCOUNT_ID) environment variable is used; if that is
        not set either, the token must see exactly one account.
    type: str
"""
