"""Engine streams and answers of the wrong shape, at any point and of any kind: the translators never raise,
the stream they send ends with one terminal event, gapless, and what they capture says the same; a stateful
chat client gets the stored call ids, no usage chunk it did not ask for, and `[DONE]` or an error chunk."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.wire.captured_stream import CapturedStream
from sidecar.wire.chat_chunks import ChatClientStream, with_sidecar_call_ids
from sidecar.wire.chat_translate import ChatStreamTranslator, chat_completion_to_output
from sidecar.wire.sse import DONE, SSEDecoder, SSEMessage, encode_events
from sidecar.wire.stream_repair import ResponsesStreamRewriter, rewrite_response
from sidecar.wire.stream_state import MalformedEvent
from tests.conformance import TERMINAL_EVENTS, assert_event_sequence, sdk_replay
from tests.unit.stream_helpers import Event, base, minter

SAMPLES = Path(__file__).parent.parent / "fixtures" / "samples"


def sample(name: str) -> list[Any]:
    decoder = SSEDecoder()
    messages = decoder.feed((SAMPLES / name).read_bytes()) + decoder.flush()
    return [orjson.loads(m.data) for m in messages if m.data != DONE]


def chat_chunk(delta: Any, finish: str | None = None) -> Event:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def call_delta(index: int, arguments: str, call_id: str | None = None) -> Event:
    call: Event = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call |= {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}
    return chat_chunk({"tool_calls": [call]})


CHAT_STREAM = [
    chat_chunk({"role": "assistant", "reasoning_content": "think"}),
    chat_chunk({"content": "Hel"}),
    chat_chunk({"content": "lo"}),
    call_delta(0, '{"a":', "engine_call_0"),
    call_delta(0, "1}"),
    call_delta(1, "{}", "engine_call_0"),  # an engine that repeats its ids
    chat_chunk({}, "tool_calls"),
    {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
]
RESPONSES_STREAM = sample("responses_stream.txt")

# What orjson.loads can hand over: integers within 64 bits.
json_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
garbage = st.one_of(
    st.none(),
    st.booleans(),
    json_int,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.lists(json_int, max_size=2),
    st.dictionaries(st.text(max_size=3), json_int, max_size=2),
)


@st.composite
def corrupted(draw: st.DrawFn, stream: list[Any]) -> list[Any]:
    """`stream` with one value somewhere (a whole event, or a field at any depth) replaced by garbage."""
    events = copy.deepcopy(stream)
    index = draw(st.integers(min_value=0, max_value=len(events) - 1))
    parent: Any = events
    key: Any = index
    while isinstance(parent[key], (dict, list)) and parent[key] and draw(st.booleans()):
        parent = parent[key]
        key = draw(st.sampled_from(sorted(parent) if isinstance(parent, dict) else range(len(parent))))
    value = draw(garbage)
    if key == "type" and isinstance(value, str):
        value = None  # a made-up event type is forwarded as an unknown event, by design
    parent[key] = value
    return events


def assert_well_formed(out: list[Event], translator: CapturedStream) -> None:
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[0]["type"] == "response.created"
    terminal = [i for i, e in enumerate(out) if e["type"] in TERMINAL_EVENTS]
    assert terminal == [len(out) - 1], [e["type"] for e in out]
    final = translator.final_response
    assert final is not None and out[-1]["response"]["status"] == final["status"]
    assert final["status"] in ("completed", "incomplete", "failed")
    encode_events(out)  # and it can be sent
    orjson.dumps(final)  # and stored


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(stream=corrupted(RESPONSES_STREAM))
def test_a_responses_stream_corrupted_anywhere_still_ends_well_formed(stream: list[Any]) -> None:
    rewriter = ResponsesStreamRewriter(base(), minter())
    out: list[Event] = []
    for event in stream:
        out += rewriter.translate(event)
    out += rewriter.end(done=False)
    assert_well_formed(out, rewriter)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(stream=corrupted(CHAT_STREAM), done=st.booleans())
def test_a_chat_stream_corrupted_anywhere_still_ends_well_formed(stream: list[Any], done: bool) -> None:
    translator = ChatStreamTranslator(base(), minter())
    out: list[Event] = []
    for chunk in stream:
        out += translator.translate(chunk)
    out += translator.end(done=done)
    assert_well_formed(out, translator)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "response.output_text.delta", "item_id": "msg_x"},  # no delta
        {"type": "response.output_text.delta", "item_id": "msg_x", "delta": 5},
        {"type": "response.output_item.added", "item": "oops"},
        {"type": "response.content_part.added", "item_id": "msg_x", "part": "oops"},
        {"type": "response.completed", "response": "oops"},
        123,
        ["a list"],
    ],
)
def test_a_wrong_shape_event_fails_the_stream_keeping_what_was_said(bad: Any) -> None:
    rewriter = ResponsesStreamRewriter(base(), minter())
    engine = [
        {"type": "response.output_item.added", "item": {"type": "message", "id": "msg_x", "content": []}},
        {"type": "response.output_text.delta", "item_id": "msg_x", "delta": "Hi"},
        bad,
        {"type": "response.output_text.delta", "item_id": "msg_x", "delta": " there"},  # ignored: it ended
    ]
    out = [event for e in engine for event in rewriter.translate(e)] + rewriter.end(done=False)
    assert_event_sequence(out)
    sdk_replay(out)
    final = rewriter.final_response
    assert final is not None and final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert "cannot follow" in final["error"]["message"]
    assert final["output"][0]["content"][0]["text"] == "Hi"


def test_events_stamped_before_a_wrong_shape_are_still_sent() -> None:
    # The first event makes the rewriter announce created, in_progress, an item and a part, then trips:
    # those events were stamped 0..3, so they must go out before response.failed (no gap, nothing unseen).
    rewriter = ResponsesStreamRewriter(base(), minter())
    out = rewriter.translate({"type": "response.output_text.delta", "item_id": "m"})
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.failed",
    ]
    assert_event_sequence(out)


@pytest.mark.parametrize("bad", [chat_chunk("oops"), chat_chunk({"tool_calls": "oops"}), {"choices": 5}, 123])
def test_a_wrong_shape_chat_chunk_fails_the_stream(bad: Any) -> None:
    translator = ChatStreamTranslator(base(), minter())
    out = translator.translate(chat_chunk({"content": "Hi"})) + translator.translate(bad)
    out += translator.end(done=True)  # a [DONE] after it changes nothing
    assert_event_sequence(out)
    final = translator.final_response
    assert final is not None and final["status"] == "failed"
    assert final["output"][0]["content"][0]["text"] == "Hi"


@pytest.mark.parametrize(
    ("chunks", "done", "status"),
    [
        ([chat_chunk({"content": "Hi"})], False, "failed"),  # cut: no finish_reason, no [DONE]
        ([chat_chunk({"content": "Hi"})], True, "completed"),
        ([chat_chunk({"content": "Hi"}), chat_chunk({}, "stop")], False, "completed"),
        ([chat_chunk({"content": "Hi"}), chat_chunk({}, "length")], False, "incomplete"),
        ([], False, "failed"),
        ([{"error": "overloaded"}], True, "failed"),
    ],
)
def test_a_chat_stream_ends_as_its_end_says(chunks: list[Event], done: bool, status: str) -> None:
    translator = ChatStreamTranslator(base(), minter())
    out = [event for c in chunks for event in translator.translate(c)] + translator.end(done=done)
    assert_event_sequence(out)
    assert out[-1]["response"]["status"] == status


@pytest.mark.parametrize(
    "answer",
    [
        {"output": "oops"},
        {"output": ["oops"]},
        {"status": "in_progress", "output": []},
        {"error": {"message": "boom"}},
    ],
)
def test_a_responses_answer_of_the_wrong_shape_is_refused(answer: Event) -> None:
    with pytest.raises(MalformedEvent):
        rewrite_response(answer, base(), minter())


@pytest.mark.parametrize(
    "answer",
    [
        {"error": {"message": "boom"}},
        {"choices": []},
        {"choices": "oops"},
        {"choices": [{"message": "oops"}]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"tool_calls": "oops"}}]},
        {"choices": [{"message": {"tool_calls": ["oops"]}}]},
    ],
)
def test_a_chat_answer_of_the_wrong_shape_is_refused(answer: Event) -> None:
    with pytest.raises(MalformedEvent):
        chat_completion_to_output(answer, minter())


# -- what a stateful chat client receives ------------------------------------------------------------------


def frames(
    chunks: list[Any], *, include_usage: bool, done: bool = True
) -> tuple[list[Any], ChatStreamTranslator]:
    translator = ChatStreamTranslator(base(), minter())
    client = ChatClientStream(translator, include_usage=include_usage)
    messages = [SSEMessage(None, c if isinstance(c, bytes) else orjson.dumps(c)) for c in chunks]
    if done:
        messages.append(SSEMessage(None, DONE))
    body = client.feed(messages) + client.end()
    decoder = SSEDecoder()
    sent = [DONE if m.data == DONE else orjson.loads(m.data) for m in decoder.feed(body) + decoder.flush()]
    return sent, translator


def test_a_chat_client_sees_the_stored_call_ids_and_no_usage_it_did_not_ask_for() -> None:
    sent, translator = frames(CHAT_STREAM, include_usage=False)
    assert sent[-1] == DONE and all(chunk["choices"] for chunk in sent[:-1])
    assert not any("usage" in chunk for chunk in sent[:-1])
    seen = [
        (call["index"], call.get("id"))
        for chunk in sent[:-1]
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []
    ]
    final = translator.final_response
    assert final is not None and final["status"] == "completed" and final["usage"]["output_tokens"] == 4
    stored = [item["call_id"] for item in final["output"] if item["type"] == "function_call"]
    assert len(set(stored)) == 2 and "engine_call_0" not in stored
    # every call's first delta carries its stored id; continuations carry none, as the engine sent them
    assert seen == [(0, stored[0]), (0, None), (1, stored[1])]


def test_a_chat_client_that_asked_for_usage_gets_the_usage_chunk() -> None:
    sent, _ = frames(CHAT_STREAM, include_usage=True)
    assert sent[-2] == {**CHAT_STREAM[-1]} and sent[-1] == DONE


def test_a_chat_call_without_an_engine_id_still_gets_the_stored_one() -> None:
    sent, translator = frames([call_delta(0, "{}"), chat_chunk({}, "tool_calls")], include_usage=False)
    final = translator.final_response
    assert final is not None
    assert sent[0]["choices"][0]["delta"]["tool_calls"][0]["id"] == final["output"][0]["call_id"]


@pytest.mark.parametrize(
    ("chunks", "done"),
    [
        ([chat_chunk({"content": "Hi"})], False),  # cut
        ([chat_chunk({"content": "Hi"}), b"123"], True),
        ([chat_chunk({"content": "Hi"}), b'{"choices": ['], True),
        ([chat_chunk({"content": "Hi"}), chat_chunk("oops")], True),
        ([chat_chunk({"content": "Hi"}), {"error": {"message": "engine exploded"}}], True),
    ],
)
def test_a_failed_chat_stream_ends_with_an_error_chunk(chunks: list[Any], done: bool) -> None:
    sent, translator = frames(chunks, include_usage=False, done=done)
    assert sent[:-1] == [chunks[0]]  # the good chunk as it came, then the error chunk; never [DONE]
    assert set(sent[-1]) == {"error"} and set(sent[-1]["error"]) == {"message", "type", "param", "code"}
    final = translator.final_response
    assert final is not None and final["status"] == "failed"
    assert sent[-1]["error"]["message"] == final["error"]["message"]


def test_a_whole_chat_answer_gets_the_stored_call_ids() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "same", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "same", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    translator = ChatStreamTranslator(base(), minter())
    translator.translate({"choices": [{"index": 0, "delta": message, "finish_reason": "tool_calls"}]})
    translator.end(done=True)
    with_sidecar_call_ids(message, translator)
    final = translator.final_response
    assert final is not None
    assert [c["id"] for c in message["tool_calls"]] == [i["call_id"] for i in final["output"]]
    assert len({c["id"] for c in message["tool_calls"]}) == 2


@pytest.mark.parametrize("garbage", [2.0**64, 1e300, -5, True, "7"])
def test_a_token_count_out_of_range_reads_as_zero_and_the_stream_can_still_be_sent(garbage: Any) -> None:
    # found by the corrupted-stream property above: a float count of 2**64 became an int orjson cannot write
    usage = {
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": garbage},
    }
    translator = ChatStreamTranslator(base(), minter())
    out = [
        event
        for chunk in [*CHAT_STREAM[:3], chat_chunk({}, "stop"), usage]
        for event in translator.translate(chunk)
    ]
    out += translator.end(done=True)
    encode_events(out)
    final = translator.final_response
    assert final is not None
    assert final["usage"]["output_tokens"] == 0 and final["usage"]["input_tokens"] == 3
