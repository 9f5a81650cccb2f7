"""The Open Responses compliance cases (openresponses.org/compliance), sent as raw JSON the way the
compliance runner sends them, against an engine whose own output fails them (no sequence numbers, no
output indexes, stub response objects). Every answer must validate against the spec's models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conformance import assert_event_sequence, assert_response_resource
from tests.fixtures.fake_engine import create_fake_engine
from tests.integration.responses_stack import parse_sse

Client = TestClient[Any, Any]
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
IMAGE = "https://upload.wikimedia.org/wikipedia/commons/thumb/3/3a/Cat03.jpg/120px-Cat03.jpg"

CASES: dict[str, dict[str, Any]] = {
    "basic-response": {
        "input": [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}]
    },
    "streaming-response": {
        "input": [{"type": "message", "role": "user", "content": "Count 1 to 5."}],
        "stream": True,
    },
    "system-prompt": {
        "input": [
            {"type": "message", "role": "system", "content": "You are a pirate."},
            {"type": "message", "role": "user", "content": "Say hello."},
        ]
    },
    "tool-calling": {
        "input": [{"type": "message", "role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL],
    },
    "image-input": {
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": IMAGE},
                ],
            }
        ]
    },
    "multi-turn": {
        "input": [
            {"type": "message", "role": "user", "content": "My name is Alice."},
            {"type": "message", "role": "assistant", "content": "Hello Alice!"},
            {"type": "message", "role": "user", "content": "What is my name?"},
        ]
    },
    "streaming-tool-calling": {
        "input": [{"type": "message", "role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER_TOOL],
        "stream": True,
    },
}


@pytest.fixture(params=["responses", "chat"])
async def sidecar(request: pytest.FixtureRequest, make_sidecar: Any) -> AsyncIterator[Client]:
    engine = TestServer(create_fake_engine(mode="tool_call"))  # answers with a call when given tools
    await engine.start_server()
    yield await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), upstream_api=request.param)
    await engine.close()


@pytest.mark.parametrize("case", sorted(CASES))
async def test_compliance_case(sidecar: Client, case: str) -> None:
    body = {"model": "any-model", **CASES[case]}
    resp = await sidecar.post("/v1/responses", json=body)
    assert resp.status == 200, await resp.text()
    if body.get("stream"):
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = parse_sse(await resp.read())
        assert_event_sequence(events)
        final = events[-1]["response"]
    else:
        final = await resp.json()
    assert_response_resource(final)
    assert final["status"] == "completed"
    kinds = [item["type"] for item in final["output"]]
    if "tools" in body:
        assert kinds == ["function_call"] and final["output"][0]["name"] == "get_weather"
        assert final["tools"][0]["name"] == "get_weather"
    else:
        assert kinds == ["message"] and final["output"][0]["content"][0]["text"]
    stored = await sidecar.get(f"/v1/responses/{final['id']}")
    assert stored.status == 200
    assert_response_resource(await stored.json())
