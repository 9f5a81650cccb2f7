"""A client's own item ids are kept (RESPONSES_API.md: ids are minted for the items that carry none), so an
item_reference or the items routes find an item by the id its client gave it; an id given twice is refused as
OpenAI refuses it. Output items stored through the session API get the sidecar's ids, as relayed ones do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import recorded
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: SidecarFactory, engine: TestServer) -> Client:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    return await make_sidecar(redis_url=url, upstream=str(engine.make_url("")))


def message(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "role": "user", "content": text}
    return item if item_id is None else {**item, "id": item_id}


async def create(sidecar: Client, **body: Any) -> tuple[int, Any]:
    resp = await sidecar.post("/v1/responses", json={"model": "m", **body})
    return resp.status, await resp.json()


async def test_an_input_items_own_id_is_kept_and_found_by_reference(sidecar: Client) -> None:
    status, first = await create(sidecar, input=[message("remember this", "msg_mine_1"), message("and this")])
    assert status == 200, first
    page = await (
        await sidecar.get(f"/v1/responses/{first['id']}/input_items", params={"order": "asc"})
    ).json()
    ids = [item["id"] for item in page["data"]]
    assert ids[0] == "msg_mine_1" and ids[1].startswith("msg_") and ids[1] != "msg_mine_1"
    reference = [{"type": "item_reference", "id": "msg_mine_1"}]
    status, second = await create(sidecar, input=reference, previous_response_id=first["id"])
    assert status == 200, second
    assert second["output"][0]["content"][0]["text"].endswith("remember this")


async def test_a_conversation_item_is_found_by_its_clients_id(sidecar: Client) -> None:
    made = await sidecar.post("/v1/conversations", json={"items": [message("hi", "msg_mine_2")]})
    conversation = (await made.json())["id"]
    added = await sidecar.post(
        f"/v1/conversations/{conversation}/items", json={"items": [message("x", "note-3")]}
    )
    assert [item["id"] for item in (await added.json())["data"]] == ["note-3"]
    for item_id, text in (("msg_mine_2", "hi"), ("note-3", "x")):
        found = await sidecar.get(f"/v1/conversations/{conversation}/items/{item_id}")
        assert found.status == 200, await found.text()
        assert (await found.json())["content"][0]["text"] == text
    deleted = await sidecar.delete(f"/v1/conversations/{conversation}/items/note-3")
    assert deleted.status == 200, await deleted.text()


async def test_an_id_given_twice_is_refused_and_nothing_reaches_the_engine(
    sidecar: Client, engine: TestServer
) -> None:
    status, first = await create(sidecar, input=[message("one", "msg_once")])
    assert status == 200, first
    calls = len(recorded(engine.app, "/v1/responses"))
    cases = [
        ({"input": [message("a", "twice"), message("b", "twice")]}, "input[1].id"),
        ({"input": [message("again", "msg_once")], "previous_response_id": first["id"]}, "input[0].id"),
        ({"input": [message("bad", "not an id!")]}, "input[0].id"),
    ]
    for body, param in cases:
        status, refused = await create(sidecar, **body)
        assert status == 400, refused
        assert refused["error"]["param"] == param
    assert (
        "Duplicate item found with id twice." in (await create(sidecar, **cases[0][0]))[1]["error"]["message"]
    )
    assert len(recorded(engine.app, "/v1/responses")) == calls


async def test_output_items_stored_through_the_session_api_get_the_sidecars_ids(sidecar: Client) -> None:
    output = [{"type": "message", "id": "msg_from_the_engine", "role": "assistant", "content": "hello"}]
    stored = await sidecar.post("/v1/sessions/outputs/store_response", json={"output": output})
    assert stored.status == 200, await stored.text()
    items = (await (await sidecar.get("/v1/sessions/outputs")).json())["items"]
    assert [item["id"] for item in items] != ["msg_from_the_engine"] and items[0]["id"].startswith("msg_")


async def item_ids(sidecar: Client, conversation: str) -> list[str]:
    page = await sidecar.get(f"/v1/conversations/{conversation}/items", params={"order": "asc", "limit": 100})
    assert page.status == 200, await page.text()
    return [item["id"] for item in (await page.json())["data"]]


async def test_an_id_already_in_the_conversation_is_refused_on_its_appends(sidecar: Client) -> None:
    made = await sidecar.post("/v1/conversations", json={"items": [message("hi", "note-1")]})
    conversation = (await made.json())["id"]
    again = await sidecar.post(
        f"/v1/conversations/{conversation}/items", json={"items": [message("x"), message("y", "note-1")]}
    )
    assert again.status == 400, await again.text()
    error = (await again.json())["error"]
    assert error["param"] == "items[1].id" and "Duplicate item found with id note-1." in error["message"]
    appended = await sidecar.post(
        f"/v1/sessions/{conversation}/append", json={"items": [message("z", "note-1")]}
    )
    assert appended.status == 400 and (await appended.json())["error"]["param"] == "items[0].id"
    assert await item_ids(sidecar, conversation) == ["note-1"]  # nothing of either call was stored


async def test_a_keyed_retry_naming_its_own_items_replays(sidecar: Client) -> None:
    made = await sidecar.post("/v1/conversations", json={})
    conversation = (await made.json())["id"]
    path = f"/v1/conversations/{conversation}/items"
    body = {"items": [message("a", "note-a"), message("b")]}
    first = await sidecar.post(path, json=body, headers={"Idempotency-Key": "k-items"})
    assert first.status == 200, await first.text()
    retry = await sidecar.post(path, json=body, headers={"Idempotency-Key": "k-items"})
    assert retry.status == 200, await retry.text()
    assert await retry.json() == await first.json()
    other = await sidecar.post(
        path, json={"items": [message("c", "note-a")]}, headers={"Idempotency-Key": "k2"}
    )
    assert other.status == 400, await other.text()  # another key: the id is a duplicate, not a replay
    assert len(await item_ids(sidecar, conversation)) == 2


async def test_a_branch_may_reuse_an_id_that_only_a_later_turn_holds(sidecar: Client) -> None:
    first = await sidecar.post("/v1/sessions/branchy/append", json={"items": [message("root")]})
    assert first.status == 200, await first.text()
    stored = await sidecar.post("/v1/sessions/branchy/store_response", json={"output": [message("answer")]})
    root = (await stored.json())["response_id"]
    later = await sidecar.post("/v1/sessions/branchy/append", json={"items": [message("later", "note-b")]})
    assert later.status == 200, await later.text()
    branch = {"items": [message("other way", "note-b")], "previous_response_id": root}
    branched = await sidecar.post("/v1/sessions/branchy/append", json=branch)
    assert branched.status == 200, await branched.text()


async def test_concurrent_appends_of_one_id_store_it_once(sidecar: Client) -> None:
    made = await sidecar.post("/v1/conversations", json={})
    conversation = (await made.json())["id"]

    async def add(n: int) -> int:
        body = {"items": [message(f"copy {n}", "note-race")]}
        resp = await sidecar.post(f"/v1/conversations/{conversation}/items", json=body)
        return resp.status

    statuses = await asyncio.gather(*(add(n) for n in range(8)))
    assert sorted(statuses) == [200] + [400] * 7, statuses
    assert await item_ids(sidecar, conversation) == ["note-race"]
