"""A turn is stored in the conversation it was planned in, or not at all: a conversation deleted while the
engine answers is not made again by the turn's write (its deleted history would live on in the answer), and
one deleted and made again under the same id does not get the old turn. On memory and a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.conftest import SidecarFactory
from tests.integration.test_background import slow

Client = TestClient[Any, Any]


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: SidecarFactory, engine: TestServer) -> Client:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    return await make_sidecar(redis_url=url, upstream=str(engine.make_url("")))


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


async def texts(sidecar: Client, conversation_id: str) -> list[str] | None:
    """The conversation's items as text, None when it does not exist."""
    resp = await sidecar.get(f"/v1/sessions/{conversation_id}")
    if resp.status == 404:
        return None
    assert resp.status == 200, await resp.text()
    return [part["text"] for item in (await resp.json())["items"] for part in item["content"]]


async def mid_turn(engine: TestServer, call: Any, meanwhile: Any) -> Any:
    """Start `call` on a slow engine (0.5 s), run `meanwhile` after 0.2 s, return the call's answer."""
    slow(engine, 0.1, 5)
    running = asyncio.ensure_future(call)
    await asyncio.sleep(0.2)
    await meanwhile()
    return await running


async def test_a_stateful_chat_turn_does_not_bring_back_a_conversation_deleted_under_it(
    sidecar: Client, engine: TestServer
) -> None:
    headers = {"X-Conversation-Id": "deleted-under-a-turn"}
    first = await sidecar.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "one"}]},
        headers=headers,
    )
    assert first.status == 200, await first.text()

    async def delete() -> None:
        assert (await sidecar.delete("/v1/sessions/deleted-under-a-turn")).status == 200

    body = {"model": "m", "messages": [{"role": "user", "content": "two"}]}
    answer = await mid_turn(engine, sidecar.post("/v1/chat/completions", json=body, headers=headers), delete)
    # The engine answered from the deleted history: storing it would make the conversation again, holding an
    # answer to turns it no longer has. Stateful chat makes conversations, but only ones that do not exist.
    assert answer.status == 404, await answer.text()
    assert (await answer.json())["error"][
        "message"
    ] == "Conversation with id 'deleted-under-a-turn' not found."
    assert await texts(sidecar, "deleted-under-a-turn") is None


async def test_a_conversation_made_again_under_its_id_does_not_get_the_old_turn(
    sidecar: Client, engine: TestServer
) -> None:
    made = await sidecar.post("/v1/sessions/made-again/append", json={"items": [user("old life")]})
    assert made.status == 200, await made.text()

    async def delete_and_make_again() -> None:
        assert (await sidecar.delete("/v1/sessions/made-again")).status == 200
        again = await sidecar.post("/v1/sessions/made-again/append", json={"items": [user("new life")]})
        assert again.status == 200, await again.text()

    body = {"model": "m", "input": "a turn of the old life", "conversation": "made-again"}
    answer = await mid_turn(engine, sidecar.post("/v1/responses", json=body), delete_and_make_again)
    assert answer.status == 404, await answer.text()
    assert (await answer.json())["error"]["message"] == "Conversation with id 'made-again' not found."
    assert await texts(sidecar, "made-again") == ["new life"]


async def test_a_turn_in_a_conversation_left_alone_is_stored_as_before(
    sidecar: Client, engine: TestServer
) -> None:
    made = await sidecar.post("/v1/sessions/left-alone/append", json={"items": [user("hello")]})
    assert made.status == 200, await made.text()

    async def nothing() -> None:
        return None

    body = {"model": "m", "input": "and then", "conversation": "left-alone"}
    answer = await mid_turn(engine, sidecar.post("/v1/responses", json=body), nothing)
    assert answer.status == 200, await answer.text()
    stored = await texts(sidecar, "left-alone")
    assert stored is not None and stored == ["hello", "and then", "echo: and then"]


@pytest.fixture(params=["memory", "redis"])
async def short_lived(
    request: pytest.FixtureRequest,
    make_sidecar: SidecarFactory,
    engine: TestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Client:
    """Conversations that live 1 s after their last use; a running turn renews what it needs every 0.1 s."""
    monkeypatch.setattr("sidecar.turns.CLAIM_RENEW_SECONDS", 0.1)
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    return await make_sidecar(redis_url=url, upstream=str(engine.make_url("")), ttl_seconds=1)


@pytest.mark.parametrize("continues", ["previous_response_id", "conversation"])
async def test_a_turn_longer_than_the_ttl_keeps_the_conversation_it_continues(
    short_lived: Client, engine: TestServer, continues: str
) -> None:
    sidecar, conversation = short_lived, f"outlived-by-{continues}"
    made = await sidecar.post(
        f"/v1/sessions/{conversation}/store_response",
        json={"message": {"role": "assistant", "content": "hi"}},
    )
    assert made.status == 200, await made.text()
    first = (await made.json())["response_id"]
    slow(engine, 0.25, 10)  # 2.5 s: the conversation would have expired twice over
    link = (
        {"previous_response_id": first}
        if continues == "previous_response_id"
        else {"conversation": conversation}
    )
    long = await sidecar.post("/v1/responses", json={"model": "m", "input": "a long one", **link})
    assert long.status == 200, await long.text()
    assert await texts(sidecar, conversation) == ["hi", "a long one", "echo: a long one"]
    chained = await sidecar.post(
        "/v1/responses",
        json={"model": "m", "input": "next", "previous_response_id": (await long.json())["id"]},
    )
    assert chained.status == 200, await chained.text()
