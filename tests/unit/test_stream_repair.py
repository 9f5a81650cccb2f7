"""Engine Responses streams (llama.cpp's real one, and broken synthetic ones) become spec streams."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.wire.sse import SSEDecoder
from sidecar.wire.stream_repair import ResponsesStreamRewriter, rewrite_response
from tests.conformance import (
    assert_event_sequence,
    assert_response_resource,
    assert_stream_event,
    sdk_replay,
    sdk_stream,
)
from tests.unit.stream_helpers import Event, base, minter

SAMPLES = Path(__file__).parent.parent / "fixtures" / "samples"


def sample_events(name: str) -> list[Event]:
    decoder = SSEDecoder()
    messages = decoder.feed((SAMPLES / name).read_bytes()) + decoder.flush()
    return [orjson.loads(m.data) for m in messages]


def run(engine: list[Event], rewriter: ResponsesStreamRewriter) -> list[Event]:
    out: list[Event] = []
    for event in engine:
        out += rewriter.feed(event)
    return out


def text_of(response: Event) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


def test_real_llamacpp_stream_becomes_a_spec_stream_without_engine_ids() -> None:
    engine = sample_events("responses_stream.txt")
    rewriter = ResponsesStreamRewriter(base(max_output_tokens=64), minter(), now=lambda: 1700000009)
    out = run(engine, rewriter)
    assert_event_sequence(out)
    wire = orjson.dumps(out)
    assert b"resp_w29Hvv5" not in wire and b"msg_iq0gk5" not in wire
    deltas = "".join(e["delta"] for e in engine if e["type"] == "response.output_text.delta")
    final = rewriter.final_response
    assert final is not None and final["id"] == "resp_sidecar"
    assert text_of(final) == deltas
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 21
    assert final["completed_at"] == 1700000009
    assert rewriter.status == "completed"
    sdk_response = sdk_replay(out)
    assert sdk_response.id == "resp_sidecar"
    assert sdk_response.output_text == deltas


def test_llamacpp_reports_completed_at_the_token_limit_and_we_say_incomplete() -> None:
    # The sample was cut at max_output_tokens=12 yet llama.cpp says "completed".
    engine = sample_events("responses_stream.txt")
    rewriter = ResponsesStreamRewriter(base(max_output_tokens=12), minter())
    out = run(engine, rewriter)
    assert_event_sequence(out)
    assert out[-1]["type"] == "response.incomplete"
    assert out[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    plain = run(
        engine, ResponsesStreamRewriter(base(max_output_tokens=12), minter(), infer_length_limit=False)
    )
    assert plain[-1]["type"] == "response.completed"


def test_created_and_in_progress_are_injected_when_the_engine_skips_them() -> None:
    engine = [
        e
        for e in sample_events("responses_stream.txt")
        if e["type"] not in {"response.created", "response.in_progress"}
    ]
    out = run(engine, ResponsesStreamRewriter(base(), minter()))
    assert_event_sequence(out)
    assert [e["type"] for e in out[:3]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]


def test_duplicate_lifecycle_events_are_sent_once() -> None:
    engine = sample_events("responses_stream.txt")
    engine = engine[:2] + engine[:2] + engine[2:]
    out = run(engine, ResponsesStreamRewriter(base(), minter()))
    assert_event_sequence(out)
    assert sum(e["type"] == "response.created" for e in out) == 1


def test_interrupted_stream_keeps_partial_output_for_storage() -> None:
    engine = sample_events("responses_stream.txt")
    cut = next(i for i, e in enumerate(engine) if e["type"] == "response.output_text.done")
    rewriter = ResponsesStreamRewriter(base(), minter())
    run(engine[:cut], rewriter)
    deltas = "".join(e["delta"] for e in engine[:cut] if e["type"] == "response.output_text.delta")
    (item,) = rewriter.output_items
    assert item["status"] == "incomplete" and item["content"][0]["text"] == deltas
    stored = rewriter.incomplete("client_disconnected")
    assert_response_resource(stored)
    assert stored["status"] == "incomplete" and text_of(stored) == deltas
    assert stored["incomplete_details"] == {"reason": "client_disconnected"}
    assert rewriter.status == "incomplete"
    assert rewriter.feed(engine[cut]) == []


def test_engine_death_mid_stream_ends_with_response_failed() -> None:
    engine = sample_events("responses_stream.txt")[:6]
    rewriter = ResponsesStreamRewriter(base(), minter())
    out = run(engine, rewriter)
    out += rewriter.fail("engine connection lost", "upstream_error")
    assert_event_sequence(out)
    failed = out[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "upstream_error", "message": "engine connection lost"}
    assert text_of(failed) == "".join(e["delta"] for e in engine if e["type"] == "response.output_text.delta")
    assert rewriter.fail("again", "x") == []


def test_engine_error_event_becomes_response_failed() -> None:
    engine = [
        *sample_events("responses_stream.txt")[:4],
        {"type": "error", "error": {"code": "500", "message": "slot died", "type": "server_error"}},
    ]
    out = run(engine, ResponsesStreamRewriter(base(), minter()))
    assert_event_sequence(out)
    assert out[-1]["response"]["error"]["message"] == "slot died"


def test_function_call_stream_without_indices_is_repaired_for_the_sdk() -> None:
    engine = [
        {"type": "response.created", "response": {"id": "resp_e", "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "item": {
                "type": "function_call",
                "id": "fc_e",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "",
            },
        },
        {"type": "response.function_call_arguments.delta", "item_id": "fc_e", "delta": '{"city":'},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_e", "delta": '"Paris"}'},
        {"type": "response.function_call_arguments.done", "item_id": "fc_e", "arguments": '{"city":"Paris"}'},
        {
            "type": "response.output_item.done",
            "item": {"type": "function_call", "id": "fc_e", "call_id": "call_1", "name": "get_weather"},
        },
        {
            "type": "response.completed",
            "response": {
                "id": "resp_e",
                "status": "completed",
                "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            },
        },
    ]
    rewriter = ResponsesStreamRewriter(base(), minter())
    out = run(engine, rewriter)
    assert_event_sequence(out)
    (call,) = rewriter.output_items
    assert call["arguments"] == '{"city":"Paris"}'
    assert call["call_id"].startswith("call_sc") and call["call_id"] != "call_1"  # the sidecar's call id
    assert call["id"].startswith("fc_sc")
    sdk_response = sdk_replay(out)
    assert sdk_response.output[0].arguments == '{"city":"Paris"}'


def test_text_deltas_without_item_or_part_events_get_them_synthesised() -> None:
    engine = [
        {"type": "response.output_text.delta", "delta": "He"},
        {"type": "response.output_text.delta", "delta": "llo"},
        {"type": "response.completed", "response": {"status": "completed"}},
    ]
    rewriter = ResponsesStreamRewriter(base(), minter())
    out = run(engine, rewriter)
    assert_event_sequence(out)
    assert sdk_replay(out).output_text == "Hello"


def test_engine_that_streams_only_a_final_object_still_yields_whole_items() -> None:
    final = orjson.loads((SAMPLES / "responses_nonstream.json").read_bytes())
    out = run([{"type": "response.completed", "response": final}], ResponsesStreamRewriter(base(), minter()))
    assert_event_sequence(out)
    assert sdk_replay(out).output_text == final["output"][0]["content"][0]["text"]


# An engine stream of several items whose engine ids come from a tiny pool, so ids repeat across items.
engine_items = st.lists(
    st.tuples(
        st.sampled_from(["msg_a", "msg_b", "fc_a"]),
        st.sampled_from(["message", "function_call"]),
        st.lists(st.text(max_size=5), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=5,
)


def synthetic_stream(items: list[tuple[str, str, list[str]]]) -> list[Event]:
    events: list[Event] = [{"type": "response.created", "response": {"id": "resp_engine"}}]
    for n, (engine_id, kind, pieces) in enumerate(items):
        if kind == "message":
            events.append(
                {
                    "type": "response.output_item.added",
                    "item": {"type": "message", "id": engine_id, "role": "assistant", "content": []},
                }
            )
            events.append(
                {
                    "type": "response.content_part.added",
                    "item_id": engine_id,
                    "part": {"type": "output_text", "text": ""},
                }
            )
            events += [
                {"type": "response.output_text.delta", "item_id": engine_id, "delta": p} for p in pieces
            ]
            events.append(
                {
                    "type": "response.output_item.done",
                    "item": {
                        "type": "message",
                        "id": engine_id,
                        "content": [{"type": "output_text", "text": "".join(pieces)}],
                    },
                }
            )
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "item": {
                        "type": "function_call",
                        "id": engine_id,
                        "call_id": f"call_{n}",
                        "name": "f",
                        "arguments": "",
                    },
                }
            )
            events += [
                {"type": "response.function_call_arguments.delta", "item_id": engine_id, "delta": p}
                for p in pieces
            ]
            events.append(
                {
                    "type": "response.output_item.done",
                    "item": {
                        "type": "function_call",
                        "id": engine_id,
                        "call_id": f"call_{n}",
                        "name": "f",
                        "arguments": "".join(pieces),
                    },
                }
            )
    events.append({"type": "response.completed", "response": {"id": "resp_engine", "status": "completed"}})
    return events


@given(items=engine_items)
def test_repeated_engine_ids_never_collide_and_deltas_land_on_the_right_item(
    items: list[tuple[str, str, list[str]]],
) -> None:
    rewriter = ResponsesStreamRewriter(base(), minter())
    out = run(synthetic_stream(items), rewriter)
    assert_event_sequence(out)
    final = rewriter.final_response
    assert final is not None
    ids = [item["id"] for item in final["output"]]
    assert len(set(ids)) == len(items)
    assert not any(i in {"msg_a", "msg_b", "fc_a"} for i in ids)
    for item, (_, kind, pieces) in zip(final["output"], items, strict=True):
        got = item["content"][0]["text"] if kind == "message" else item["arguments"]
        assert got == "".join(pieces)
    sdk_replay(out)


@given(items=engine_items, cut=st.integers(min_value=0, max_value=60))
def test_any_prefix_of_a_stream_can_be_failed_into_a_valid_stream(
    items: list[tuple[str, str, list[str]]], cut: int
) -> None:
    engine = synthetic_stream(items)[:-1]
    rewriter = ResponsesStreamRewriter(base(), minter())
    out = run(engine[:cut], rewriter)
    for event in out:
        assert_stream_event(event)
    out += rewriter.fail("gone", "upstream_error")
    assert_event_sequence(out)


def test_rewrite_real_nonstream_answer() -> None:
    engine = orjson.loads((SAMPLES / "responses_nonstream.json").read_bytes())
    resource = rewrite_response(engine, base(), minter(), now=lambda: 5)
    assert_response_resource(resource)
    assert resource["id"] == "resp_sidecar"
    assert resource["output"][0]["id"] == "msg_sc0000"
    assert b"msg_gtioD8" not in orjson.dumps(resource)
    assert text_of(resource) == engine["output"][0]["content"][0]["text"]
    assert resource["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert resource["completed_at"] == engine["completed_at"]


def test_rewrite_nonstream_at_token_limit_is_incomplete() -> None:
    engine = orjson.loads((SAMPLES / "responses_nonstream.json").read_bytes())
    resource = rewrite_response(engine, base(max_output_tokens=12), minter())
    assert_response_resource(resource)
    assert resource["status"] == "incomplete" and resource["completed_at"] is None
    assert resource["incomplete_details"] == {"reason": "max_output_tokens"}


def test_rewrite_mints_distinct_ids_for_items_sharing_an_engine_id() -> None:
    engine = {
        "status": "completed",
        "output": [
            {"type": "function_call", "id": "x", "name": "f", "arguments": "{}"},
            {"type": "function_call", "id": "x", "name": "g", "arguments": "{}"},
        ],
    }
    resource = rewrite_response(engine, base(), minter())
    assert_response_resource(resource)
    first, second = resource["output"]
    assert first["id"] != second["id"] and first["call_id"] != second["call_id"]


def test_openai_sdk_streams_the_repaired_llamacpp_stream_end_to_end() -> None:
    engine = sample_events("responses_stream.txt")
    out = run(engine, ResponsesStreamRewriter(base(), minter()))
    response = sdk_stream(out)
    assert response.id == "resp_sidecar"
    assert response.output_text == "".join(
        e["delta"] for e in engine if e["type"] == "response.output_text.delta"
    )


def test_openai_sdk_rejects_the_raw_llamacpp_stream() -> None:
    # Why the rewriter exists: without it the SDK's stream helper cannot follow llama.cpp.
    with pytest.raises((TypeError, RuntimeError, AssertionError, KeyError)):
        sdk_stream(sample_events("responses_stream.txt"))


def test_text_delta_keeps_engine_fields_in_order_and_leaves_the_engine_event_alone() -> None:
    rewriter = ResponsesStreamRewriter(base(), minter())
    added = {"type": "message", "id": "m", "role": "assistant", "status": "in_progress", "content": []}
    run([{"type": "response.output_item.added", "output_index": 0, "item": added}], rewriter)
    first = {"type": "response.output_text.delta", "sequence_number": 9, "item_id": "m", "delta": "a"}
    second = {**first, "obfuscation": "xy", "logprobs": [{"token": "b"}], "delta": "b"}
    sent = {**second}
    out = run([first, second], rewriter)
    assert second == sent  # the rewriter copies, never edits, what the engine sent
    assert [e["type"] for e in out] == [
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
    ]
    delta = out[-1]
    order = ["type", "item_id", "delta", "obfuscation", "logprobs", "output_index", "content_index"]
    assert list(delta) == [*order, "sequence_number"]
    assert delta["item_id"] != "m" and delta["content_index"] == 0 and delta["logprobs"] == [{"token": "b"}]
    assert delta["sequence_number"] == out[-2]["sequence_number"] + 1
    assert rewriter.incomplete("client_disconnected")["output"][0]["content"][0]["text"] == "ab"
