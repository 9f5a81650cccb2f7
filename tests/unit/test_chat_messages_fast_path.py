"""items_to_messages' fast path (a lone text part, how every plain string is stored) gives exactly what the
general path gives, for any stored history, and the same 400 for a part chat cannot carry."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import InvalidRequest
from sidecar.stored_items import with_sidecar_ids
from sidecar.wire.chat_messages import items_to_messages, json_array, stored_items_to_messages
from sidecar.wire.items import parse_item

# Quotes, backslashes, control characters, markers of the stored encoding, non-ASCII and astral text.
_TRICKY = st.sampled_from(
    ['"', "\\", '\\"', "\\\\", "\n", "\x00", "\u2028", "é", "😀", ',"type":"input_text"}],"id":"', "}", "]"]
)
TEXT = st.lists(st.one_of(st.text(min_size=1, max_size=8), _TRICKY), min_size=1, max_size=6).map("".join)


def _message(role: str, text: str, status: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "role": role, "content": text}
    if status and role == "assistant":
        item["status"] = status
    return item


_PLAIN = st.builds(
    _message,
    st.sampled_from(["user", "assistant", "system", "developer"]),
    TEXT,
    st.sampled_from([None, "completed", "incomplete"]),
)
_OTHER = st.one_of(
    st.builds(
        lambda t: {"type": "message", "role": "user", "content": [{"type": "input_text", "text": t}] * 2},
        TEXT,
    ),
    st.builds(
        lambda n, a: {"type": "function_call", "call_id": "call_1", "name": n, "arguments": a},
        st.sampled_from(["lookup", "f"]),
        TEXT,
    ),
    st.builds(lambda o: {"type": "function_call_output", "call_id": "call_1", "output": o}, TEXT),
    st.builds(
        lambda t: {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": t},
                {"type": "input_image", "image_url": "http://x/i.png"},
            ],
        },
        TEXT,
    ),
)


def _stored(raw_items: list[dict[str, Any]]) -> list[bytes]:
    items = [parse_item(raw, f"items[{n}]") for n, raw in enumerate(raw_items)]
    return [encoded for _, encoded in with_sidecar_ids(items, "0123456789abcdef")]


def _general(stored: list[bytes], instructions: str | None) -> bytes:
    """The general path alone: content as a tuple never takes the fast path (`type(...) is list`), and
    _chat_content reads a tuple as it reads a list."""
    items = [orjson.loads(i) for i in stored]
    for item in items:
        if item.get("type", "message") == "message" and isinstance(item["content"], list):
            item["content"] = tuple(item["content"])
    return orjson.dumps(items_to_messages(items, instructions))


def _converted(stored: list[bytes], instructions: str | None) -> bytes:
    """What the session API and stateful chat run: the stored bytes decoded in one call."""
    return orjson.dumps(stored_items_to_messages(stored, instructions))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PLAIN, _OTHER), max_size=12), st.one_of(st.none(), TEXT))
def test_the_fast_path_gives_what_the_general_path_gives(
    items: list[dict[str, Any]], instructions: str | None
) -> None:
    stored = _stored(items)
    assert _converted(stored, instructions) == _general(stored, instructions)


def test_an_inexpressible_stored_part_is_still_the_same_400() -> None:
    stored = _stored(
        [{"type": "message", "role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]
    )
    with pytest.raises(InvalidRequest) as fast:
        _converted(stored, None)
    with pytest.raises(InvalidRequest) as general:
        _general(stored, None)
    assert fast.value.param == general.value.param == "input[0].content[0].file_id"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=6), st.binary(max_size=8), st.binary(max_size=8))
def test_json_array_splices_like_concatenation(items: list[bytes], prefix: bytes, suffix: bytes) -> None:
    assert json_array(items, prefix, suffix) == prefix + b"[" + b",".join(items) + b"]" + suffix
