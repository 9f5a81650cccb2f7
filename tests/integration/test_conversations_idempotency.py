"""Idempotency-Key on the Conversations API's writes (CONTRACT §3): a retry with the same key and body
answers the first result and stores nothing twice; the same key with another body is 409. On memory and a
real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import SidecarFactory
from tests.integration.test_turn_in_its_conversation import user

Client = TestClient[Any, Any]


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: SidecarFactory) -> Client:
    if request.param == "memory":
        return await make_sidecar(redis_url="memory://")
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return await make_sidecar(redis_url=server.url)


async def post(sidecar: Client, path: str, body: dict[str, Any], key: str | None) -> tuple[int, Any]:
    resp = await sidecar.post(path, json=body, headers={"Idempotency-Key": key} if key else {})
    return resp.status, await resp.json()


async def item_ids(sidecar: Client, conversation_id: str) -> list[str]:
    resp = await sidecar.get(f"/v1/conversations/{conversation_id}/items", params={"order": "asc"})
    assert resp.status == 200, await resp.text()
    return [item["id"] for item in (await resp.json())["data"]]


async def test_a_retried_create_answers_the_same_conversation_and_makes_one(sidecar: Client) -> None:
    body = {"items": [user("hello"), user("again")], "metadata": {"topic": "retries"}}
    status, first = await post(sidecar, "/v1/conversations", body, "create-1")
    assert status == 200, first
    status, retry = await post(sidecar, "/v1/conversations", body, "create-1")
    assert status == 200, retry
    assert retry == first  # id, created_at and metadata
    assert len(await item_ids(sidecar, first["id"])) == 2
    status, other = await post(sidecar, "/v1/conversations", body, None)
    assert status == 200 and other["id"] != first["id"]  # without a key, each call makes one


async def test_a_reused_key_with_another_body_is_409(sidecar: Client) -> None:
    status, first = await post(sidecar, "/v1/conversations", {"items": [user("a")]}, "create-2")
    assert status == 200, first
    status, reused = await post(sidecar, "/v1/conversations", {"items": [user("b")]}, "create-2")
    assert status == 409 and reused["error"]["code"] == "idempotency_key_reused", reused
    path = f"/v1/conversations/{first['id']}/items"
    assert (await post(sidecar, path, {"items": [user("c")]}, "add-2"))[0] == 200
    status, reused = await post(sidecar, path, {"items": [user("d")]}, "add-2")
    assert status == 409 and reused["error"]["code"] == "idempotency_key_reused", reused
    assert len(await item_ids(sidecar, first["id"])) == 2


async def test_retried_items_answer_the_same_items_and_are_stored_once(sidecar: Client) -> None:
    status, made = await post(sidecar, "/v1/conversations", {}, None)
    assert status == 200, made
    path = f"/v1/conversations/{made['id']}/items"
    body = {"items": [user("one"), user("two")]}
    status, first = await post(sidecar, path, body, "add-1")
    assert status == 200, first
    status, retry = await post(sidecar, path, body, "add-1")
    assert status == 200, retry
    assert retry == first  # the same item ids
    assert await item_ids(sidecar, made["id"]) == [item["id"] for item in first["data"]]
    status, unkeyed = await post(sidecar, path, body, None)
    assert status == 200 and len(await item_ids(sidecar, made["id"])) == 4
    assert {item["id"] for item in unkeyed["data"]}.isdisjoint(item["id"] for item in first["data"])
