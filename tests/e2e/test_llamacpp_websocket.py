"""End to end on a real engine, WebSocket mode: a two-turn session through the SDK's
`client.responses.connect()`, in both upstream modes, on Redis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conformance import assert_event_sequence, assert_response_resource
from tests.e2e.sdk_objects import MODEL, SAMPLING, input_texts
from tests.e2e.wire_tap import TappedOpenAI

pytestmark = pytest.mark.slow

_TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


def _one_response(conn: Any) -> list[dict[str, Any]]:
    """The messages of one response, up to its terminal event, each parsed by the SDK too."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in _TERMINAL:
        raw = conn.recv_bytes()
        conn.parse_event(raw)
        events.append(orjson.loads(raw))
    return events


def _text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


def test_a_two_turn_websocket_session_carries_the_first_turn(client: TappedOpenAI) -> None:
    with client.responses.connect() as conn:
        conn.response.create(model=MODEL, input="Say hello.", **SAMPLING)
        first = _one_response(conn)
        assert_event_sequence(first)
        assert first[-1]["type"] in ("response.completed", "response.incomplete"), first[-1]
        first_response = first[-1]["response"]
        streamed = "".join(e["delta"] for e in first if e["type"] == "response.output_text.delta")
        assert streamed == _text(first_response) != ""
        conn.response.create(
            model=MODEL, input="Say it again.", previous_response_id=first_response["id"], **SAMPLING
        )
        second = _one_response(conn)
    assert_event_sequence(second)
    second_response = second[-1]["response"]
    assert second[-1]["type"] in ("response.completed", "response.incomplete"), second[-1]
    assert second_response["previous_response_id"] == first_response["id"]
    # The second turn carried the first: its stored input is the first turn's input and answer, then its own.
    assert input_texts(client, second_response["id"]) == [
        "Say hello.",
        _text(first_response),
        "Say it again.",
    ]
    stored = client.responses.retrieve(second_response["id"])
    assert stored.status == second_response["status"]
    assert stored.output_text == _text(second_response)
    assert_response_resource(client.tap.response_resource(stored.id))
    # The engine saw the whole history: more prompt tokens than the first turn's.
    assert second_response["usage"]["input_tokens"] > first_response["usage"]["input_tokens"]
