"""Whatever the engine sends, what the sidecar returns conforms to the Open Responses models and the
openai SDK's: engines that repeat or renumber events, send events or values the spec does not know, stream
refusals, or leave out tool-call indexes; and the items routes' objects. A scripted engine answers every
generation request with a fixed SSE script (or JSON body)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pydantic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types.responses import ResponseInputImage, ResponseOutputMessage

from tests.conformance import assert_event_sequence, assert_response_resource, sdk_replay
from tests.integration.conftest import SidecarFactory
from tests.integration.responses_stack import parse_sse

JSON = dict[str, Any]


# -- a scripted engine: every generation request gets the same SSE script (or JSON body) -------------------


def _frames(api: str, script: list[Any]) -> bytes:
    out = b""
    for event in script:
        if event == "[DONE]":
            out += b"data: [DONE]\n\n"
        elif api == "responses":
            out += b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        else:
            out += b"data: " + orjson.dumps(event) + b"\n\n"
    return out


@pytest.fixture
async def scripted(make_sidecar: SidecarFactory) -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def make(api: str, script: list[Any] | None = None, body: JSON | None = None) -> Any:
        async def generate(request: web.Request) -> web.StreamResponse:
            if script is None:
                return web.json_response(body)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(_frames(api, script))
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/v1/responses", generate)
        app.router.add_post("/v1/chat/completions", generate)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return await make_sidecar(
            upstream=str(server.make_url("")).rstrip("/"), upstream_api=api, redis_url="memory://"
        )

    yield make
    for server in servers:
        await server.close()


async def streamed(sidecar: Any, **body: Any) -> list[JSON]:
    resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True, **body})
    assert resp.status == 200, await resp.text()
    return parse_sse(await resp.read())


def chunk(delta: JSON | None = None, finish: str | None = None, **extra: Any) -> JSON:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
        **extra,
    }


RESP = {"id": "resp_e", "object": "response", "status": "in_progress", "output": []}
CREATED = {"type": "response.created", "response": RESP}
ADDED = {
    "type": "response.output_item.added",
    "output_index": 0,
    "item": {"type": "message", "id": "msg_e", "role": "assistant", "status": "in_progress", "content": []},
}
PART = {
    "type": "response.content_part.added",
    "item_id": "msg_e",
    "output_index": 0,
    "content_index": 0,
    "part": {"type": "output_text", "text": "", "annotations": []},
}
DELTA = {
    "type": "response.output_text.delta",
    "item_id": "msg_e",
    "output_index": 0,
    "content_index": 0,
    "delta": "Hi",
}
MESSAGE = {
    "type": "message",
    "id": "msg_e",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
}
DONE = {"type": "response.output_item.done", "output_index": 0, "item": MESSAGE}
COMPLETED = {"type": "response.completed", "response": {**RESP, "status": "completed", "output": [MESSAGE]}}


# -- usage: the SDK's ResponseUsage requires input_tokens_details.cache_write_tokens ----------------------


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_usage_validates_against_the_sdk_response_model(
    make_sidecar: SidecarFactory, engine: TestServer, api: str
) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")), upstream_api=api)
    resp = await sidecar.post("/v1/responses", json={"model": "m", "input": "hi"})
    final = await resp.json()
    assert_response_resource(final)  # the spec's model is happy
    assert final["usage"] is not None
    openai.types.responses.Response.model_validate(final)  # and the SDK's


# -- values the engine supplies are checked before they reach the response -------------------------------


@pytest.mark.parametrize(
    "terminal",
    [
        {"type": "response.failed", "response": {**RESP, "status": "failed", "error": {"message": "boom"}}},
        {
            "type": "response.incomplete",
            "response": {**RESP, "status": "incomplete", "incomplete_details": {"reason": None}},
        },
    ],
    ids=["failed-error-without-code", "incomplete-reason-null"],
)
async def test_an_engines_terminal_object_cannot_break_the_final_response(
    scripted: Any, terminal: JSON
) -> None:
    sidecar = await scripted("responses", [CREATED, ADDED, PART, DELTA, terminal])
    assert_event_sequence(await streamed(sidecar))


async def test_an_engines_item_status_outside_the_enum_is_not_passed_on(scripted: Any) -> None:
    done = {**DONE, "item": {**MESSAGE, "status": "done"}}
    sidecar = await scripted("responses", [CREATED, ADDED, PART, DELTA, done, COMPLETED])
    assert_event_sequence(await streamed(sidecar))


# -- chat translation -------------------------------------------------------------------------------------


async def test_a_whole_chat_answer_cut_by_content_filter_says_content_filter(scripted: Any) -> None:
    sidecar = await scripted(
        "chat",
        body={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi"},
                    "finish_reason": "content_filter",
                }
            ],
        },
    )
    final = await (await sidecar.post("/v1/responses", json={"model": "m", "input": "hi"})).json()
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "content_filter"}  # streamed, it is


async def test_a_streamed_chat_refusal_reaches_the_client(scripted: Any) -> None:
    sidecar = await scripted(
        "chat",
        [
            chunk({"role": "assistant", "refusal": "I can't"}),
            chunk({"refusal": " help"}),
            chunk({}, "stop"),
            "[DONE]",
        ],
    )
    events = await streamed(sidecar)
    assert_event_sequence(events)
    (message,) = events[-1]["response"]["output"]
    assert message["content"] == [
        {"type": "refusal", "refusal": "I can't help"}
    ]  # as the non-stream path has it


async def test_tool_call_deltas_without_index_are_not_merged_into_one_call(scripted: Any) -> None:
    sidecar = await scripted(
        "chat",
        [
            chunk(
                {
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            "[DONE]",
        ],
    )
    events = await streamed(
        sidecar, tools=[{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]
    )
    assert_event_sequence(events)
    calls = [(i["name"], i["arguments"]) for i in events[-1]["response"]["output"]]
    assert calls == [("f", "{}"), ("g", "{}")]


# -- a Responses engine that misbehaves ----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [{"type": "response.engine_debug", "info": 1}],
        [{"type": "response.audio.delta", "output_index": 3, "delta": "xx"}],
    ],
    ids=["unknown-event", "unknown-event-with-engine-output-index"],
)
async def test_what_the_spec_does_not_define_is_not_forwarded(scripted: Any, extra: list[JSON]) -> None:
    sidecar = await scripted("responses", [CREATED, ADDED, PART, DELTA, DONE, *extra, COMPLETED])
    assert_event_sequence(await streamed(sidecar))


@pytest.mark.parametrize("duplicated", ["added", "done"])
async def test_a_duplicated_item_event_does_not_add_an_item(scripted: Any, duplicated: str) -> None:
    script = [CREATED, ADDED, PART, DELTA, DONE, COMPLETED]
    position = 1 if duplicated == "added" else 4
    script.insert(position, script[position])
    events = await streamed(sidecar := await scripted("responses", script))
    assert_event_sequence(events)
    output = events[-1]["response"]["output"]
    assert [[part.get("text") for part in item["content"]] for item in output] == [["Hi"]], output
    stored = await (await sidecar.get(f"/v1/responses/{events[-1]['response']['id']}")).json()
    assert len(stored["output"]) == 1


async def test_an_engines_content_index_is_renumbered_like_its_output_index(scripted: Any) -> None:
    sidecar = await scripted(
        "responses",
        [
            CREATED,
            ADDED,
            {**PART, "content_index": 1},
            {**DELTA, "content_index": 1},
            DONE,
            COMPLETED,
        ],
    )
    events = await streamed(sidecar)
    assert_event_sequence(events)
    sdk_replay(events)  # IndexError: content_index 1 of a message with one part


# -- the Conversations API and /input_items against the SDK's models -----------------------------------


async def test_conversation_items_and_input_items_validate_against_the_sdk(
    make_sidecar: SidecarFactory, engine: TestServer
) -> None:
    sidecar = await make_sidecar(redis_url="memory://", upstream=str(engine.make_url("")))
    conv = await (await sidecar.post("/v1/conversations", json={})).json()
    problems: list[str] = []

    def check(model: Any, body: Any, what: str) -> None:
        try:
            model.validate_python(body) if isinstance(model, pydantic.TypeAdapter) else model.model_validate(
                body
            )
        except pydantic.ValidationError as exc:
            problems.append(f"{what}: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}")

    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    first = await (
        await sidecar.post(
            "/v1/responses",
            json={
                "model": "m",
                "conversation": conv["id"],
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "look"}, image]},
                    {"role": "assistant", "content": "I see it."},
                    {"role": "user", "content": "and?"},
                ],
            },
        )
    ).json()
    second = await (
        await sidecar.post(
            "/v1/responses",
            json={
                "model": "m",
                "input": "again",
                "previous_response_id": first["id"],
            },
        )
    ).json()
    items = await (await sidecar.get(f"/v1/conversations/{conv['id']}/items", params={"order": "asc"})).json()
    check(ResponseInputImage, items["data"][0]["content"][1], "stored input_image part")
    listed = await (await sidecar.get(f"/v1/responses/{second['id']}/input_items")).json()
    for item in listed["data"]:
        if item.get("role") == "assistant":  # the client's assistant message, and the engine's answer
            check(
                ResponseOutputMessage, item, f"input_items: assistant message {item['content'][0]['text']!r}"
            )
    assert not problems, "\n".join(problems)
