"""The response object: complete, spec-valid, echoing request settings; usage and items made complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.wire.resource import build_response_resource, complete_output_item, normalise_usage
from tests.conformance import RESPONSE_FIELDS, assert_response_resource

SAMPLES = Path(__file__).parent.parent / "fixtures" / "samples"


def build(request: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "response_id": "resp_1",
        "created_at": 1700000000,
        "status": "completed",
        "model": "gemma",
        "output": [],
        "request": request,
    }
    return build_response_resource(**{**args, **overrides})


def test_empty_request_gets_every_field_with_the_api_defaults() -> None:
    resource = build({})
    assert_response_resource(resource)
    assert set(resource) == RESPONSE_FIELDS
    assert resource["tool_choice"] == "auto"
    assert resource["truncation"] == "disabled"
    assert resource["text"]["format"] == {"type": "text"}
    assert (resource["temperature"], resource["top_p"]) == (1.0, 1.0)
    assert (resource["presence_penalty"], resource["frequency_penalty"], resource["top_logprobs"]) == (
        0.0,
        0.0,
        0,
    )
    assert resource["service_tier"] == "default"
    assert resource["store"] is True and resource["background"] is False
    assert resource["parallel_tool_calls"] is True
    assert resource["metadata"] == {}
    assert resource["usage"] is None and resource["conversation"] is None


def test_request_settings_are_echoed() -> None:
    request = {
        "instructions": "Be brief.",
        "temperature": 0,
        "top_p": 0.5,
        "max_output_tokens": 16,
        "store": False,
        "metadata": {"k": "v"},
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
        },
        "reasoning": {"effort": "low"},
        "user": "u1",
        "prompt_cache_key": "pk",
        "safety_identifier": "s",
        "truncation": "auto",
        "service_tier": "auto",
    }
    resource = build(request, previous_response_id="resp_0", conversation_id="conv_1")
    assert_response_resource(resource)
    assert resource["instructions"] == "Be brief."
    assert resource["temperature"] == 0.0 and isinstance(resource["temperature"], float)
    assert resource["max_output_tokens"] == 16 and resource["store"] is False
    assert resource["tools"] == [
        {
            "type": "function",
            "name": "f",
            "parameters": {"type": "object"},
            "description": None,
            "strict": None,
        }
    ]
    assert resource["text"]["format"]["schema"] == {"type": "object"}
    assert resource["text"]["format"]["strict"] is True
    assert resource["reasoning"] == {"effort": "low", "summary": None}
    assert resource["conversation"] == {"id": "conv_1"} and resource["previous_response_id"] == "resp_0"
    assert resource["service_tier"] == "default"
    assert (resource["user"], resource["prompt_cache_key"], resource["truncation"]) == ("u1", "pk", "auto")


def test_chat_shaped_tool_choice_is_echoed_in_responses_shape() -> None:
    resource = build({"tool_choice": {"type": "function", "function": {"name": "f"}}})
    assert resource["tool_choice"] == {"type": "function", "name": "f"}
    assert_response_resource(resource)


settings = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.none() | st.floats(0, 2) | st.integers(0, 2),
        "top_p": st.none() | st.floats(0, 1),
        "max_output_tokens": st.none() | st.integers(1, 10_000),
        "store": st.none() | st.booleans(),
        "background": st.none() | st.booleans(),
        "parallel_tool_calls": st.none() | st.booleans(),
        "metadata": st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        "tool_choice": st.none() | st.sampled_from(["auto", "none", "required"]),
        "instructions": st.none() | st.text(max_size=20),
        "text": st.none() | st.sampled_from([{}, {"format": {"type": "json_object"}}, {"verbosity": "low"}]),
        "top_logprobs": st.none() | st.integers(0, 20),
    },
)


@given(request=settings, status=st.sampled_from(["completed", "in_progress", "incomplete", "failed"]))
def test_any_request_yields_a_conforming_resource(request: dict[str, Any], status: str) -> None:
    resource = build(request, status=status, usage={"input_tokens": 1, "output_tokens": 2})
    assert_response_resource(resource)
    orjson.dumps(resource)


def test_conformance_rejects_a_missing_field() -> None:
    resource = build({})
    del resource["top_logprobs"]
    with pytest.raises(AssertionError):
        assert_response_resource(resource)


def test_normalise_chat_usage_from_real_llamacpp_sample() -> None:
    chat = orjson.loads((SAMPLES / "chat_nonstream.json").read_bytes())
    assert normalise_usage(chat["usage"]) == {
        "input_tokens": 26,
        "input_tokens_details": {"cached_tokens": 21, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 38,
    }


def test_normalise_responses_usage_fills_missing_details() -> None:
    engine = orjson.loads((SAMPLES / "responses_nonstream.json").read_bytes())
    usage = normalise_usage(engine["usage"])
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}  # llama.cpp leaves it out
    assert usage["input_tokens"] == 26 and usage["total_tokens"] == 38


def test_normalise_usage_tolerates_nulls_and_computes_total() -> None:
    usage = normalise_usage({"prompt_tokens": 5, "completion_tokens": 3, "prompt_tokens_details": None})
    assert usage["total_tokens"] == 8
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert normalise_usage(None)["total_tokens"] == 0


def test_complete_output_item_message_from_plain_string() -> None:
    item = complete_output_item({"type": "message", "id": "msg_1", "content": "hi"})
    assert item == {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}],
    }


def test_complete_output_item_function_call_serialises_parsed_arguments() -> None:
    item = complete_output_item(
        {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": {"a": 1}},
        status="in_progress",
    )
    assert item["arguments"] == '{"a":1}' and item["status"] == "in_progress"
    assert_response_resource(build({}, output=[item]))


def test_complete_output_item_keeps_given_status_and_does_not_mutate() -> None:
    raw = {
        "type": "message",
        "id": "m",
        "status": "incomplete",
        "content": [{"type": "output_text", "text": "x"}],
    }
    item = complete_output_item(raw)
    assert item["status"] == "incomplete"
    assert "annotations" not in raw["content"][0]


def test_complete_reasoning_item_conforms() -> None:
    item = complete_output_item({"type": "reasoning", "id": "rs_1"})
    assert item["summary"] == []
    assert_response_resource(build({}, output=[item]))
