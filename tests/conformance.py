"""Test helper: check response objects and streaming events against the Open Responses models."""

from __future__ import annotations

import copy
from enum import Enum
from typing import Any, get_args

import openresponses_types as spec
import orjson
from pydantic import BaseModel, ValidationError

JSONObject = dict[str, Any]

# Every field of the sidecar's response object: the spec's, plus `conversation` and `user` as OpenAI has them.
RESPONSE_FIELDS = frozenset(spec.ResponseResource.model_fields) | {"conversation", "user"}

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})

# OpenAI (and its SDK) name the reasoning-text events `response.reasoning_text.*`; the Open Responses spec
# names the same shapes `response.reasoning.*`. The sidecar speaks OpenAI's names.
_ALIASES = {
    "response.reasoning_text.delta": "response.reasoning.delta",
    "response.reasoning_text.done": "response.reasoning.done",
}


def _event_type(model: type[BaseModel]) -> str:
    annotation = model.model_fields["type"].annotation
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        (member,) = list(annotation)
        return str(member.value)
    (literal,) = get_args(annotation)
    return str(literal)


EVENT_MODELS: dict[str, type[BaseModel]] = {
    _event_type(model): model
    for name, model in vars(spec).items()
    if name.endswith("StreamingEvent") and isinstance(model, type) and issubclass(model, BaseModel)
}


def _validate(model: type[BaseModel], data: JSONObject) -> None:
    try:
        # Strict JSON validation: no "1" for 1, no missing required (nullable) fields.
        model.model_validate_json(orjson.dumps(data), strict=True)
    except ValidationError as exc:
        raise AssertionError(f"{model.__name__} rejects {data!r}:\n{exc}") from exc


def _spec_view(resource: JSONObject) -> JSONObject:
    """The generated models type a json_schema format's `schema` as null (a codegen bug); check the
    real schema is an object, then validate the rest of the resource."""
    fmt = (resource.get("text") or {}).get("format") or {}
    if fmt.get("type") != "json_schema":
        return resource
    assert isinstance(fmt.get("schema"), dict), f"text.format.schema must be an object: {fmt!r}"
    view = copy.deepcopy(resource)
    view["text"]["format"]["schema"] = None
    return view


def assert_response_resource(d: JSONObject) -> None:
    """`d` is a complete ResponseResource: every field present (null where unknown) and well typed."""
    missing = RESPONSE_FIELDS - d.keys()
    assert not missing, f"response object lacks {sorted(missing)}"
    assert d["object"] == "response"
    _validate(spec.ResponseResource, _spec_view(d))


def assert_stream_event(d: JSONObject) -> None:
    """`d` is a known streaming event with every required field (the model is chosen by `type`)."""
    kind = d.get("type")
    assert isinstance(kind, str), f"event without a type: {d!r}"
    model = EVENT_MODELS.get(_ALIASES.get(kind, kind))
    assert model is not None, f"unknown event type {kind!r}"
    data = {**d, "type": _ALIASES.get(kind, kind)}
    if "response" in d:
        assert_response_resource(d["response"])
        data["response"] = _spec_view(d["response"])
    if kind == "error":
        # OpenAI's SDK reads code/message/param at the top level; the spec nests them under `error`.
        for field in ("code", "message", "param"):
            assert field in d, f"error event lacks top-level {field!r}: {d!r}"
    _validate(model, data)


def assert_websocket_error(d: JSONObject) -> None:
    """`d` is WebSocket mode's error message (WebSocketErrorEvent: a status and a string code)."""
    _validate(spec.WebSocketErrorEvent, d)


def assert_event_sequence(events: list[JSONObject]) -> None:
    """A whole stream: valid events, sequence numbers 0..n-1, created → in_progress first, one terminal
    event last, items announced before use and closed once, one response id throughout."""
    assert len(events) >= 3, f"a stream has at least created, in_progress and a terminal event: {events!r}"
    for event in events:
        assert_stream_event(event)
    numbers = [event["sequence_number"] for event in events]
    assert numbers == list(range(len(events))), f"sequence numbers {numbers}"
    assert events[0]["type"] == "response.created", events[0]["type"]
    assert events[1]["type"] == "response.in_progress", events[1]["type"]
    terminal = [i for i, event in enumerate(events) if event["type"] in TERMINAL_EVENTS]
    assert terminal == [len(events) - 1], f"terminal events at {terminal} of {len(events)}"
    ids = {event["response"]["id"] for event in events if "response" in event}
    assert len(ids) == 1, f"response id changed mid-stream: {ids}"
    _assert_items_coherent(events)


def _assert_items_coherent(events: list[JSONObject]) -> None:
    items: dict[int, str] = {}
    closed: set[int] = set()
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            index = event["output_index"]
            assert index == len(items), f"output_index {index} announced out of order"
            items[index] = event["item"]["id"]
        elif "output_index" in event:
            index = event["output_index"]
            assert index in items, f"{kind} for unannounced output_index {index}"
            assert index not in closed, f"{kind} after output_item.done of {index}"
            if "item_id" in event:
                assert event["item_id"] == items[index], f"{kind} item_id does not match output {index}"
            if kind == "response.output_item.done":
                assert event["item"]["id"] == items[index], "output_item.done changed the item id"
                closed.add(index)
    all_ids = list(items.values())
    assert len(set(all_ids)) == len(all_ids), f"item ids repeat: {all_ids}"
    final = events[-1].get("response")
    if final is not None and final["status"] == "completed":
        assert closed == set(items), f"completed with items still open: {set(items) - closed}"
        assert [item["id"] for item in final["output"]] == all_ids, "final output differs from streamed items"


def sdk_replay(events: list[JSONObject]) -> Any:
    """Feed `events` through the openai SDK's `responses.stream()` accumulator (what a real client runs) and
    return its final response (None unless the stream ended with response.completed). Raises whatever the
    SDK raises on a stream it cannot follow (unknown output_index, missing content part, id changes…)."""
    # Private SDK API on purpose: it is the exact code path `client.responses.stream()` takes.
    from openai import omit
    from openai._models import construct_type
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=event))
    return state._completed_response


def sdk_stream(events: list[JSONObject]) -> Any:
    """Serve `events` as SSE bytes (our encoder) to a real `openai.OpenAI().responses.stream()` over an
    in-memory transport; return the SDK's final response."""
    import httpx2 as httpx  # the openai SDK (3.x) this project pins is built on httpx2
    import openai

    from sidecar.wire.sse import encode_event

    body = b"".join(encode_event(event) for event in events)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = openai.OpenAI(
        api_key="x",
        base_url="http://sidecar.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )
    with client.responses.stream(model="m", input="hi") as stream:
        for _ in stream:
            pass
        return stream.get_final_response()
