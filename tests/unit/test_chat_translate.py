"""Responses ⇄ chat completions: request mapping, non-stream output, and chat chunks as Responses events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.errors import InvalidRequest
from sidecar.wire.chat_messages import items_to_messages, messages_to_items
from sidecar.wire.chat_translate import (
    ChatStreamTranslator,
    chat_completion_to_output,
    finish_status,
    responses_to_chat_request,
)
from sidecar.wire.items import parse_input
from sidecar.wire.resource import build_response_resource
from sidecar.wire.sse import SSEDecoder
from tests.conformance import (
    assert_event_sequence,
    assert_response_resource,
    assert_stream_event,
    sdk_replay,
    sdk_stream,
)
from tests.unit.stream_helpers import Event, base, minter

SAMPLES = Path(__file__).parent.parent / "fixtures" / "samples"
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def chunk(delta: Event | None = None, finish: str | None = None, usage: Event | None = None) -> Event:
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    )
    out: Event = {"object": "chat.completion.chunk", "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


def translate(chunks: list[Event], translator: ChatStreamTranslator) -> list[Event]:
    out: list[Event] = []
    for c in chunks:
        out += translator.feed(c)
    return out + translator.finish()


def sample_chunks(name: str) -> list[Event]:
    decoder = SSEDecoder()
    messages = decoder.feed((SAMPLES / name).read_bytes()) + decoder.flush()
    assert messages[-1].is_done
    return [orjson.loads(m.data) for m in messages[:-1]]


# -- request ----


def test_request_translation_maps_every_setting() -> None:
    body = {
        "model": "gemma",
        "input": "ignored here",
        "stream": True,
        "max_output_tokens": 16,
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [TOOL, {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "text": {
            "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}
        },
        "reasoning": {"effort": "low"},
        "user": "u1",
        "metadata": {"k": "v"},
        "store": True,
        "previous_response_id": "resp_x",
    }
    messages = [{"role": "user", "content": "hi"}]
    chat = responses_to_chat_request(body, messages)
    assert chat == {
        "model": "gemma",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "parameters": TOOL["parameters"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
        "user": "u1",
    }


def test_minimal_request_sends_nothing_extra() -> None:
    chat = responses_to_chat_request({"model": "m", "parallel_tool_calls": True}, [])
    assert chat == {"model": "m", "messages": []}


def test_allowed_tools_choice_filters_tools_and_keeps_the_mode() -> None:
    other = {**TOOL, "name": "other"}
    body = {
        "model": "m",
        "tools": [TOOL, other],
        "tool_choice": {
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "other"}],
        },
    }
    chat = responses_to_chat_request(body, [])
    assert [t["function"]["name"] for t in chat["tools"]] == ["other"]
    assert chat["tool_choice"] == "required"


def test_json_object_and_text_formats() -> None:
    assert responses_to_chat_request({"text": {"format": {"type": "json_object"}}}, [])[
        "response_format"
    ] == {"type": "json_object"}
    assert "response_format" not in responses_to_chat_request({"text": {"format": {"type": "text"}}}, [])


def test_request_built_on_items_to_messages_history() -> None:
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    chat = responses_to_chat_request({"model": "m", "tools": [TOOL]}, items_to_messages(items, "Be brief."))
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert chat["messages"][2]["tool_calls"][0]["id"] == "c1"
    assert chat["messages"][3]["tool_call_id"] == "c1"


# -- non-stream ----


def test_real_llamacpp_chat_answer_to_output() -> None:
    chat = orjson.loads((SAMPLES / "chat_nonstream.json").read_bytes())
    items, usage, status, _ = chat_completion_to_output(chat, minter())
    assert status == "incomplete"  # finish_reason "length"
    (message,) = items
    assert message["id"] == "msg_sc0000" and message["status"] == "incomplete"
    assert message["content"][0]["text"] == chat["choices"][0]["message"]["content"]
    assert usage["input_tokens_details"]["cached_tokens"] == 21
    resource = build_response_resource(
        response_id="resp_1",
        created_at=1,
        status=status,
        model="m",
        output=items,
        request={},
        usage=usage,
        incomplete_details=finish_status("length")[1],
    )
    assert_response_resource(resource)


def test_reasoning_and_tool_calls_become_items_in_order() -> None:
    chat = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "think",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                        {"type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }
    items, _, status, _ = chat_completion_to_output(chat, minter())
    assert status == "completed"
    assert [i["type"] for i in items] == ["reasoning", "function_call", "function_call"]
    assert items[0]["content"] == [{"type": "reasoning_text", "text": "think"}]
    # Call ids are the sidecar's, the engine's own ("c1", or none) never pass: engines repeat them.
    assert items[1]["call_id"].startswith("call_sc") and items[2]["call_id"].startswith("call_sc")
    assert items[1]["call_id"] != items[2]["call_id"]
    assert_response_resource(
        build_response_resource(
            response_id="r", created_at=1, status="completed", model="m", output=items, request={}
        )
    )


def test_empty_answer_is_still_a_message() -> None:
    items, _, _, _ = chat_completion_to_output(
        {"choices": [{"message": {"content": None}, "finish_reason": "stop"}]}, minter()
    )
    assert items[0]["type"] == "message" and items[0]["content"][0]["text"] == ""


# -- stream ----


def test_real_llamacpp_chat_stream_becomes_the_exact_responses_sequence() -> None:
    chunks = sample_chunks("chat_stream.txt")
    translator = ChatStreamTranslator(base(), minter())
    out = translate(chunks, translator)
    assert_event_sequence(out)
    kinds = [e["type"] for e in out]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    n = sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content"))
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",  # the sample stopped on finish_reason "length"
    ]
    final = translator.final_response
    assert final is not None and final["output"][0]["content"][0]["text"] == text
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert (
        final["usage"]["input_tokens"] == 26 and final["usage"]["input_tokens_details"]["cached_tokens"] == 21
    )
    assert translator.status == "incomplete"
    sdk_replay(out)


def test_completed_stream_is_accepted_by_the_sdk() -> None:
    chunks = [
        chunk({"role": "assistant", "content": None}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(finish="stop"),
        chunk(usage={"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}),
    ]
    out = translate(chunks, ChatStreamTranslator(base(), minter(), now=lambda: 1700000005))
    assert_event_sequence(out)
    assert out[-1]["type"] == "response.completed" and out[-1]["response"]["completed_at"] == 1700000005
    response = sdk_replay(out)
    assert response.output_text == "Hello" and response.usage.total_tokens == 4


def test_reasoning_then_text_then_parallel_tool_calls() -> None:
    chunks = [
        chunk({"reasoning_content": "Let me "}),
        chunk({"reasoning_content": "think."}),
        chunk({"content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk(finish="tool_calls"),
    ]
    translator = ChatStreamTranslator(base(tools=[TOOL]), minter())
    out = translate(chunks, translator)
    assert_event_sequence(out)
    final = translator.final_response
    assert final is not None and final["status"] == "completed"
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Let me think."
    assert [(i["name"], i["arguments"]) for i in final["output"][2:]] == [
        ("get_weather", '{"city":"Paris"}'),
        ("get_time", "{}"),
    ]
    call_ids = [i["call_id"] for i in final["output"][2:]]
    assert all(c.startswith("call_sc") for c in call_ids) and len(set(call_ids)) == 2
    assert "response.reasoning_text.delta" in {e["type"] for e in out}
    response = sdk_replay(out)
    assert response.output[2].arguments == '{"city":"Paris"}'


def test_stream_without_content_yields_an_empty_message() -> None:
    out = translate(
        [chunk({"role": "assistant"}), chunk(finish="stop")], ChatStreamTranslator(base(), minter())
    )
    assert_event_sequence(out)
    assert sdk_replay(out).output_text == ""


def test_engine_error_chunk_fails_the_response_with_partial_output() -> None:
    translator = ChatStreamTranslator(base(), minter())
    out = translator.feed(chunk({"content": "par"}))
    out += translator.feed({"error": {"code": 500, "message": "slot crashed", "type": "server_error"}})
    assert_event_sequence(out)
    failed = out[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {
        "code": "server_error",
        "message": "slot crashed",
    }
    assert failed["output"][0]["content"][0]["text"] == "par"
    assert failed["output"][0]["status"] == "incomplete"
    assert translator.finish() == [] and translator.feed(chunk({"content": "x"})) == []


def test_client_gone_mid_stream_gives_an_incomplete_response_to_store() -> None:
    translator = ChatStreamTranslator(base(), minter())
    for c in [
        chunk({"content": "a"}),
        chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}]}),
    ]:
        translator.feed(c)
    stored = translator.incomplete("client_disconnected")
    assert_response_resource(stored)
    assert [i["type"] for i in stored["output"]] == ["message", "function_call"]
    assert stored["output"][1]["arguments"] == "{" and stored["output"][1]["status"] == "incomplete"


pieces = st.lists(
    st.one_of(
        st.tuples(st.just("reasoning_content"), st.text(min_size=1, max_size=4)),
        st.tuples(st.just("content"), st.text(min_size=1, max_size=4)),
        st.tuples(st.sampled_from(["call0", "call1"]), st.text(max_size=4)),
    ),
    max_size=12,
)


@given(deltas=pieces, finish=st.sampled_from(["stop", "length", "tool_calls", None]), cut=st.booleans())
def test_any_chunk_sequence_yields_a_valid_stream(
    deltas: list[tuple[str, str]], finish: str | None, cut: bool
) -> None:
    chunks: list[Event] = []
    for kind, text in deltas:
        if kind.startswith("call"):
            index = int(kind[-1])
            chunks.append(
                chunk(
                    {
                        "tool_calls": [
                            {"index": index, "id": f"c{index}", "function": {"name": kind, "arguments": text}}
                        ]
                    }
                )
            )
        else:
            chunks.append(chunk({kind: text}))
    if finish:
        chunks.append(chunk(finish=finish))
    translator = ChatStreamTranslator(base(), minter())
    out: list[Event] = []
    for c in chunks:
        out += translator.feed(c)
    for event in out:
        assert_stream_event(event)
    out += translator.fail("gone", "upstream_error") if cut else translator.finish()
    assert_event_sequence(out)
    final = translator.final_response
    assert final is not None
    texts = "".join(t for k, t in deltas if k == "content")
    assert (
        "".join(p["text"] for i in final["output"] if i["type"] == "message" for p in i["content"]) == texts
    )
    if not cut:
        sdk_replay(out)


def test_openai_sdk_streams_translated_tool_calls_end_to_end() -> None:
    chunks = [
        chunk({"content": "Sure."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c1",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ]
            }
        ),
        chunk(finish="tool_calls"),
        chunk(usage={"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}),
    ]
    response = sdk_stream(translate(chunks, ChatStreamTranslator(base(tools=[TOOL]), minter())))
    assert response.output_text == "Sure."
    call = response.output[1]
    assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", '{"city":"Oslo"}')
    assert call.call_id.startswith("call_sc")  # the sidecar's, not the engine's "c1"
    assert response.usage.input_tokens == 9


# -- content parts a chat engine can and cannot carry --------------------------------------------------------


def user_parts(*parts: Event) -> list[Event]:
    return parse_input([{"role": "user", "content": [{"type": "input_text", "text": "look"}, *parts]}])


def test_an_image_keeps_its_detail_for_chat() -> None:
    items = user_parts({"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"})
    assert items_to_messages(items)[0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x/cat.png", "detail": "low"},
    }


def test_a_file_id_image_cannot_go_to_a_chat_engine() -> None:
    history = parse_input("earlier")
    items = history + user_parts({"type": "input_image", "file_id": "file-123", "detail": "auto"})
    with pytest.raises(InvalidRequest) as refused:
        items_to_messages(items, first_input=len(history))
    assert refused.value.param == "input[0].content[1].file_id"


def test_an_input_file_becomes_a_chat_file_part() -> None:
    items = user_parts(
        {"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}
    )
    assert items_to_messages(items)[0]["content"][1] == {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"},
    }
    with pytest.raises(InvalidRequest) as refused:
        items_to_messages(user_parts({"type": "input_file", "file_url": "https://x/a.pdf"}))
    assert refused.value.param == "input[0].content[1].file_url"


def test_chat_image_and_file_parts_come_back_the_same() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "high"}},
                {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
            ],
        }
    ]
    assert items_to_messages(messages_to_items(messages)) == messages
