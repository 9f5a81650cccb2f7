"""The session API (CONTRACT §2) with its headers (§3) and errors (§4), on memory and Redis."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
STATE_HEADERS = (
    "X-Request-Id",
    "X-Conversation-Id",
    "X-Conversation-Version",
    "X-Prefix-Fingerprint",
    "X-Estimated-Input-Tokens",
)


def conv() -> str:
    return f"c-{os.urandom(6).hex()}"


async def post(client: Client, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    resp = await client.post(path, json=body, headers=headers)
    return resp.status, await resp.json()


async def session(client: Client, conversation_id: str) -> tuple[int, Any]:
    resp = await client.get(f"/v1/sessions/{conversation_id}")
    return resp.status, await resp.json()


async def test_append_resolve_store_roundtrip(sidecar: Client) -> None:
    cid = conv()
    resp = await sidecar.post(f"/v1/sessions/{cid}/append", json={"role": "user", "content": "Hi\r\nthere"})
    body = await resp.json()
    assert resp.status == 200
    assert set(body) == {
        "conversation_id",
        "version",
        "appended",
        "prefix_fingerprint",
        "estimated_input_tokens",
        "session_size_bytes",
    }
    assert body["conversation_id"] == cid and body["version"] == 1 and body["appended"] == 1
    assert all(h in resp.headers for h in STATE_HEADERS)
    assert resp.headers["X-Conversation-Version"] == "1"

    status, stored = await post(
        sidecar,
        f"/v1/sessions/{cid}/store_response",
        {
            "response": {
                "object": "chat.completion",
                "model": "m",
                "choices": [{"message": {"role": "assistant", "content": "Hello!"}}],
            }
        },
    )
    assert status == 200 and stored["version"] == 2 and stored["response_id"].startswith("resp_")

    resp = await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": stored["response_id"]})
    resolved = await resp.json()
    assert resolved["messages"] == [
        {"role": "user", "content": "Hi\nthere"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert resolved["conversation_id"] == cid and resolved["response_id"] == stored["response_id"]
    assert resp.headers["X-Response-Id"] == stored["response_id"]

    resp = await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})
    assert (await resp.json())["messages"] == resolved["messages"]

    status, got = await session(sidecar, cid)
    assert status == 200 and got["version"] == 2 and got["turns"] == 1
    assert [i["role"] for i in got["items"]] == ["user", "assistant"]
    assert all(i["id"].startswith("msg_") and i["type"] == "message" for i in got["items"])


async def test_messages_items_and_output_shapes(sidecar: Client) -> None:
    cid = conv()
    status, _ = await post(
        sidecar,
        f"/v1/sessions/{cid}/append",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "call f"}]},
            ]
        },
    )
    assert status == 200
    status, _ = await post(
        sidecar,
        f"/v1/sessions/{cid}/store_response",
        {
            "output": [
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"b": 1, "a": 2}'}
            ]
        },
    )
    assert status == 200
    status, _ = await post(
        sidecar,
        f"/v1/sessions/{cid}/append",
        {"items": [{"type": "function_call_output", "call_id": "c1", "output": "42"}]},
    )
    assert status == 200
    resp = await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})
    messages = (await resp.json())["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "call f"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":2,"b":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]


async def test_if_match_conflict(sidecar: Client) -> None:
    cid = conv()
    await post(sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "a"})
    status, body = await post(
        sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "b"}, **{"If-Match": "7"}
    )
    assert (
        status == 409 and body["error"]["code"] == "version_conflict" and body["error"]["param"] == "If-Match"
    )
    status, ok = await post(
        sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "b"}, **{"If-Match": "1"}
    )
    assert status == 200 and ok["version"] == 2


async def test_idempotency_key_replays_and_rejects_another_body(sidecar: Client) -> None:
    cid = conv()
    path = f"/v1/sessions/{cid}/append"
    results = await asyncio.gather(
        *(
            post(sidecar, path, {"role": "user", "content": "once"}, **{"Idempotency-Key": "k1"})
            for _ in range(10)
        )
    )
    assert {r[0] for r in results} == {200} and {r[1]["version"] for r in results} == {1}
    status, body = await post(
        sidecar, path, {"role": "user", "content": "other"}, **{"Idempotency-Key": "k1"}
    )
    assert status == 409 and body["error"]["param"] == "Idempotency-Key"
    _, got = await session(sidecar, cid)
    assert got["version"] == 1 and len(got["items"]) == 1


async def assert_rejected(
    client: Client,
    cid: str,
    status: int,
    body: Any,
    param: Any,
    path: str | None = None,
    raw: bytes | None = None,
) -> dict[str, Any]:
    """The request fails with the OpenAI error body and nothing is written."""
    path = path or f"/v1/sessions/{cid}/append"
    resp = await (client.post(path, data=raw) if raw is not None else client.post(path, json=body))
    error = await resp.json()
    assert resp.status == status, error
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["message"]
    assert error["error"]["param"] == param
    got_status, _ = await session(client, cid)
    assert got_status == 404  # nothing was written: the conversation was never created
    return error["error"]


async def test_bad_inputs_get_openai_errors_and_write_nothing(sidecar: Client) -> None:
    cid = conv()
    err = await assert_rejected(sidecar, cid, 400, None, None, raw=b'{"role": "user", "content":')
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
    await assert_rejected(sidecar, cid, 400, None, None, raw=b"[1, 2]")
    err = await assert_rejected(sidecar, cid, 400, {"role": "wizard", "content": "x"}, "message.role")
    assert err["code"] == "invalid_value"
    await assert_rejected(sidecar, cid, 400, {"role": "user", "content": ""}, "message.content")
    await assert_rejected(sidecar, cid, 400, {"role": "user", "content": 5}, "message.content")
    await assert_rejected(sidecar, cid, 400, {"messages": "nope"}, "messages")
    await assert_rejected(sidecar, cid, 400, {"messages": []}, "messages")
    await assert_rejected(sidecar, cid, 400, {"items": [{"type": "teleport"}]}, "items[0].type")
    await assert_rejected(
        sidecar,
        cid,
        400,
        {"items": [{"role": "user", "content": "ok"}, {"role": "user", "content": [{"type": "hologram"}]}]},
        "items[1].content[0].type",
    )
    await assert_rejected(
        sidecar, cid, 400, {"items": [{"type": "function_call", "name": "f"}]}, "items[0].call_id"
    )
    await assert_rejected(
        sidecar, cid, 400, {"output": "x"}, "output", path=f"/v1/sessions/{cid}/store_response"
    )
    await assert_rejected(
        sidecar,
        cid,
        400,
        # a chosen id may not be shaped like the store's own: it would name another slot's record
        {"message": {"role": "assistant", "content": "x"}, "response_id": "resp_" + "0" * 32},
        "response_id",
        path=f"/v1/sessions/{cid}/store_response",
    )


async def test_body_too_large_is_413(make_sidecar: Any) -> None:
    client = await make_sidecar(redis_url="memory://", max_body_bytes=1000)
    cid = conv()
    await assert_rejected(client, cid, 413, {"role": "user", "content": "x" * 2000}, None)


async def test_malformed_and_unknown_ids(sidecar: Client) -> None:
    resp = await sidecar.post("/v1/sessions/bad:id/append", json={"role": "user", "content": "x"})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "conversation_id"
    resp = await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": "resp_unknown"})
    error = (await resp.json())["error"]
    assert resp.status == 404  # CONTRACT §2: an unknown id is 404
    assert error["message"] == "Response with id 'resp_unknown' not found."
    resp = await sidecar.get("/v1/sessions/resolve", params={"conversation_id": "nope"})
    assert resp.status == 404
    resp = await sidecar.get("/v1/sessions/resolve")
    assert resp.status == 400
    resp = await sidecar.delete("/v1/sessions/nope")
    assert resp.status == 404
    resp = await sidecar.post("/v1/sessions/nope/trim", json={})
    assert resp.status == 404


async def test_trim_validates_and_reports_state(sidecar: Client) -> None:
    cid = conv()
    await post(sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "a"})
    status, body = await post(sidecar, f"/v1/sessions/{cid}/trim", {"keep_last_turns": "x"})
    assert status == 400 and body["error"]["param"] == "keep_last_turns"
    status, body = await post(sidecar, f"/v1/sessions/{cid}/trim", {"keep_last_turns": 2})
    assert status == 200
    assert set(body) == {
        "conversation_id",
        "version",
        "summarised_turns",
        "estimated_input_tokens",
        "prefix_fingerprint",
    }
    assert body["version"] == 1


async def test_reads_of_a_session_carry_the_stateful_headers(sidecar: Client) -> None:
    """CONTRACT §3: every stateful call; a read's match its body (and name the newest stored response)."""
    cid = conv()
    await post(sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "a"})
    _, stored = await post(
        sidecar, f"/v1/sessions/{cid}/store_response", {"message": {"role": "assistant", "content": "b"}}
    )
    for method, path, body in (
        ("GET", f"/v1/sessions/{cid}", None),
        ("POST", f"/v1/sessions/{cid}/trim", {}),
    ):
        resp = await sidecar.request(method, path, json=body)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert all(h in resp.headers for h in STATE_HEADERS), dict(resp.headers)
        assert resp.headers["X-Conversation-Id"] == cid
        assert resp.headers["X-Conversation-Version"] == str(answer["version"]) == "2"
        assert resp.headers["X-Prefix-Fingerprint"] == answer["prefix_fingerprint"]
        assert resp.headers["X-Estimated-Input-Tokens"] == str(answer["estimated_input_tokens"])
        assert resp.headers["X-Response-Id"] == stored["response_id"]


async def test_delete_session_removes_responses(sidecar: Client) -> None:
    cid = conv()
    await post(sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "a"})
    _, stored = await post(
        sidecar, f"/v1/sessions/{cid}/store_response", {"message": {"role": "assistant", "content": "b"}}
    )
    resp = await sidecar.delete(f"/v1/sessions/{cid}")
    assert resp.status == 200 and (await resp.json())["deleted"] is True
    assert (await session(sidecar, cid))[0] == 404
    resp = await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": stored["response_id"]})
    assert resp.status == 404


async def test_health_and_readiness(sidecar: Client) -> None:
    resp = await sidecar.get("/convostore/healthz")
    assert resp.status == 200
    resp = await sidecar.get("/convostore/readyz")
    body = await resp.json()
    assert resp.status == 503 and any("engine" in r for r in body["reasons"])


async def test_a_response_stored_through_the_session_api_is_a_complete_response_object(
    sidecar: Client,
) -> None:
    from tests.conformance import assert_response_resource

    cid = conv()
    await post(sidecar, f"/v1/sessions/{cid}/append", {"role": "user", "content": "hi"})
    chat_completion = {
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "engine-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    _, stored = await post(sidecar, f"/v1/sessions/{cid}/store_response", {"response": chat_completion})
    resp = await sidecar.get(f"/v1/responses/{stored['response_id']}")
    body = await resp.json()
    assert resp.status == 200
    assert_response_resource(body)
    assert body["model"] == "engine-model" and body["created_at"] == 1_700_000_000
    assert body["usage"]["input_tokens"] == 12 and body["usage"]["output_tokens"] == 3
    assert body["output"][0]["content"][0]["text"] == "hello"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/sessions/big/append", {"items": [{"role": "user", "content": "x"}] * 10_001}, "items"),
        ("/v1/sessions/big/append", {"messages": [{"role": "user", "content": "x"}] * 10_001}, "messages"),
        (
            "/v1/sessions/big/store_response",
            {"output": [{"role": "assistant", "content": "x"}] * 10_001},
            "output",
        ),
    ],
)
async def test_a_request_with_too_many_items_is_refused_and_writes_nothing(
    sidecar: Any, path: str, body: dict[str, Any], param: str
) -> None:
    resp = await sidecar.post(path, json=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == param
    assert (await sidecar.get("/v1/sessions/big")).status == 404


async def test_resolve_by_conversation_names_its_newest_stored_response(sidecar: Client) -> None:
    cid = conv()
    await sidecar.post(f"/v1/sessions/{cid}/append", json={"role": "user", "content": "one"})
    resolved = await (await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})).json()
    assert resolved["response_id"] is None  # nothing stored as a response yet
    ids = []
    for text in ("first", "second"):
        stored = await sidecar.post(
            f"/v1/sessions/{cid}/store_response", json={"message": {"role": "assistant", "content": text}}
        )
        ids.append((await stored.json())["response_id"])
    await sidecar.post(f"/v1/sessions/{cid}/append", json={"role": "user", "content": "after"})
    resp = await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})
    resolved = await resp.json()
    assert resolved["response_id"] == ids[1] and resp.headers["X-Response-Id"] == ids[1]
    chained = await sidecar.get(
        "/v1/sessions/resolve", params={"previous_response_id": resolved["response_id"]}
    )
    assert (await chained.json())["messages"][-1] == {"role": "assistant", "content": "second"}
    assert (await sidecar.delete(f"/v1/responses/{ids[1]}")).status == 200
    resolved = await (await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})).json()
    assert resolved["response_id"] == ids[0]
