"""Every way the fake engine can misbehave (cut and dropped streams, malformed and wrong-shape events and
bodies, error events, 4xx/429/5xx with and without JSON), through both Responses relays and stateful chat,
streamed and not, on both stores: the client always gets a well-formed stream or error, and the store holds
exactly what the client was told (a failed turn stored failed; a request refused before any byte, nothing)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.wire.sse import DONE, SSEDecoder
from tests.conformance import assert_event_sequence, assert_response_resource
from tests.fixtures.fake_engine import CONFIG_KEY, create_fake_engine
from tests.integration.conftest import SidecarFactory
from tests.integration.responses_stack import parse_sse

Client = TestClient[Any, Any]
JSON = dict[str, Any]

RELAYS = ("responses", "chat", "stateful_chat")  # Responses on a Responses engine, on a chat engine; chat
BACKENDS = ("memory", "redis")
# Modes where a stream goes wrong after it started; a non-streamed answer under them is garbage (a 502).
BROKEN = (
    "cut_stream",
    "fail_midstream",
    "malformed_json",
    "wrong_shape",
    "wrong_item",
    "non_object",
    "error_event",
)
# (engine status, JSON error body?) -> the status the client gets
STATUSES = {(400, True): 400, (400, False): 400, (429, True): 429, (429, False): 429, (500, True): 502}
STATUSES |= {(500, False): 502, (503, True): 502}


@dataclass
class Setup:
    relay: str
    engine: TestServer
    sidecar: Client

    def misbehave(self, mode: str, **settings: Any) -> None:
        config = self.engine.app[CONFIG_KEY]
        config.mode = mode
        for name, value in settings.items():
            setattr(config, name, value)


@pytest.fixture(params=[(r, b) for r in RELAYS for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
async def setup(request: pytest.FixtureRequest, make_sidecar: SidecarFactory) -> AsyncIterator[Setup]:
    relay, backend = request.param
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else "memory://"
    engine = TestServer(create_fake_engine(deltas=4, delay=0.0))
    await engine.start_server()
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"),
        upstream_api="chat" if relay == "chat" else "responses",
        redis_url=redis_url,
    )
    try:
        yield Setup(relay, engine, sidecar)
    finally:
        await engine.close()


@dataclass
class Outcome:
    status: int
    headers: Any
    body: bytes
    conversation_id: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(setup: Setup, *, stream: bool) -> Outcome:
    """One turn in a fresh conversation, so what the store holds afterwards is this turn's alone."""
    if setup.relay == "stateful_chat":
        conversation_id = f"chat-{uuid.uuid4().hex}"
        resp = await setup.sidecar.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hello there"}], "stream": stream},
            headers={"X-Conversation-Id": conversation_id},
        )
    else:
        created = await setup.sidecar.post("/v1/conversations", json={})
        conversation_id = (await created.json())["id"]
        resp = await setup.sidecar.post(
            "/v1/responses",
            json={"model": "m", "input": "hello there", "stream": stream, "conversation": conversation_id},
        )
    return Outcome(resp.status, resp.headers, await resp.read(), conversation_id)


async def stored_items(setup: Setup, conversation_id: str) -> list[JSON]:
    resp = await setup.sidecar.get(f"/v1/conversations/{conversation_id}/items", params={"order": "asc"})
    if resp.status == 404:
        return []
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["data"])


async def stored_response(setup: Setup, response_id: str) -> JSON:
    resp = await setup.sidecar.get(f"/v1/responses/{response_id}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert_response_resource(body)
    return dict(body)


def assert_openai_error(outcome: Outcome, status: int) -> None:
    assert outcome.status == status, outcome.body
    assert outcome.headers["Content-Type"].startswith("application/json")
    body = outcome.json
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]


async def assert_nothing_stored(setup: Setup, outcome: Outcome) -> None:
    assert await stored_items(setup, outcome.conversation_id) == []


def chat_frames(body: bytes) -> list[Any]:
    """Every `data:` payload of a chat stream: `DONE` for `[DONE]`, else the decoded JSON."""
    decoder = SSEDecoder()
    return [DONE if m.data == DONE else orjson.loads(m.data) for m in [*decoder.feed(body), *decoder.flush()]]


async def streamed_status(setup: Setup, outcome: Outcome) -> tuple[str, str]:
    """Check the stream is whole and well-formed; return the status it told the client and the text."""
    assert outcome.status == 200 and outcome.headers["Content-Type"].startswith("text/event-stream")
    if setup.relay != "stateful_chat":
        events = parse_sse(outcome.body)
        assert_event_sequence(events)
        final = events[-1]["response"]
        assert final["id"] == outcome.headers["X-Response-Id"]
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        return str(final["status"]), text
    frames = chat_frames(outcome.body)
    assert frames, "an empty chat stream"
    *chunks, last = frames
    for chunk in chunks:
        # Nothing the usual `chunk.choices[0].delta` loop trips over: no usage chunk nobody asked for, no
        # error, no [DONE] before the end.
        assert isinstance(chunk, dict) and "error" not in chunk, chunk
        assert chunk["choices"] and isinstance(chunk["choices"][0]["delta"], dict), chunk
        assert "usage" not in chunk or chunk["usage"] is None, chunk
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    if last == DONE:
        return "completed", text
    assert set(last) == {"error"} and last["error"]["message"], last
    return "failed", text


async def assert_stored_as_told(setup: Setup, outcome: Outcome, told: str) -> JSON:
    stored = await stored_response(setup, outcome.headers["X-Response-Id"])
    assert stored["status"] == told
    assert stored["conversation"] is None or stored["conversation"]["id"] == outcome.conversation_id
    items = await stored_items(setup, outcome.conversation_id)
    assert items[0]["role"] == "user" and [i["id"] for i in items[1:]] == [i["id"] for i in stored["output"]]
    return stored


# --------------------------------------------------------------------------------------------------


async def test_a_good_engine_is_the_control(setup: Setup) -> None:
    for stream in (False, True):
        outcome = await call(setup, stream=stream)
        if stream:
            told, text = await streamed_status(setup, outcome)
            assert text == "echo: hello there"
        else:
            assert outcome.status == 200, outcome.body
            told = "completed"
        assert told == "completed"
        stored = await assert_stored_as_told(setup, outcome, told)
        assert stored["output"][-1]["content"][0]["text"] == "echo: hello there"


@pytest.mark.parametrize("mode", BROKEN)
async def test_a_stream_that_goes_wrong_ends_failed_and_is_stored_failed(setup: Setup, mode: str) -> None:
    setup.misbehave(mode)
    outcome = await call(setup, stream=True)
    told, text = await streamed_status(setup, outcome)
    assert told == "failed" and text == "echo: hell"  # the two deltas before it went wrong
    stored = await assert_stored_as_told(setup, outcome, "failed")
    assert stored["error"]["message"]
    if mode == "error_event":
        assert "fake engine exploded" in stored["error"]["message"]
    # What the client was streamed before it went wrong is kept, no more.
    texts = [p["text"] for item in stored["output"] for p in item.get("content") or [] if "text" in p]
    assert "".join(texts) == text


@pytest.mark.parametrize("mode", [*BROKEN, "not_sse"])
async def test_a_garbage_answer_is_a_502_and_stores_nothing(setup: Setup, mode: str) -> None:
    setup.misbehave(mode)
    # not_sse only breaks streams: a stream request answered with a whole JSON body
    outcome = await call(setup, stream=mode == "not_sse")
    assert_openai_error(outcome, 502)
    assert outcome.json["error"]["type"] == "server_error"
    await assert_nothing_stored(setup, outcome)


@pytest.mark.parametrize(("engine_status", "json_error"), list(STATUSES), ids=lambda v: str(v))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_engine_error_status_is_passed_on_and_stores_nothing(
    setup: Setup, engine_status: int, json_error: bool, stream: bool
) -> None:
    setup.misbehave("fail_status", status=engine_status, json_error=json_error)
    outcome = await call(setup, stream=stream)
    expected = STATUSES[(engine_status, json_error)]
    assert_openai_error(outcome, expected)
    assert "fake engine failure" in outcome.json["error"]["message"]
    if expected == 429:
        # a gateway backs off as the engine asked
        assert outcome.headers["Retry-After"] == "7"
        assert outcome.headers["x-ratelimit-remaining-requests"] == "0"
        assert outcome.json["error"]["code"] == "rate_limit_exceeded"
    await assert_nothing_stored(setup, outcome)


async def test_a_client_that_leaves_mid_stream_leaves_an_incomplete_turn(setup: Setup) -> None:
    setup.misbehave("slow", delay=0.05, deltas=40)  # 2 s of answer if nobody left
    outcome_headers: Any
    if setup.relay == "stateful_chat":
        resp = await setup.sidecar.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "a long answer"}], "stream": True},
            headers={"X-Conversation-Id": f"chat-{uuid.uuid4().hex}"},
        )
    else:
        resp = await setup.sidecar.post(
            "/v1/responses", json={"model": "m", "input": "a long answer", "stream": True}
        )
    assert resp.status == 200
    await resp.content.readany()
    outcome_headers = resp.headers
    resp.close()

    deadline = asyncio.get_running_loop().time() + 2.0
    while True:
        got = await setup.sidecar.get(f"/v1/responses/{outcome_headers['X-Response-Id']}")
        if got.status == 200:
            break
        assert asyncio.get_running_loop().time() < deadline, await got.text()
        await asyncio.sleep(0.01)
    stored = await got.json()
    assert_response_resource(stored)
    # a reason the API defines (the SDK's typed models accept it), not one of our own
    assert stored["status"] == "incomplete" and stored["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert openai.types.responses.Response.model_validate(stored).incomplete_details is not None
