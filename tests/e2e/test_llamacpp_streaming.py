"""End to end on a real engine, streaming: the SDK's `responses.stream()` helper,
`responses.create(stream=True)` and stateful chat completions (X-Conversation-Id), in both upstream modes."""

from __future__ import annotations

import uuid

import openai
import pytest

from tests.conformance import assert_event_sequence
from tests.e2e.sdk_objects import MODEL, SAMPLING, ask, cached_tokens, checked, input_item_ids
from tests.e2e.wire_tap import TappedOpenAI

pytestmark = pytest.mark.slow

_TERMINAL = ("response.completed", "response.incomplete")
# One text item's life, in order (deltas between content_part.added and output_text.done).
_TEXT_ITEM_EVENTS = (
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
)


def _streamed_text(events: list[dict[str, object]]) -> str:
    return "".join(str(e["delta"]) for e in events if e["type"] == "response.output_text.delta")


def _assert_matches_stored(client: TappedOpenAI, final: openai.types.responses.Response) -> None:
    stored = checked(client, client.responses.retrieve(final.id))
    assert stored.status == final.status
    assert stored.output_text == final.output_text
    assert [item.id for item in stored.output] == [item.id for item in final.output]
    assert stored.usage == final.usage


def test_stream_helper_events_and_final_response(client: TappedOpenAI) -> None:
    first = ask(client, "Say hello.")
    # `stop` is no Responses field: llama.cpp's /v1/responses honours it, and this prompt greedily echoes
    # itself before the stop string, so in `responses` mode the run ends `completed` and the helper returns
    # the final response. In `chat` mode the sidecar does not translate `stop`: the run hits the token limit,
    # ends `incomplete`, and the helper raises. Both endings are checked.
    with client.responses.stream(
        model=MODEL,
        input="Say hello.",
        previous_response_id=first.id,
        extra_body={"stop": ["<|im_end|>"]},
        **SAMPLING,
    ) as stream:
        events = list(stream)
        raw = client.tap.last_events()
        assert_event_sequence(raw)
        assert [event.type for event in events] == [event["type"] for event in raw]
        terminal = events[-1]
        assert terminal.type in _TERMINAL, terminal.type
        if terminal.type == "response.completed":
            final = stream.get_final_response()
            assert final.id == terminal.response.id
            assert final.output_text == terminal.response.output_text
        else:
            with pytest.raises(RuntimeError, match=r"response\.completed"):
                stream.get_final_response()
            final = terminal.response

    checked(client, final)
    assert final.previous_response_id == first.id
    assert final.output_text == _streamed_text(raw)
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert first.usage is not None
    assert cached_tokens(final) >= first.usage.input_tokens // 2
    _assert_matches_stored(client, final)


def test_create_stream_every_event_conforms(client: TappedOpenAI) -> None:
    first = ask(client, "Name a mountain.")
    stream = client.responses.create(
        model=MODEL, input="Name a lake.", previous_response_id=first.id, stream=True, **SAMPLING
    )
    events = list(stream)
    raw = client.tap.last_events()
    assert_event_sequence(raw)
    assert [event.type for event in events] == [event["type"] for event in raw]
    assert [event["sequence_number"] for event in raw] == list(range(len(raw)))
    kinds = [event["type"] for event in raw]
    assert kinds[-1] in _TERMINAL
    assert [kind for kind in kinds if kind in _TEXT_ITEM_EVENTS] == list(_TEXT_ITEM_EVENTS), kinds

    terminal = events[-1]
    assert terminal.type in _TERMINAL
    final = checked(client, terminal.response)
    assert final.previous_response_id == first.id
    assert final.output_text == _streamed_text(raw) != ""
    done = next(e for e in raw if e["type"] == "response.output_text.done")
    assert done["text"] == final.output_text
    assert first.usage is not None
    assert cached_tokens(final) >= first.usage.input_tokens // 2
    _assert_matches_stored(client, final)

    # The streamed turn is chainable like any other.
    after = ask(client, "And a sea?", previous_response_id=final.id)
    assert input_item_ids(client, after.id)[3] == final.output[0].id


def test_stateful_chat_completions_stream_and_not(client: TappedOpenAI) -> None:
    conversation_id = f"e2e-chat-{uuid.uuid4().hex}"
    state = {"X-Conversation-Id": conversation_id}
    settings = {"model": MODEL, "temperature": 0.0, "max_tokens": 8}

    raw = client.chat.completions.with_raw_response.create(
        messages=[{"role": "user", "content": "My favourite number is seven."}],
        extra_headers=state,
        **settings,
    )
    assert raw.headers["X-Conversation-Id"] == conversation_id
    assert raw.headers["X-Response-Id"].startswith("resp_")
    assert raw.headers["X-Conversation-Version"]
    first = raw.parse()
    assert first.object == "chat.completion"
    assert first.usage is not None

    chunks = list(
        client.chat.completions.create(
            messages=[{"role": "user", "content": "What is my favourite number?"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=state,
            **settings,
        )
    )
    usage = chunks[-1].usage
    assert usage is not None, "no usage chunk at the end of the stream"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens // 2
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens is not None
    assert usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens // 2

    # The streamed turn is stored by the time the client has read [DONE]: the next call must see it.
    stored = client.conversations.items.list(conversation_id, order="asc").data
    assert len(stored) == 4, f"the streamed turn was not stored before the stream ended: {len(stored)} items"
    third = client.chat.completions.create(
        messages=[{"role": "user", "content": "Thanks."}], extra_headers=state, **settings
    )
    assert third.usage is not None
    assert third.usage.prompt_tokens > usage.prompt_tokens
    assert third.usage.prompt_tokens_details is not None
    assert (third.usage.prompt_tokens_details.cached_tokens or 0) >= usage.prompt_tokens // 2

    # Branching by header: from the first turn, the prompt holds only that turn.
    branch = client.chat.completions.create(
        messages=[{"role": "user", "content": "Thanks."}],
        extra_headers={**state, "X-Previous-Response-Id": raw.headers["X-Response-Id"]},
        **settings,
    )
    assert branch.usage is not None
    assert first.usage.prompt_tokens < branch.usage.prompt_tokens < third.usage.prompt_tokens
