"""If-Match is compare-and-set on a conversation on every route that writes one (CONTRACT §3), not only the
session API: a stale version is 409 version_conflict before the engine is called, and a write that lands
while the engine answers makes the turn a 409 that stores nothing. On memory and a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import recorded
from tests.integration.conftest import SidecarFactory
from tests.integration.test_background import slow
from tests.integration.test_turn_in_its_conversation import texts, user

Client = TestClient[Any, Any]


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: SidecarFactory, engine: TestServer) -> Client:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    if request.param == "redis":
        request.getfixturevalue("redis_server").flushall()
    return await make_sidecar(redis_url=url, upstream=str(engine.make_url("")))


async def conversation_at_version_2(sidecar: Client, name: str) -> str:
    """A conversation of two session-API writes, with a stored response: (its newest response id)."""
    assert (await sidecar.post(f"/v1/sessions/{name}/append", json={"items": [user("hello")]})).status == 200
    stored = await sidecar.post(
        f"/v1/sessions/{name}/store_response", json={"message": {"role": "assistant", "content": "hi"}}
    )
    assert stored.status == 200, await stored.text()
    assert (await stored.json())["version"] == 2
    return str((await stored.json())["response_id"])


def assert_conflict(status: int, body: dict[str, Any]) -> None:
    assert status == 409, body
    assert body["error"]["code"] == "version_conflict" and body["error"]["param"] == "If-Match"


CALLS = {
    "responses-conversation": (
        "/v1/responses",
        lambda name, _: {"model": "m", "input": "x", "conversation": name},
        {},
    ),
    "responses-chained": (
        "/v1/responses",
        lambda _, rid: {"model": "m", "input": "x", "previous_response_id": rid},
        {},
    ),
    "chat": (
        "/v1/chat/completions",
        lambda *_: {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        None,
    ),
    "conversation-items": ("/v1/conversations/{name}/items", lambda *_: {"items": [user("x")]}, {}),
}


def call(kind: str, name: str, response_id: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    path, body, headers = CALLS[kind]
    return (
        path.format(name=name),
        body(name, response_id),
        {"X-Conversation-Id": name} if headers is None else {},
    )


@pytest.mark.parametrize("kind", list(CALLS))
async def test_a_stale_version_is_409_before_the_engine_is_called(
    sidecar: Client, engine: TestServer, kind: str
) -> None:
    name = f"stale-{kind}"
    response_id = await conversation_at_version_2(sidecar, name)
    path, body, headers = call(kind, name, response_id)
    refused = await sidecar.post(path, json=body, headers={**headers, "If-Match": "1"})
    assert_conflict(refused.status, await refused.json())
    assert recorded(engine.app) == []
    assert await texts(sidecar, name) == ["hello", "hi"]
    written = await sidecar.post(path, json=body, headers={**headers, "If-Match": '"2"'})
    assert written.status == 200, await written.text()
    if kind != "conversation-items":
        assert written.headers["X-Conversation-Version"] == "3"
    assert len(await texts(sidecar, name) or []) > 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_write_landing_while_the_engine_answers_makes_the_turn_a_conflict(
    sidecar: Client, engine: TestServer, stream: bool
) -> None:
    name = f"moved-{stream}"
    await conversation_at_version_2(sidecar, name)
    slow(engine, 0.1, 5)
    body = {"model": "m", "input": "on version 2", "conversation": name, "stream": stream}
    turn = asyncio.ensure_future(sidecar.post("/v1/responses", json=body, headers={"If-Match": "2"}))
    await asyncio.sleep(0.2)
    assert (
        await sidecar.post(f"/v1/sessions/{name}/append", json={"items": [user("meanwhile")]})
    ).status == 200
    answer = await turn
    if stream:  # the headers went out before the write: the stream ends failed, saying why; nothing stored
        body = await answer.read()
        assert answer.status == 200 and b'"type":"response.failed"' in body
        assert (
            b"The conversation moved to version 3; If-Match did not match: this answer was not stored."
            in body
        )
    else:
        assert_conflict(answer.status, await answer.json())
    assert await texts(sidecar, name) == ["hello", "hi", "meanwhile"]
