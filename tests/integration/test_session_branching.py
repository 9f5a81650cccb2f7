"""The session API branches after an older response (`previous_response_id` on append and store_response)
and refuses fields it does not know, on memory and Redis."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


def conv() -> str:
    return f"c-{os.urandom(6).hex()}"


async def post(client: Client, path: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, json=body)
    return resp.status, await resp.json()


async def history(client: Client, **query: str) -> list[str]:
    resp = await client.get("/v1/sessions/resolve", params=query)
    assert resp.status == 200, await resp.text()
    return [m["content"] for m in (await resp.json())["messages"]]


async def turn(client: Client, cid: str, user: str, answer: str, **extra: Any) -> str:
    """Append a user message and store the answer; the stored response's id."""
    status, body = await post(
        client, f"/v1/sessions/{cid}/append", {"role": "user", "content": user, **extra}
    )
    assert status == 200, body
    message = {"role": "assistant", "content": answer}
    status, body = await post(client, f"/v1/sessions/{cid}/store_response", {"message": message})
    assert status == 200, body
    return str(body["response_id"])


async def test_append_after_an_older_response_branches(sidecar: Client) -> None:
    cid = conv()
    first = await turn(sidecar, cid, "one", "1")
    second = await turn(sidecar, cid, "two", "2")
    branched = await turn(sidecar, cid, "two, again", "2b", previous_response_id=first)

    assert await history(sidecar, previous_response_id=second) == ["one", "1", "two", "2"]
    assert await history(sidecar, previous_response_id=branched) == ["one", "1", "two, again", "2b"]
    # The branch is the conversation's head now; the older line stays readable by its response id.
    assert await history(sidecar, conversation_id=cid) == ["one", "1", "two, again", "2b"]


async def test_store_response_after_an_older_response_branches(sidecar: Client) -> None:
    cid = conv()
    first = await turn(sidecar, cid, "question", "answer")
    await turn(sidecar, cid, "more", "more answer")
    message = {"role": "assistant", "content": "another answer"}
    status, body = await post(
        sidecar, f"/v1/sessions/{cid}/store_response", {"message": message, "previous_response_id": first}
    )
    assert status == 200, body
    assert await history(sidecar, previous_response_id=body["response_id"]) == [
        "question", "answer", "another answer",
    ]  # fmt: skip


@pytest.mark.parametrize("route", ["append", "store_response"])
async def test_an_unknown_or_foreign_previous_response_is_refused(sidecar: Client, route: str) -> None:
    cid, other = conv(), conv()
    foreign = await turn(sidecar, other, "elsewhere", "there")
    await turn(sidecar, cid, "here", "yes")
    body: dict[str, Any] = (
        {"role": "user", "content": "x"}
        if route == "append"
        else {"message": {"role": "assistant", "content": "x"}}
    )
    status, error = await post(
        sidecar, f"/v1/sessions/{cid}/{route}", {**body, "previous_response_id": foreign}
    )
    assert status == 400 and error["error"]["param"] == "previous_response_id"
    status, error = await post(
        sidecar, f"/v1/sessions/{cid}/{route}", {**body, "previous_response_id": "resp_nope"}
    )
    assert status == 400 and error["error"]["code"] == "previous_response_not_found"
    status, error = await post(sidecar, f"/v1/sessions/{cid}/{route}", {**body, "previous_response_id": 7})
    assert status == 400 and error["error"]["param"] == "previous_response_id"
    assert await history(sidecar, conversation_id=cid) == ["here", "yes"]  # nothing written


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("append", {"role": "user", "content": "x", "previous_response": "resp_1"}, "previous_response"),
        ("append", {"items": [], "metadata": {}}, "metadata"),
        ("append", {"messages": [{"role": "user", "content": "x"}], "model": "m"}, "model"),
        ("append", {"messages": [{"role": "user", "content": "x"}], "role": "user"}, "role"),
        ("store_response", {"message": {"role": "assistant", "content": "x"}, "extra": 1}, "extra"),
        ("store_response", {"output": [], "message": {"role": "assistant", "content": "x"}}, "message"),
    ],
)
async def test_unknown_fields_are_refused_naming_them(
    sidecar: Client, route: str, body: dict[str, Any], param: str
) -> None:
    cid = conv()
    status, error = await post(sidecar, f"/v1/sessions/{cid}/{route}", body)
    assert status == 400, error
    assert error["error"]["param"] == param and error["error"]["type"] == "invalid_request_error"
    assert (await sidecar.get(f"/v1/sessions/{cid}")).status == 404  # nothing written


async def test_a_message_with_its_optional_fields_is_accepted(sidecar: Client) -> None:
    cid = conv()
    status, body = await post(
        sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "hi", "name": "ann"}
    )
    assert status == 200, body
