"""The session ``headscale`` fixture serves a real headscale 0.28 that the other
tests (inventory plugin, policy module) can rely on: API key auth, fake nodes with
tags, and the 0.28 node shape (a single ``tags`` list)."""

import json

import pytest


def test_api_key_authenticates(headscale):
    status, body = headscale.api("GET", "/node")
    assert status == 200, body
    assert isinstance(body.get("nodes", []), list)


def test_wrong_api_key_is_refused(headscale):
    assert headscale.api("GET", "/node", api_key="hskey-api-notavalidkey-0000000000")[0] == 401


def test_create_node_with_tags_shows_in_api(headscale):
    node = headscale.create_node("fixture-tagged", headscale.user, tags=["tag:database", "tag:llm"])
    try:
        listed = {n["id"]: n for n in headscale.nodes()}
        assert node["id"] in listed
        seen = listed[node["id"]]
        print(json.dumps(seen, indent=2))
        assert seen["name"] == "fixture-tagged"
        # 0.28 replaced forcedTags/validTags/invalidTags with one "tags" list.
        assert sorted(seen["tags"]) == ["tag:database", "tag:llm"]
        for gone in ("forcedTags", "validTags", "invalidTags"):
            assert gone not in seen
        assert seen["ipAddresses"]
        assert any(ip.startswith("100.") for ip in seen["ipAddresses"])
    finally:
        headscale.delete_node(node["id"])
    assert node["id"] not in {n["id"] for n in headscale.nodes()}


def test_create_node_without_tags_is_user_owned(headscale):
    node = headscale.create_node("fixture-user", headscale.user)
    try:
        assert not node.get("tags")
        assert node["user"]["name"] == headscale.user
    finally:
        headscale.delete_node(node["id"])


def test_tag_outside_policy_is_rejected(headscale):
    from headscale import HeadscaleError  # pylint: disable=import-outside-toplevel
    with pytest.raises(HeadscaleError, match="invalid or not permitted"):
        headscale.create_node("fixture-badtag", headscale.user, tags=["tag:nowhere"])
    headscale.delete_all_nodes()


def test_policy_is_database_mode(headscale):
    status, body = headscale.api("GET", "/policy")
    assert status == 200, body
    assert "tag:failover" in body["policy"]
    assert body.get("updatedAt")
