"""The client base (plugins/module_utils/cloudflare.py) against the emulator:
one clear message per failure, retries that honour Retry-After, and creates
that are never duplicated."""

import sys

import pytest

from playbook import REPO

sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible_collections.blackroad.infra.plugins.module_utils.cloudflare import (  # noqa: E402
    CloudflareClient, CloudflareError)


def client(emu, token=None, max_retries=3):
    delays = []
    cf = CloudflareClient(token or emu.token, base_url=emu.url, timeout=5, max_retries=max_retries,
                          sleep=delays.append)
    return cf, delays


def namespaces(emu):
    return [n["title"] for n in emu.state()["kv_namespaces"]]


def test_a_bad_token_is_one_clear_message(cf_emulator):
    cf, _delays = client(cf_emulator, token="not-the-token")
    with pytest.raises(CloudflareError) as raised:
        cf.call(cf.sdk.zones.list)
    message = str(raised.value)
    assert message.startswith("Cloudflare API GET /zones failed with HTTP 403")
    assert "lacks a permission" in message
    assert "[10000] Authentication error" in message
    assert "not-the-token" not in message
    assert cf.calls == 1  # an auth failure is not retried


def test_not_found_names_the_path_and_is_not_retried(cf_emulator):
    cf, delays = client(cf_emulator)
    with pytest.raises(CloudflareError) as raised:
        cf.call(cf.sdk.zones.get, zone_id="0" * 32)
    assert "GET /zones/" + "0" * 32 + " failed with HTTP 404" in str(raised.value)
    assert raised.value.status == 404
    assert delays == []


def test_a_200_with_success_false_is_an_error_not_none(cf_emulator):
    cf, _delays = client(cf_emulator)
    cf_emulator.inject(action="status", status=200, path_regex="/zones$",
                       errors=[{"code": 1001, "message": "zone listing unavailable"}])
    with pytest.raises(CloudflareError) as raised:
        cf.call(cf.sdk.zones.list)
    assert "failed with HTTP 200" in str(raised.value)
    assert "[1001] zone listing unavailable" in str(raised.value)


def test_429_waits_for_retry_after_then_succeeds(cf_emulator):
    cf, delays = client(cf_emulator)
    cf_emulator.inject(action="status", status=429, retry_after=7, count=2, path_regex="/zones$")
    zones = cf.call(cf.sdk.zones.list)
    assert sorted(z.name for z in zones.result) == ["blackroad.io", "lucidia.earth"]
    assert delays == [7.0, 7.0]
    assert cf.calls == 3


def test_a_server_error_that_persists_gives_up_after_max_retries(cf_emulator):
    cf, delays = client(cf_emulator, max_retries=2)
    cf_emulator.inject(action="status", status=503, count=10, path_regex="/zones$")
    with pytest.raises(CloudflareError) as raised:
        cf.call(cf.sdk.zones.list)
    assert "HTTP 503 (Cloudflare had a server error; still failing after retrying)" in str(raised.value)
    assert cf.calls == 3
    assert len(delays) == 2


def create_namespace(cf, emu, title):
    account = emu.account_id

    def find():
        for namespace in cf.call(cf.sdk.kv.namespaces.list, account_id=account, per_page=100).result:
            if namespace.title == title:
                return namespace
        return None

    return cf.create(cf.sdk.kv.namespaces.create, account_id=account, title=title, find=find)


def test_a_create_whose_reply_was_lost_is_found_not_repeated(cf_emulator):
    cf, _delays = client(cf_emulator)
    cf_emulator.inject(action="drop", when="after", method="POST", path_regex="/storage/kv/namespaces$")
    namespace = create_namespace(cf, cf_emulator, "ONCE")
    assert namespace.title == "ONCE"
    assert namespaces(cf_emulator).count("ONCE") == 1
    posts = [r for r in cf_emulator.requests() if r["method"] == "POST"]
    assert len(posts) == 1


@pytest.mark.parametrize("fault", [
    dict(action="drop", when="before"),
    dict(action="status", status=500),
    dict(action="status", status=429, retry_after=1),
])
def test_a_create_that_did_not_land_is_retried_once(cf_emulator, fault):
    cf, _delays = client(cf_emulator)
    cf_emulator.inject(method="POST", path_regex="/storage/kv/namespaces$", **fault)
    namespace = create_namespace(cf, cf_emulator, "RETRIED")
    assert namespace.title == "RETRIED"
    assert namespaces(cf_emulator).count("RETRIED") == 1
    assert cf.writes == 2


def test_an_unreachable_api_is_one_clear_message():
    cf = CloudflareClient("token", base_url="http://127.0.0.1:9/client/v4", timeout=1, max_retries=1,
                          sleep=lambda _: None)
    with pytest.raises(CloudflareError) as raised:
        cf.call(cf.sdk.zones.list)
    assert str(raised.value).startswith("Cloudflare API GET /zones failed: could not reach the API")
