"""A client's own item ids are kept (RESPONSES_API.md: ids are minted for the items that carry none), so an
item_reference or the items routes find an item by the id its client gave it; an id given twice is refused as
OpenAI refuses it. Output items stored through the session API get the sidecar's ids, as relayed ones do."""

from __future__ import annotations

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
