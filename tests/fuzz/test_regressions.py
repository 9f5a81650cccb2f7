"""One test per failure the fuzzer found: each request once answered 500 (or worse), now a 400 naming the
field; the cases still open are strict xfails saying where the fix belongs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.errors import InvalidRequest
from sidecar.wire.chat_messages import message_to_items
from sidecar.wire.items import parse_input

Client = TestClient[Any, Any]
UNHASHABLE = ({}, [], {"a": [1]}, [["user"]])


async def error_of(client: Client, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with client.request(method, path, **kwargs) as response:
        body = await response.json()
        return response.status, body["error"]


@pytest.mark.parametrize("role", UNHASHABLE)
def test_a_chat_role_that_is_an_object_or_a_list_is_invalid(role: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        message_to_items({"role": role, "content": "hi"}, "message")
    assert caught.value.param == "message.role"


def test_a_tool_message_part_whose_text_is_not_a_string_is_skipped() -> None:
    content = ["a", {"type": "output_text", "text": None}, {"text": ["x"]}, 7, {"type": "text", "text": "b"}]
    items = message_to_items({"role": "tool", "tool_call_id": "c1", "content": content}, "message")
    assert items == [{"type": "function_call_output", "call_id": "c1", "output": "ab"}]


@pytest.mark.parametrize("value", UNHASHABLE)
@pytest.mark.parametrize(
    ("item", "param"),
    [
        (lambda v: {"type": v}, "input[0].type"),
        (lambda v: {"role": v, "content": "hi"}, "input[0].role"),
        (lambda v: {"role": "user", "content": [{"type": v}]}, "input[0].content[0].type"),
    ],
)
def test_an_item_type_role_or_part_type_that_is_an_object_or_a_list_is_invalid(
    value: Any, item: Any, param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_input([item(value)])
    assert caught.value.param == param


async def test_append_with_an_object_as_role_is_a_400_naming_it(make_sidecar: Any) -> None:
    client = await make_sidecar(redis_url="memory://")
    for body, param in (
        ({"role": {"a": 1}, "content": "hi"}, "message.role"),
        ({"items": [{"role": [], "content": "0", "type": "message"}]}, "items[0].role"),
    ):
        status, error = await error_of(client, "POST", "/v1/sessions/c1/append", json=body)
        assert (status, error["param"], error["code"]) == (400, param, "invalid_value")
    status, error = await error_of(
        client, "POST", "/v1/sessions/c1/store_response", json={"message": {"role": [{}], "content": "x"}}
    )
    assert (status, error["param"]) == (400, "message.role")
    tool = {
        "role": "tool",
        "tool_call_id": "c",
        "content": ["e\u0301", {"text": None, "type": "output_text"}],
    }
    async with client.post("/v1/sessions/c1/store_response", json={"message": tool}) as response:
        assert response.status == 200


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "9" * 5000, "1" * 16, "-1", "1.5", "", "W/"])
async def test_if_match_that_is_no_version_is_a_400(make_sidecar: Any, value: str) -> None:
    client = await make_sidecar(redis_url="memory://")
    body = {"role": "user", "content": "hi"}
    status, error = await error_of(
        client, "POST", "/v1/sessions/c1/append", json=body, headers={"If-Match": value}
    )
    assert (status, error["param"]) == (400, "If-Match")


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "0", "101", "1" * 10])
async def test_a_limit_that_is_no_small_number_is_a_400(make_sidecar: Any, value: str) -> None:
    client = await make_sidecar(redis_url="memory://")
    async with client.post("/v1/conversations", json={"items": [{"role": "user", "content": "hi"}]}) as r:
        conversation_id = (await r.json())["id"]
    status, error = await error_of(
        client, "GET", f"/v1/conversations/{conversation_id}/items", params={"limit": value}
    )
    assert (status, error["param"]) == (400, "limit")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": "hi", "conversation": "no-such-conversation"},
        {"model": "m", "input": [{"type": "item_reference", "id": "msg_unknown"}]},
    ],
)
async def test_a_refused_response_gives_back_its_idempotency_key(
    make_sidecar: Any, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    monkeypatch.setattr("sidecar.turns.CLAIM_WAIT_SECONDS", 1.0)
    client = await make_sidecar(redis_url="memory://")
    headers = {"Idempotency-Key": "retry-me"}
    first = await error_of(client, "POST", "/v1/responses", json=body, headers=headers)
    started = time.monotonic()
    again = await error_of(client, "POST", "/v1/responses", json=body, headers=headers)
    # The retry is refused the same way, at once: not 409 "still in progress" after a wait.
    assert again == first and time.monotonic() - started < 0.5


@pytest.mark.parametrize("metadata", [[], 0, "", False])
async def test_a_conversation_created_with_metadata_that_is_no_object_is_a_400(
    make_sidecar: Any, metadata: Any
) -> None:
    client = await make_sidecar(redis_url="memory://")
    status, error = await error_of(client, "POST", "/v1/conversations", json={"metadata": metadata})
    assert (status, error["param"]) == (400, "metadata")
