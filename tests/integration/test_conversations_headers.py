"""The Conversations API's answers carry the stateful headers (CONTRACT §3), so a client can chain
If-Match from what a write or a read told it. On memory and a real redis-server (the `sidecar` fixture)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.test_turn_in_its_conversation import user

Client = TestClient[Any, Any]
STATEFUL = ("X-Request-Id", "X-Conversation-Id", "X-Conversation-Version", "X-Prefix-Fingerprint")


async def call(sidecar: Client, method: str, path: str, **kw: Any) -> tuple[int, Any, Mapping[str, str]]:
    resp = await sidecar.request(method, path, **kw)
    return resp.status, await resp.json(), resp.headers  # case-insensitive


def stateful(headers: Mapping[str, str], conversation_id: str) -> int:
    """The version the headers report, after checking they are all there and name the conversation."""
    missing = [name for name in (*STATEFUL, "X-Estimated-Input-Tokens") if name not in headers]
    assert not missing, f"missing {missing} in {headers}"
    assert headers["X-Conversation-Id"] == conversation_id
    assert int(headers["X-Estimated-Input-Tokens"]) > 0
    return int(headers["X-Conversation-Version"])


async def test_writes_report_the_version_that_if_match_then_takes(sidecar: Client) -> None:
    status, created, headers = await call(sidecar, "POST", "/v1/conversations", json={"items": [user("hi")]})
    assert status == 200, created
    conversation = created["id"]
    first = stateful(headers, conversation)
    items = f"/v1/conversations/{conversation}/items"

    status, added, headers = await call(
        sidecar, "POST", items, json={"items": [user("more")]}, headers={"If-Match": str(first)}
    )
    assert status == 200, added
    second = stateful(headers, conversation)
    assert second > first
    status, stale, _ = await call(
        sidecar, "POST", items, json={"items": [user("late")]}, headers={"If-Match": str(first)}
    )
    assert status == 409 and stale["error"]["code"] == "version_conflict", stale

    status, deleted, headers = await call(sidecar, "DELETE", f"{items}/{added['first_id']}")
    assert status == 200, deleted
    third = stateful(headers, conversation)
    assert third > second
    status, added, headers = await call(
        sidecar, "POST", items, json={"items": [user("again")]}, headers={"If-Match": str(third)}
    )
    assert status == 200, added
    assert stateful(headers, conversation) > third


async def test_reads_report_what_the_session_api_reports(sidecar: Client) -> None:
    status, created, _ = await call(
        sidecar, "POST", "/v1/conversations", json={"items": [user("one"), user("two")]}
    )
    assert status == 200, created
    conversation = created["id"]
    status, listed, _ = await call(sidecar, "GET", f"/v1/conversations/{conversation}/items")
    assert status == 200, listed
    status, _, session = await call(sidecar, "GET", f"/v1/sessions/{conversation}")
    assert status == 200
    reads = [
        f"/v1/conversations/{conversation}",
        f"/v1/conversations/{conversation}/items",
        f"/v1/conversations/{conversation}/items/{listed['data'][0]['id']}",
    ]
    for path in reads:
        status, body, headers = await call(sidecar, "GET", path)
        assert status == 200, body
        assert stateful(headers, conversation) == int(session["X-Conversation-Version"]), path
        for name in ("X-Prefix-Fingerprint", "X-Estimated-Input-Tokens"):
            assert headers[name] == session[name], (path, name)
    status, updated, headers = await call(
        sidecar, "POST", f"/v1/conversations/{conversation}", json={"metadata": {"k": "v"}}
    )
    assert status == 200, updated
    assert stateful(headers, conversation) >= int(session["X-Conversation-Version"])


async def test_a_replayed_keyed_create_reports_the_conversation_as_it_stands(sidecar: Client) -> None:
    body = {"items": [user("hello")]}
    key = {"Idempotency-Key": "create-headers"}
    status, first, headers = await call(sidecar, "POST", "/v1/conversations", json=body, headers=key)
    assert status == 200, first
    version = stateful(headers, first["id"])
    status, again, headers = await call(sidecar, "POST", "/v1/conversations", json=body, headers=key)
    assert status == 200 and again == first
    assert stateful(headers, first["id"]) == version


async def test_an_unknown_prompt_pack_is_refused_before_a_write_and_ignored_by_reads(sidecar: Client) -> None:
    pack = {"X-Prompt-Pack": "no-such-pack"}
    status, refused, _ = await call(sidecar, "POST", "/v1/conversations", json={}, headers=pack)
    assert status == 400 and refused["error"]["code"] == "unknown_prompt_pack", refused
    status, created, _ = await call(sidecar, "POST", "/v1/conversations", json={"items": [user("hi")]})
    assert status == 200, created
    conversation = created["id"]
    items = f"/v1/conversations/{conversation}/items"
    status, refused, _ = await call(sidecar, "POST", items, json={"items": [user("x")]}, headers=pack)
    assert status == 400 and refused["error"]["code"] == "unknown_prompt_pack", refused
    status, listed, headers = await call(sidecar, "GET", items, headers=pack)
    assert status == 200 and len(listed["data"]) == 1  # nothing was written; a read still answers
    assert stateful(headers, conversation) == 1
