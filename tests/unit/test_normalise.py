"""Byte-stable normalisation: equal meaning, equal bytes; normalising twice changes nothing."""

from __future__ import annotations

import unicodedata

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sidecar.normalise import canonical_json, canonical_json_text, encode_item, normalise_text
from sidecar.wire.chat_messages import items_to_messages, messages_to_items
from sidecar.wire.items import parse_input, parse_item

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.text())
def test_text_normalisation_is_idempotent_nfc_and_lf_only(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once
    assert "\r" not in once
    assert unicodedata.is_normalized("NFC", once)


def test_line_endings_and_composition() -> None:
    assert normalise_text("a\r\nb\rc\n") == "a\nb\nc\n"
    assert normalise_text("e\u0301") == "\u00e9"


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_canonical_json_ignores_key_order(value: dict[str, object]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(value) == canonical_json(reordered)
    assert canonical_json(orjson.loads(canonical_json(value))) == canonical_json(value)


def test_function_arguments_are_canonical_and_broken_json_is_kept() -> None:
    assert canonical_json_text('{ "b": 1,\n "a": [1, 2] }') == '{"a":[1,2],"b":1}'
    assert canonical_json_text('{"a": 1') == '{"a": 1'


@given(st.text(min_size=1).filter(lambda t: t.strip() != ""))
def test_string_content_and_lone_text_part_store_the_same_bytes(text: str) -> None:
    as_string = parse_item({"role": "user", "content": text}, "input[0]")
    as_part = parse_item(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}, "x"
    )
    as_chat_part = parse_item({"role": "user", "content": [{"type": "text", "text": text}]}, "x")
    assert encode_item(as_string) == encode_item(as_part) == encode_item(as_chat_part)


@given(st.text(min_size=1), st.sampled_from(["user", "assistant", "system", "developer"]))
def test_parsing_a_stored_item_again_changes_nothing(text: str, role: str) -> None:
    once = parse_item({"role": role, "content": text}, "input[0]")
    twice = parse_item(orjson.loads(encode_item(once)), "input[0]")
    assert encode_item(once) == encode_item(twice)


@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(min_size=1)), min_size=1, max_size=6)
)
def test_chat_messages_round_trip_through_items(turns: list[tuple[str, str]]) -> None:
    messages = [{"role": role, "content": normalise_text(text)} for role, text in turns]
    assert items_to_messages(messages_to_items(messages)) == messages


def test_tool_calls_round_trip_through_items() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    items = messages_to_items(messages)
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items_to_messages(items) == messages


def test_instructions_come_first_and_developer_becomes_system_for_chat() -> None:
    items = parse_input([{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}])
    assert items_to_messages(items, "be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "hi"},
    ]
