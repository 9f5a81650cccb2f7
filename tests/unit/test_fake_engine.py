"""The fake engine records every request and behaves as each mode promises."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import CONFIG_KEY, REQUESTS_KEY, create_fake_engine, recorded

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    }
]


@pytest.fixture
async def engine() -> AsyncIterator[tuple[web.Application, TestClient[web.Request, web.Application]]]:
    app = create_fake_engine(delay=0.01)
    async with TestClient(TestServer(app)) as client:
        yield app, client


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(orjson.loads(line[len("data: ") :]))
    return events


async def post(client: TestClient[Any, Any], path: str, body: dict[str, Any], mode: str = "ok") -> Any:
    return await client.post(path, data=orjson.dumps(body), headers={"X-Fake-Mode": mode})


async def test_records_every_request_body_and_clears(engine: Any) -> None:
    app, client = engine
    history = [
        {"role": "user", "content": "first question"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "first answer"}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
    ]
    resp = await post(client, "/v1/responses", {"model": "m", "input": history})
    assert resp.status == 200
    body = await resp.json()
    assert body["output"][0]["content"][0]["text"] == "echo: second question"
    assert body["usage"]["input_tokens"] == -(-len("first questionfirst answersecond question") // 4)

    assert recorded(app, "/v1/responses")[-1]["body"]["input"] == history
    over_http = await (await client.get("/_fake/requests", params={"path": "/v1/responses"})).json()
    assert over_http[-1]["body"]["input"] == history
    assert (await (await client.delete("/_fake/requests")).json())["cleared"] == 1
    assert app[REQUESTS_KEY] == []


async def test_ids_are_minted_per_call_unless_repeat_ids(engine: Any) -> None:
    _, client = engine
    bodies = [await (await post(client, "/v1/responses", {"input": "x"})).json() for _ in range(2)]
    assert bodies[0]["id"] != bodies[1]["id"]
    assert bodies[0]["id"].startswith("resp_") and bodies[0]["output"][0]["id"].startswith("msg_")
    fixed = [
        await (await post(client, "/v1/responses", {"input": "x"}, "repeat_ids")).json() for _ in range(2)
    ]
    assert {b["id"] for b in fixed} == {"resp_fixed"}
    assert {b["output"][0]["id"] for b in fixed} == {"msg_fixed"}


async def test_responses_stream_is_llamacpp_shaped_or_spec_complete(engine: Any) -> None:
    _, client = engine
    raw = await (await post(client, "/v1/responses", {"input": "hello", "stream": True})).read()
    events = sse_events(raw)
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"
    assert all("sequence_number" not in e and "output_index" not in e for e in events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == events[-1]["response"]["output"][0]["content"][0]["text"] == "echo: hello"

    resp = await client.post(
        "/v1/responses",
        data=orjson.dumps({"input": "hello", "stream": True}),
        headers={"X-Fake-Spec-Complete": "1"},
    )
    events = sse_events(await resp.read())
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all("output_index" in e for e in events if e["type"].startswith("response.output_"))


async def test_chat_stream_has_usage_chunk_and_done(engine: Any) -> None:
    _, client = engine
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = await (await post(client, "/v1/chat/completions", body)).read()
    assert raw.rstrip().endswith(b"data: [DONE]")
    chunks = sse_events(raw)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: hi"
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1


async def test_tool_call_mode_then_text_after_tool_output(engine: Any) -> None:
    _, client = engine
    events = sse_events(
        await (
            await post(
                client, "/v1/responses", {"input": "Paris", "tools": TOOLS, "stream": True}, "tool_call"
            )
        ).read()
    )
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    call = events[-1]["response"]["output"][0]
    assert len(deltas) > 1 and "".join(deltas) == call["arguments"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "Paris", "days": 1}

    follow_up = [
        {"role": "user", "content": "Paris"},
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
    ]
    body = await (
        await post(client, "/v1/responses", {"input": follow_up, "tools": TOOLS}, "tool_call")
    ).json()
    assert body["output"][0]["type"] == "message" and body["output"][0]["content"][0]["text"] == "echo: sunny"

    chat_tools = [{"type": "function", "function": TOOLS[0]}]
    chat = {"messages": [{"role": "user", "content": "Paris"}], "tools": chat_tools, "stream": True}
    chunks = sse_events(await (await post(client, "/v1/chat/completions", chat, "tool_call")).read())
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[2:-1]]
    assert orjson.loads("".join(pieces)) == {"city": "Paris", "days": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_fail_status_is_a_json_500(engine: Any) -> None:
    _, client = engine
    resp = await post(client, "/v1/chat/completions", {"messages": []}, "fail_status")
    assert resp.status == 500
    assert (await resp.json())["error"]["type"] == "server_error"


async def test_fail_midstream_drops_after_two_deltas(engine: Any) -> None:
    _, client = engine
    resp = await post(
        client, "/v1/responses", {"input": "a long enough prompt", "stream": True}, "fail_midstream"
    )
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += chunk
    types = [e["type"] for e in sse_events(received)]
    assert types.count("response.output_text.delta") == 2
    assert "response.completed" not in types


async def test_slow_mode_and_runtime_mode_switch(engine: Any) -> None:
    app, client = engine
    switched = await client.put("/_fake/mode", data=orjson.dumps({"mode": "slow", "delay": 0.02}))
    assert (await switched.json())["mode"] == app[CONFIG_KEY].mode == "slow"
    started = time.monotonic()
    resp = await client.post("/v1/responses", data=orjson.dumps({"input": "x", "stream": True}))
    assert sse_events(await resp.read())[-1]["type"] == "response.completed"
    assert time.monotonic() - started >= 0.02 * 3  # 4 deltas, a pause before each but the first
    assert (await client.put("/_fake/mode", data=orjson.dumps({"mode": "nope"}))).status == 400
    resp = await client.post(
        "/v1/responses", data=orjson.dumps({"input": "x"}), headers={"X-Fake-Mode": "nope"}
    )
    assert resp.status == 400


async def test_small_endpoints(engine: Any) -> None:
    _, client = engine
    assert (await (await client.get("/health")).json()) == {"status": "ok"}
    assert (await (await client.get("/v1/models")).json())["data"][0]["id"] == "fake-model"
    tokens = (await (await client.post("/tokenize", data=orjson.dumps({"content": "hello world!"}))).json())[
        "tokens"
    ]
    assert len(tokens) == 3
    emb = await (await client.post("/v1/embeddings", data=orjson.dumps({"input": ["a", "bb"]}))).json()
    assert [d["index"] for d in emb["data"]] == [0, 1]
