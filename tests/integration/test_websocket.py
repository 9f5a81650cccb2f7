"""WebSocket mode: `client.responses.connect()` of the official SDK against the sidecar on the fake
engine, both engine APIs, memory and a real redis-server — every event checked against the Open Responses
models, every stored turn read back over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import websockets
from aiohttp.test_utils import TestClient, TestServer
from openai.types.responses.responses_server_event import ResponseWsError

from sidecar.appkeys import STORE
from sidecar.config import Config, ConfigError
from sidecar.drain import DRAIN
from tests.conformance import (
    EVENT_MODELS,
    assert_event_sequence,
    assert_response_resource,
    assert_stream_event,
    assert_websocket_error,
)
from tests.fixtures.fake_engine import CONFIG_KEY, create_fake_engine, recorded
from tests.integration.responses_stack import ENGINE_PATHS, engine_view, parse_sse

Client = TestClient[Any, Any]
JSON = dict[str, Any]
Connection = Any  # openai's AsyncResponsesConnection
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}
COMBOS = [("responses", "memory"), ("responses", "redis"), ("chat", "memory"), ("chat", "redis")]


class Stack:
    def __init__(self, api: str, engine: Client, sidecar: Client, client: openai.AsyncOpenAI) -> None:
        self.api, self.engine, self.sidecar, self.client = api, engine, sidecar, client

    def engine_bodies(self) -> list[JSON]:
        return [r["body"] for r in recorded(self.engine.server.app, ENGINE_PATHS[self.api])]

    async def get(self, path: str) -> tuple[int, Any]:
        resp = await self.sidecar.get(path)
        return resp.status, await resp.json()


async def _stack(make_sidecar: Callable[..., Any], api: str, redis_url: str, **settings: Any) -> Stack:
    engine = TestClient(TestServer(create_fake_engine(deltas=4, delay=0.05)))
    await engine.start_server()
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"), upstream_api=api, redis_url=redis_url, **settings
    )
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=str(sidecar.make_url("/v1")), max_retries=0)
    return Stack(api, engine, sidecar, client)


@pytest.fixture(params=COMBOS, ids=[f"{api}-{store}" for api, store in COMBOS])
async def stack(request: pytest.FixtureRequest, make_sidecar: Callable[..., Any]) -> AsyncIterator[Stack]:
    api, store = request.param
    redis_url = request.getfixturevalue("redis_server").url if store == "redis" else "memory://"
    stack = await _stack(make_sidecar, api, redis_url)
    yield stack
    await stack.client.close()
    await stack.engine.close()


async def receive(conn: Connection) -> JSON:
    """One message, checked: the SDK parses it, and it is a valid Open Responses streaming event."""
    raw = await asyncio.wait_for(conn.recv_bytes(), 10)
    event: JSON = orjson.loads(raw)
    parsed = conn.parse_event(raw)
    if event["type"] == "error" and "status" in event:
        # WebSocket mode's own error message: the spec's error event, and the SDK's ResponseWsError.
        EVENT_MODELS["error"].model_validate_json(raw, strict=True)
        assert isinstance(parsed, ResponseWsError) and parsed.status == event["status"]
    else:
        assert_stream_event(event)
    return event


async def one_response(conn: Connection) -> list[JSON]:
    """The messages of one response, up to its terminal event; the sequence checked as a whole."""
    events = [await receive(conn)]
    while events[-1]["type"] not in TERMINAL:
        events.append(await receive(conn))
    if events[0]["type"] != "error":
        assert_event_sequence(events)
    return events


def text_of(events: list[JSON]) -> str:
    final = events[-1]["response"]
    return "".join(
        part["text"] for item in final["output"] if item["type"] == "message" for part in item["content"]
    )


async def test_a_two_turn_session_carries_the_first_turn_into_the_second(stack: Stack) -> None:
    async with stack.client.responses.connect() as conn:
        await conn.response.create(model="m", input="hello there", instructions="be brief")
        first = await one_response(conn)
        assert first[-1]["type"] == "response.completed"
        assert text_of(first) == "echo: hello there"
        first_id = first[-1]["response"]["id"]
        await conn.response.create(model="m", input="and again", previous_response_id=first_id)
        second = await one_response(conn)
    assert second[-1]["type"] == "response.completed"
    assert text_of(second) == "echo: and again"
    second_id = second[-1]["response"]["id"]
    assert second[-1]["response"]["previous_response_id"] == first_id
    instructions, history = engine_view(stack.api, stack.engine_bodies()[-1])
    assert history == [
        ("user", "hello there"),
        ("assistant", "echo: hello there"),
        ("user", "and again"),
    ]
    assert instructions is None  # instructions are per request, as over HTTP
    # Stored as the SSE path stores it: the response, and its whole history as input items.
    status, stored = await stack.get(f"/v1/responses/{second_id}")
    assert status == 200 and stored["status"] == "completed"
    assert_response_resource(stored)
    page = await stack.client.responses.input_items.list(second_id, order="asc")
    texts = [(item.role, item.content[0].text) for item in page.data if item.type == "message"]  # type: ignore[union-attr]
    assert texts == [("user", "hello there"), ("assistant", "echo: hello there"), ("user", "and again")]
    # ... and chains over HTTP like any response.
    third = await stack.client.responses.create(model="m", input="third", previous_response_id=second_id)
    assert third.output_text == "echo: third"


async def test_the_turn_continuing_the_sockets_last_response_resolves_nothing_in_the_store(
    stack: Stack,
) -> None:
    """The second turn's history comes from the connection; its record index was reserved while the client
    read the first answer. Between sending it and the engine getting it, the store is not called."""
    store = stack.sidecar.app[STORE]
    calls: list[tuple[str, int]] = []
    for name in ("begin_turn", "resolve_response", "resolve_conversation", "append_turn"):
        original = getattr(store, name)

        def recording(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append((_name, len(stack.engine_bodies())))
            return _original(*args, **kwargs)

        setattr(store, name, recording)
    async with stack.client.responses.connect() as conn:
        await conn.response.create(model="m", input="one")
        first = await one_response(conn)
        calls.append(("sent", len(stack.engine_bodies())))
        await conn.response.create(model="m", input="two", previous_response_id=first[-1]["response"]["id"])
        second = await one_response(conn)
    assert text_of(second) == "echo: two"
    after = calls[calls.index(("sent", 1)) :]
    before_engine = [name for name, engine_calls in after if engine_calls == 1 and name != "sent"]
    assert before_engine == [], calls
    assert ("append_turn", 2) in after  # the turn itself: one write, as over HTTP


async def test_store_false_turns_chain_on_the_socket_alone(stack: Stack) -> None:
    async with stack.client.responses.connect() as conn:
        await conn.response.create(model="m", input="secret one", store=False)
        first = await one_response(conn)
        first_id = first[-1]["response"]["id"]
        await conn.response.create(model="m", input="secret two", store=False, previous_response_id=first_id)
        second = await one_response(conn)
        assert text_of(second) == "echo: secret two"
        _, history = engine_view(stack.api, stack.engine_bodies()[-1])
        assert [text for _, text in history] == ["secret one", "echo: secret one", "secret two"]
        # A stored turn cannot continue an unstored one: an error message, and the socket stays open.
        await conn.response.create(model="m", input="x", previous_response_id=second[-1]["response"]["id"])
        (error,) = await one_response(conn)
        assert error["status"] == 400 and error["error"]["param"] == "previous_response_id"
        await conn.response.create(model="m", input="still here")
        assert text_of(await one_response(conn)) == "echo: still here"
    assert (await stack.get(f"/v1/responses/{first_id}"))[0] == 404  # nothing was stored


async def test_an_error_is_one_message_and_the_socket_stays_open(stack: Stack) -> None:
    async with stack.client.responses.connect() as conn:
        await conn.response.create(model="m", input="x", previous_response_id="resp_unknown")
        (error,) = await one_response(conn)
        assert error["type"] == "error" and error["status"] == 400, error  # as a POST answers it
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["type"] == "invalid_request_error"
        assert isinstance(conn.parse_event(orjson.dumps(error)), ResponseWsError)
        await conn.send({"type": "response.create", "model": "m", "input": [{"type": "bogus"}]})
        (bad_body,) = await one_response(conn)
        assert bad_body["status"] == 400
        await conn.response.create(model="m", input="x", background=True)
        (background,) = await one_response(conn)
        assert background["status"] == 400 and background["error"]["param"] == "background"
        await conn.response.create(model="m", input="x", conversation="conv_unknown")
        (unknown_conversation,) = await one_response(conn)
        assert unknown_conversation["status"] == 404
        assert unknown_conversation["error"]["code"] == "not_found"  # null in the HTTP body
        await stack.engine.put("/_fake/mode", json={"mode": "fail_status"})
        await conn.response.create(model="m", input="the engine refuses")
        (engine_error,) = await one_response(conn)
        assert engine_error["status"] >= 400
        for message in (error, bad_body, background, unknown_conversation, engine_error):
            assert_websocket_error(message)
        await stack.engine.put("/_fake/mode", json={"mode": "ok"})
        await conn.response.create(model="m", input="fine again")
        done = await one_response(conn)
    assert text_of(done) == "echo: fine again"


async def test_steer_and_unknown_messages_get_an_error_and_the_socket_stays_open(stack: Stack) -> None:
    async with stack.client.responses.connect() as conn:
        await conn.response.create(model="m", input="first")
        first = await one_response(conn)
        await conn.response.steer(input="faster", previous_response_id=first[-1]["response"]["id"])
        (steer,) = await one_response(conn)
        assert steer["status"] == 400 and steer["error"]["code"] == "unsupported_message_type"
        assert "response.steer" in steer["error"]["message"]
        await conn.send_raw(orjson.dumps({"type": "session.update"}).decode())
        (unknown,) = await one_response(conn)
        assert unknown["error"]["code"] == "unknown_message_type"
        await conn.send_raw("not json")
        (not_json,) = await one_response(conn)
        assert not_json["error"]["code"] == "invalid_json"
        await conn.response.create(
            model="m", input="second", previous_response_id=first[-1]["response"]["id"]
        )
        assert text_of(await one_response(conn)) == "echo: second"
    metrics = (await (await stack.sidecar.get("/convostore/metrics")).read()).decode()
    assert 'convostore_websocket_messages_total{type="response.steer"} 1.0' in metrics
    assert 'convostore_websocket_messages_total{type="response.create"} 2.0' in metrics
    assert 'convostore_websocket_errors_total{status="400"} 3.0' in metrics


async def test_creates_sent_together_run_one_after_the_other(stack: Stack) -> None:
    async with stack.client.responses.connect() as conn:
        for n in range(3):
            await conn.response.create(model="m", input=f"turn {n}")
        answers = [text_of(await one_response(conn)) for _ in range(3)]
    assert answers == ["echo: turn 0", "echo: turn 1", "echo: turn 2"]


async def test_a_client_that_closes_mid_response_stops_the_engine_and_the_response_is_stored_incomplete(
    stack: Stack,
) -> None:
    config = stack.engine.server.app[CONFIG_KEY]
    config.mode, config.delay, config.deltas = "slow", 0.1, 40
    conn = await stack.client.responses.connect().enter()
    await conn.response.create(model="m", input="a long one")
    response_id = None
    deltas = 0
    while deltas < 3:
        event = await receive(conn)
        if event["type"] == "response.created":
            response_id = event["response"]["id"]
        deltas += event["type"] == "response.output_text.delta"
    await conn.close()
    assert response_id is not None
    for _ in range(100):
        status, stored = await stack.get(f"/v1/responses/{response_id}")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200, stored
    assert stored["status"] == "incomplete"
    assert_response_resource(stored)
    text = stored["output"][0]["content"][0]["text"]
    assert 0 < len(text) < len("echo: a long one")  # what was produced, no more: the engine stopped


async def test_an_idle_socket_is_closed_with_a_reason(make_sidecar: Callable[..., Any]) -> None:
    stack = await _stack(make_sidecar, "responses", "memory://", ws_idle_seconds=0.3)
    config = stack.engine.server.app[CONFIG_KEY]
    config.mode, config.delay, config.deltas = "slow", 0.1, 8  # a response longer than the idle limit
    try:
        conn = await stack.client.responses.connect().enter()
        await conn.response.create(model="m", input="hi")
        done = await one_response(conn)  # a running response is no idleness
        assert done[-1]["type"] == "response.completed" and text_of(done) == "echo: hi"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv_bytes(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000
        assert closed.value.rcvd.reason == "idle for 0.3 s"
        metrics = (await (await stack.sidecar.get("/convostore/metrics")).read()).decode()
        assert "convostore_websockets_open 0.0" in metrics
    finally:
        await stack.client.close()
        await stack.engine.close()


async def test_the_socket_needs_a_key_when_auth_is_on(
    make_sidecar: Callable[..., Any], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants:\n  acme:\n    api_keys: [sk-acme]\n")
    stack = await _stack(make_sidecar, "chat", "memory://", auth="api_keys", config_path=str(policy))
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await stack.client.responses.connect().enter()
        assert refused.value.response.status_code == 401
        client = openai.AsyncOpenAI(api_key="sk-acme", base_url=str(stack.sidecar.make_url("/v1")))
        async with client.responses.connect() as conn:
            await conn.response.create(model="m", input="hello")
            done = await one_response(conn)
        assert text_of(done) == "echo: hello"
        stored = await client.responses.retrieve(done[-1]["response"]["id"])
        assert stored.status == "completed"  # stored for the key's tenant
        await client.close()
    finally:
        await stack.client.close()
        await stack.engine.close()


async def test_the_tenants_rate_quota_applies_to_each_create(
    make_sidecar: Callable[..., Any], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants:\n  default:\n    quota:\n      requests_per_minute: 3\n")
    stack = await _stack(make_sidecar, "responses", "memory://", config_path=str(policy))
    try:
        async with stack.client.responses.connect() as conn:  # the upgrade is the first request
            await conn.response.create(model="m", input="one")
            assert text_of(await one_response(conn)) == "echo: one"
            await conn.response.create(model="m", input="two")
            assert text_of(await one_response(conn)) == "echo: two"
            await conn.response.create(model="m", input="three")
            (limited,) = await one_response(conn)
            assert limited["status"] == 429
            assert limited["error"]["code"] == "rate_limit_exceeded"
            assert "Retry-After" in limited["error"]["headers"]
    finally:
        await stack.client.close()
        await stack.engine.close()


async def test_a_plain_get_still_goes_to_the_engine(stack: Stack) -> None:
    resp = await stack.sidecar.get("/v1/responses")
    assert resp.status == 405  # the fake engine's answer: it has only POST there
    gets = [r for r in recorded(stack.engine.server.app, "/v1/responses") if r["method"] == "GET"]
    assert len(gets) == 1


async def test_a_drain_closes_idle_sockets_at_once_and_busy_ones_after_their_response(
    make_sidecar: Callable[..., Any],
) -> None:
    stack = await _stack(make_sidecar, "chat", "memory://", drain_seconds=10)
    config = stack.engine.server.app[CONFIG_KEY]
    config.mode, config.delay, config.deltas = "slow", 0.05, 20
    try:
        idle = await stack.client.responses.connect().enter()
        busy = await stack.client.responses.connect().enter()
        await busy.response.create(model="m", input="finish me")
        events = [await receive(busy)]
        assert events[0]["type"] == "response.created"

        async def stop_listening() -> None:
            return None

        drain = stack.sidecar.app[DRAIN]
        draining = asyncio.create_task(drain.run(stop_listening, asyncio.Event()))
        with pytest.raises(websockets.ConnectionClosed) as closed_idle:
            await asyncio.wait_for(idle.recv_bytes(), 5)
        assert closed_idle.value.rcvd is not None and closed_idle.value.rcvd.code == 1012
        while events[-1]["type"] not in TERMINAL:
            events.append(await receive(busy))
        assert_event_sequence(events)
        assert events[-1]["type"] == "response.completed"  # the running response finishes, whole
        assert text_of(events) == "echo: finish me"
        with pytest.raises(websockets.ConnectionClosed) as closed_busy:
            await asyncio.wait_for(busy.recv_bytes(), 5)
        assert closed_busy.value.rcvd is not None and closed_busy.value.rcvd.code == 1012
        await asyncio.wait_for(draining, 5)
        assert not drain.cut  # everything finished before the deadline
    finally:
        await stack.client.close()
        await stack.engine.close()


async def test_turns_on_a_conversation_are_stored_in_it(stack: Stack) -> None:
    conversation = await stack.client.conversations.create()
    async with stack.client.responses.connect() as conn:
        for text in ("first", "second"):
            await conn.response.create(model="m", input=text, conversation=conversation.id)
            done = await one_response(conn)
            assert done[-1]["response"]["conversation"] == {"id": conversation.id}
    _, history = engine_view(stack.api, stack.engine_bodies()[-1])
    assert [text for _, text in history] == ["first", "echo: first", "second"]
    items = await stack.client.conversations.items.list(conversation.id, order="asc")
    assert len(items.data) == 4


async def test_a_turn_forking_from_an_earlier_response_resolves_it_from_the_store(stack: Stack) -> None:
    async with stack.client.responses.connect() as conn:
        await conn.response.create(model="m", input="root")
        root = (await one_response(conn))[-1]["response"]["id"]
        await conn.response.create(model="m", input="branch a", previous_response_id=root)
        await one_response(conn)
        await conn.response.create(model="m", input="branch b", previous_response_id=root)
        fork = (await one_response(conn))[-1]["response"]
    _, history = engine_view(stack.api, stack.engine_bodies()[-1])
    assert [text for _, text in history] == ["root", "echo: root", "branch b"]
    page = await stack.client.responses.input_items.list(fork["id"], order="asc")
    assert len(page.data) == 3


@pytest.mark.parametrize("header", [{"Idempotency-Key": "k1"}, {"If-Match": "0"}], ids=["key", "if-match"])
async def test_a_per_request_header_on_the_handshake_is_refused(stack: Stack, header: dict[str, str]) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await stack.client.responses.connect(extra_headers=header).enter()
    assert refused.value.response.status_code == 400
    (name,) = header
    assert orjson.loads(refused.value.response.body)["error"]["param"] == name


async def test_the_socket_sends_the_events_an_sse_stream_of_the_same_body_sends(stack: Stack) -> None:
    body: JSON = {"model": "m", "input": "same body", "instructions": "be brief", "metadata": {"k": "v"}}
    resp = await stack.sidecar.post("/v1/responses", json={**body, "stream": True})
    sse = parse_sse(await resp.read())
    async with stack.client.responses.connect() as conn:
        metrics = (await (await stack.sidecar.get("/convostore/metrics")).read()).decode()
        assert "convostore_websockets_open 1.0" in metrics
        await conn.send({"type": "response.create", **body})
        socket = await one_response(conn)

    def shape(events: list[JSON]) -> list[tuple[Any, ...]]:
        return [(e["type"], e["sequence_number"], e.get("delta"), e.get("output_index")) for e in events]

    assert shape(socket) == shape(sse)
    final_sse, final_socket = sse[-1]["response"], socket[-1]["response"]
    different = {"id", "created_at", "completed_at", "output"}
    assert {k: v for k, v in final_socket.items() if k not in different} == {
        k: v for k, v in final_sse.items() if k not in different
    }


def test_the_idle_limit_is_a_positive_number_of_seconds() -> None:
    assert Config.from_env({"CONVOSTORE_WS_IDLE_SECONDS": "2.5"}).ws_idle_seconds == 2.5
    assert Config.from_env({}).ws_idle_seconds == 300
    with pytest.raises(ConfigError, match="CONVOSTORE_WS_IDLE_SECONDS"):
        Config.from_env({"CONVOSTORE_WS_IDLE_SECONDS": "0"})
    with pytest.raises(ConfigError, match="--ws-idle-seconds"):
        Config.from_env({}, ws_idle_seconds="soon")
