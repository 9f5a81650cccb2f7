"""Conversations API, stateful chat completions and pass-through, against the fake engine in-process."""

from __future__ import annotations

import os
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openai.types.conversations import Message

from tests.conformance import assert_response_resource
from tests.fixtures.fake_engine import recorded

Client = TestClient[Any, Any]


@pytest.fixture(params=["responses", "chat"])
async def proxied(
    request: pytest.FixtureRequest, engine: TestServer, make_sidecar: Any
) -> tuple[Client, TestServer]:
    redis = request.getfixturevalue("redis_server")
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"), upstream_api=request.param, redis_url=redis.url
    )
    return sidecar, engine


def sdk(client: Client) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="sk-test", max_retries=0)


def engine_inputs(engine: TestServer) -> list[Any]:
    """What the engine was asked last: Responses `input` or chat `messages`."""
    body = recorded(engine.app)[-1]["body"]
    return body.get("input") or body.get("messages")


def texts_of(inputs: list[Any]) -> list[str]:
    out = []
    for entry in inputs:
        content = entry.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.append("".join(p.get("text", "") for p in content))
    return out


async def test_conversation_items_reach_the_prompt_and_the_turn_is_appended(
    proxied: tuple[Client, TestServer],
) -> None:
    sidecar, engine = proxied
    client = sdk(sidecar)
    conv = await client.conversations.create(
        items=[{"role": "user", "content": "My name is Bob."}], metadata={"k": "v"}
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"k": "v"}
    first = await client.responses.create(model="m", input="What is my name?", conversation=conv.id)
    assert first.conversation is not None and first.conversation.id == conv.id
    assert_response_resource(await (await sidecar.get(f"/v1/responses/{first.id}")).json())
    assert texts_of(engine_inputs(engine)) == ["My name is Bob.", "What is my name?"]
    await client.responses.create(model="m", input="And again?", conversation={"id": conv.id})
    assert texts_of(engine_inputs(engine)) == [
        "My name is Bob.",
        "What is my name?",
        "echo: What is my name?",
        "And again?",
    ]
    items = await client.conversations.items.list(conv.id, order="asc")
    assert [i.role for i in items.data] == ["user", "user", "assistant", "user", "assistant"]
    assert items.data[2].content[0].text == "echo: What is my name?"


async def test_conversation_crud_and_items(proxied: tuple[Client, TestServer]) -> None:
    sidecar, _ = proxied
    client = sdk(sidecar)
    conv = await client.conversations.create()
    added = await client.conversations.items.create(
        conv.id,
        items=[{"role": "user", "content": "a"}, {"type": "message", "role": "assistant", "content": "b"}],
    )
    assert [i.role for i in added.data] == ["user", "assistant"]
    page = await client.conversations.items.list(conv.id, limit=1)
    assert page.data[0].id == added.data[1].id and page.has_more  # default order is desc
    page2 = await client.conversations.items.list(conv.id, limit=1, after=page.data[0].id)
    assert page2.data[0].id == added.data[0].id and not page2.has_more
    item = await client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert item.id == added.data[0].id
    # Every listed item as OpenAI's models require it, its status included (stored input items have none).
    listed = await (await sidecar.get(f"/v1/conversations/{conv.id}/items")).json()
    one = await (await sidecar.get(f"/v1/conversations/{conv.id}/items/{added.data[0].id}")).json()
    for raw in [*listed["data"], one]:
        assert raw["status"] == "completed"
        Message.model_validate(raw)
    updated = await client.conversations.update(conv.id, metadata={"topic": "x"})
    assert updated.metadata == {"topic": "x"}
    after_delete = await client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert after_delete.id == conv.id
    remaining = await client.conversations.items.list(conv.id)
    assert [i.id for i in remaining.data] == [added.data[1].id]
    deleted = await client.conversations.delete(conv.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="m", input="x", conversation=conv.id)


async def test_conversation_and_previous_response_together_is_400(proxied: tuple[Client, TestServer]) -> None:
    sidecar, _ = proxied
    client = sdk(sidecar)
    conv = await client.conversations.create()
    first = await client.responses.create(model="m", input="hi")
    with pytest.raises(openai.BadRequestError) as err:
        await client.responses.create(
            model="m", input="x", conversation=conv.id, previous_response_id=first.id
        )
    assert err.value.status_code == 400


async def test_too_many_items_and_unknown_item(proxied: tuple[Client, TestServer]) -> None:
    sidecar, _ = proxied
    conv = (await (await sidecar.post("/v1/conversations", json={})).json())["id"]
    resp = await sidecar.post(
        f"/v1/conversations/{conv}/items", json={"items": [{"role": "user", "content": "x"}] * 21}
    )
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "items"
    resp = await sidecar.get(f"/v1/conversations/{conv}/items/msg_nope")
    assert resp.status == 404
    resp = await sidecar.post(
        "/v1/conversations/conv_unknown/items", json={"items": [{"role": "user", "content": "x"}]}
    )
    assert resp.status == 404


async def test_stateful_chat_prepends_history_and_stores_turns(proxied: tuple[Client, TestServer]) -> None:
    sidecar, engine = proxied
    client = sdk(sidecar)
    cid = f"chat-{os.urandom(4).hex()}"
    headers = {"X-Conversation-Id": cid}
    raw = await client.chat.completions.with_raw_response.create(
        model="m",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "one"}],
        extra_headers=headers,
    )
    first = raw.parse()
    assert first.choices[0].message.content == "echo: one"
    for name in (
        "x-request-id",
        "x-response-id",
        "x-conversation-id",
        "x-conversation-version",
        "x-prefix-fingerprint",
        "x-estimated-input-tokens",
    ):
        assert raw.headers.get(name), name
    first_response = raw.headers["x-response-id"]

    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "two"}], stream=True, extra_headers=headers
    )
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert streamed == "echo: two"
    assert engine_inputs(engine) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
    ]
    resolved = await (await sidecar.get("/v1/sessions/resolve", params={"conversation_id": cid})).json()
    assert [m["content"] for m in resolved["messages"]][-2:] == ["two", "echo: two"]
    assert resolved["version"] == 2

    stored = await client.responses.retrieve(first_response)
    assert stored.output_text == "echo: one"
    assert stored.conversation is not None and stored.conversation.id == cid  # as /v1/responses has it

    with pytest.raises(openai.BadRequestError) as unknown:  # the header the client sent is named
        await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Previous-Response-Id": "resp_x"},
        )
    assert unknown.value.code == "previous_response_not_found"
    assert unknown.value.param == "X-Previous-Response-Id"

    # Branch from the first turn: the engine sees only that turn's history.
    await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "three"}],
        extra_headers={**headers, "X-Previous-Response-Id": first_response},
    )
    assert texts_of(engine_inputs(engine)) == ["Be terse.", "one", "echo: one", "three"]


async def test_chat_without_state_headers_is_a_plain_pass_through(proxied: tuple[Client, TestServer]) -> None:
    sidecar, engine = proxied
    resp = await sidecar.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    body = await resp.json()
    assert resp.status == 200 and body["choices"][0]["message"]["content"] == "echo: hi"
    assert "X-Conversation-Id" not in resp.headers
    assert recorded(engine.app)[-1]["body"]["messages"] == [{"role": "user", "content": "hi"}]


async def test_other_routes_pass_through(proxied: tuple[Client, TestServer]) -> None:
    sidecar, engine = proxied
    models = await sdk(sidecar).models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    resp = await sidecar.post("/tokenize?x=1", json={"content": "hello world"})
    assert resp.status == 200 and "tokens" in await resp.json()
    assert recorded(engine.app)[-1]["path"] == "/tokenize"
    resp = await sidecar.get("/no/such/route")
    assert resp.status == 404  # the engine's own answer, passed on


async def test_store_down_is_503_but_pass_through_keeps_working(
    engine: TestServer, make_sidecar: Any
) -> None:
    from tests.fixtures.redis_servers import RedisServer

    redis = RedisServer()
    try:
        sidecar = await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), redis_url=redis.url)
        redis.stop()
        resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "hi"})
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "store_unavailable"
        resp = await sidecar.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert resp.status == 200
        ready = await sidecar.get("/convostore/readyz")
        assert ready.status == 503
    finally:
        redis.stop()


async def test_item_reference_is_resolved_from_the_stored_history(proxied: tuple[Client, TestServer]) -> None:
    sidecar, engine = proxied
    first = await (await sidecar.post("/v1/responses", json={"model": "m", "input": "remember this"})).json()
    items = await (await sidecar.get(f"/v1/responses/{first['id']}/input_items")).json()
    referenced = items["data"][0]["id"]
    resp = await sidecar.post(
        "/v1/responses",
        json={
            "model": "m",
            "previous_response_id": first["id"],
            "input": [{"type": "item_reference", "id": referenced}],
        },
    )
    assert resp.status == 200
    assert texts_of(engine_inputs(engine)) == ["remember this", "echo: remember this", "remember this"]
    resp = await sidecar.post(
        "/v1/responses",
        json={
            "model": "m",
            "previous_response_id": first["id"],
            "input": [{"type": "item_reference", "id": "msg_x"}],
        },
    )
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["param"] == "input[0].id"


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions", "/v1/models"])
async def test_engine_key_is_ours_when_configured_else_the_clients(
    engine: TestServer, make_sidecar: Any, route: str
) -> None:
    """CONVOSTORE_UPSTREAM_API_KEY replaces the client's key; without it the client's key is passed on,
    and so is the trace context."""
    body = (
        {"model": "m", "input": "hi"}
        if route == "/v1/responses"
        else {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    upstream = str(engine.make_url("")).rstrip("/")
    headers = {
        "Authorization": "Bearer sk-client",
        "Connection": "keep-alive, X-Drop",
        "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    for key, expected in ((None, "Bearer sk-client"), ("sk-engine", "Bearer sk-engine")):
        sidecar = await make_sidecar(upstream=upstream, upstream_api_key=key)
        if route == "/v1/models":
            resp = await sidecar.get(route, headers=headers)
        else:
            resp = await sidecar.post(route, json=body, headers=headers)
        assert resp.status == 200
        seen = recorded(engine.app)[-1]["headers"]
        assert seen.get("Authorization") == expected
        # The trace goes on (the engine call is a span of the sidecar's own, so its parent id may differ).
        assert (
            seen.get("traceparent", seen.get("Traceparent", "")).split("-")[1]
            == "0af7651916cd43dd8448eb211c80319c"
        )


@pytest.mark.parametrize("stream", ["yes", 1, {}, [True]])
async def test_stateful_chat_stream_of_the_wrong_type_is_400_and_nothing_is_stored(
    proxied: tuple[Client, TestServer], stream: Any
) -> None:
    sidecar, engine = proxied
    cid = f"chat-{os.urandom(4).hex()}"
    calls = len(recorded(engine.app))
    resp = await sidecar.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "one"}], "stream": stream},
        headers={"X-Conversation-Id": cid},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "stream"
    assert len(recorded(engine.app)) == calls  # the engine was not asked
    assert (await sidecar.get(f"/v1/conversations/{cid}")).status == 404
