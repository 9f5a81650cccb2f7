"""A chat-only engine's prompts grow only at their end: turn N's messages, byte for byte, start turn N+1's,
whatever the client's input ends with and whatever the engine answered (docs/api.md §6)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sidecar.wire.chat_messages import items_to_messages, messages_to_items
from sidecar.wire.items import parse_item

Item = dict[str, Any]


def client_item(raw: Item) -> Item:
    return parse_item(raw, "input[0]")


def answer_item(raw: Item) -> Item:
    """An item of the engine's answer, as stored: output items carry a status."""
    return {**parse_item(raw, "input[0]"), "status": "completed"}


def call(call_id: str) -> Item:
    return {"type": "function_call", "call_id": call_id, "name": "lookup", "arguments": "{}"}


_TEXT = st.sampled_from(["hi", "Sure, checking.", "x=1"])
_CLIENT_ITEMS = st.one_of(
    st.builds(lambda t: client_item({"role": "user", "content": t}), _TEXT),
    st.builds(lambda t: client_item({"role": "assistant", "content": t}), _TEXT),
    st.builds(lambda c: client_item(call(c)), st.sampled_from(["c1", "c2"])),
    st.builds(lambda c: client_item({"type": "function_call_output", "call_id": c, "output": "ok"}), _TEXT),
)
_ANSWERS = st.tuples(st.one_of(st.none(), _TEXT), st.lists(st.sampled_from(["a1", "a2"]), max_size=2)).filter(
    lambda answer: answer[0] is not None or answer[1]
)


def answer_items(text: str | None, calls: list[str]) -> list[Item]:
    """What a chat answer with this content and these tool calls is stored as (chat_completion_to_output)."""
    message = [answer_item({"role": "assistant", "content": text})] if text is not None else []
    return [*message, *(answer_item(call(c)) for c in calls)]


@given(st.lists(st.tuples(st.lists(_CLIENT_ITEMS, min_size=1, max_size=3), _ANSWERS), min_size=1, max_size=4))
def test_each_turns_messages_start_the_next_turns(
    turns: list[tuple[list[Item], tuple[str | None, list[str]]]],
) -> None:
    history: list[Item] = []
    previous: list[bytes] = []
    for new_input, (text, calls) in turns:
        prompt = [orjson.dumps(m) for m in items_to_messages([*history, *new_input], "Be brief.")]
        assert prompt[: len(previous)] == previous
        previous = prompt
        history += [*new_input, *answer_items(text, calls)]


def test_the_engines_call_after_the_clients_assistant_message_is_a_message_of_its_own() -> None:
    prefill = [
        client_item({"role": "user", "content": "Find x"}),
        client_item({"role": "assistant", "content": "Sure"}),
    ]
    messages = items_to_messages([*prefill, answer_item(call("a1"))])
    assert messages[1] == {"role": "assistant", "content": "Sure"}
    assert messages[2]["content"] is None and [c["id"] for c in messages[2]["tool_calls"]] == ["a1"]


def test_one_answers_text_and_calls_stay_one_message() -> None:
    messages = items_to_messages(
        [client_item({"role": "user", "content": "Find x"}), *answer_items("On it.", ["a1", "a2"])]
    )
    assert messages[1]["content"] == "On it." and [c["id"] for c in messages[1]["tool_calls"]] == ["a1", "a2"]


def test_a_clients_assistant_message_with_calls_stays_one_message() -> None:
    sent = [
        {"role": "user", "content": "Find x"},
        {
            "role": "assistant",
            "content": "On it.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
    ]
    assert items_to_messages(messages_to_items(sent)) == sent
