"""Stateful chat completions through the openai SDK: a tool loop pairs the stored call with its output (the
client sees exactly the call ids that are stored), and a stream carries a usage chunk only when asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import CONFIG_KEY, create_fake_engine, recorded
from tests.integration.conftest import SidecarFactory

Client = TestClient[Any, Any]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(params=["memory", "redis"])
async def proxied(
    request: pytest.FixtureRequest, make_sidecar: SidecarFactory
) -> AsyncIterator[tuple[Client, TestServer, openai.AsyncOpenAI]]:
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else "memory://"
    engine = TestServer(create_fake_engine(delay=0.0))
    await engine.start_server()
    sidecar = await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), redis_url=redis_url)
    client = openai.AsyncOpenAI(base_url=str(sidecar.make_url("/v1")), api_key="sk-test", max_retries=0)
    try:
        yield sidecar, engine, client
    finally:
        await client.close()
        await engine.close()


async def stored_items(sidecar: Client, conversation_id: str) -> list[dict[str, Any]]:
    resp = await sidecar.get(f"/v1/conversations/{conversation_id}/items", params={"order": "asc"})
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["data"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_tool_loop_answers_the_call_id_that_is_stored(
    proxied: tuple[Client, TestServer, openai.AsyncOpenAI], stream: bool
) -> None:
    sidecar, engine, client = proxied
    engine.app[CONFIG_KEY].mode = "tool_call"
    conversation = f"chat-{uuid.uuid4().hex}"
    headers = {"X-Conversation-Id": conversation}
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        chunks = await client.chat.completions.create(
            model="m", messages=messages, tools=TOOLS, stream=True, extra_headers=headers
        )
        call_ids = [
            call.id
            async for chunk in chunks
            for call in chunk.choices[0].delta.tool_calls or []
            if call.id is not None
        ]
    else:
        answer = await client.chat.completions.create(
            model="m", messages=messages, tools=TOOLS, extra_headers=headers
        )
        call_ids = [call.id for call in answer.choices[0].message.tool_calls or []]
    assert len(call_ids) == 1
    (call_id,) = call_ids
    stored = await stored_items(sidecar, conversation)
    assert [i["type"] for i in stored] == ["message", "function_call"]
    assert stored[1]["call_id"] == call_id
    # minted by the sidecar in the conversation's slot (as its item ids are), not the engine's `call_<hex>`
    tag = stored[1]["id"][len("fc_") : len("fc_") + 12]
    assert call_id.startswith(f"call_{tag}")

    # The client answers the call by the id it saw: the stored call and output pair, and so does the prompt.
    engine.app[CONFIG_KEY].mode = "ok"
    answer = await client.chat.completions.create(
        model="m",
        messages=[{"role": "tool", "tool_call_id": call_id, "content": "sunny"}],
        stream=False,
        extra_headers=headers,
    )
    assert answer.choices[0].message.content == "echo: sunny"
    stored = await stored_items(sidecar, conversation)
    assert [(i["type"], i.get("call_id")) for i in stored[1:3]] == [
        ("function_call", call_id),
        ("function_call_output", call_id),
    ]
    prompt = recorded(engine.app)[-1]["body"]["messages"]
    assert prompt[1]["tool_calls"][0]["id"] == call_id and prompt[2]["tool_call_id"] == call_id


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_stream_has_a_usage_chunk_only_when_asked(
    proxied: tuple[Client, TestServer, openai.AsyncOpenAI], include_usage: bool
) -> None:
    sidecar, engine, client = proxied
    conversation = f"chat-{uuid.uuid4().hex}"
    chunks = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True} if include_usage else openai.omit,
        extra_headers={"X-Conversation-Id": conversation},
    )
    text, usage = "", []
    async for chunk in chunks:
        if chunk.usage is not None:
            usage.append(chunk.usage)
        if not include_usage:
            text += chunk.choices[0].delta.content or ""  # the usual loop: never an IndexError
        elif chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "echo: hello"
    assert len(usage) == (1 if include_usage else 0)
    # The engine is always asked for usage, so the stored turn has it either way.
    assert recorded(engine.app)[-1]["body"]["stream_options"] == {"include_usage": True}
    stored = await (await sidecar.get(f"/v1/responses/{chunks.response.headers['X-Response-Id']}")).json()
    assert stored["status"] == "completed" and stored["usage"]["output_tokens"] > 0


async def test_stream_options_must_be_an_object(
    proxied: tuple[Client, TestServer, openai.AsyncOpenAI],
) -> None:
    sidecar, _, _ = proxied
    resp = await sidecar.post(
        "/v1/chat/completions",
        json={
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": 1,
        },
        headers={"X-Conversation-Id": f"chat-{uuid.uuid4().hex}"},
    )
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "stream_options"
