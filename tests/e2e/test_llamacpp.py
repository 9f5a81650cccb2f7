"""End to end on a real engine: `convostore serve` before llama.cpp (Gemma 3 270M), driven by the openai SDK.

Every test runs once per upstream mode (`responses`: the engine's own /v1/responses; `chat`: the sidecar
translates to /v1/chat/completions). Stored history on Redis. The model's wording is never asserted: what the
sidecar did shows in the engine's token counts (`input_tokens` grows with the history it resent;
`cached_tokens` shows llama.cpp's prefix cache hit, which only happens if the history is byte-stable).
"""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import sdk_client
from tests.e2e.sdk_objects import ask, cached_tokens, checked, input_item_ids, input_texts
from tests.e2e.wire_tap import TappedOpenAI
from tests.fixtures.sidecar_process import SidecarProcess

pytestmark = pytest.mark.slow


def _assert_prefix_cache_hit(response: openai.types.responses.Response, earlier_input_tokens: int) -> None:
    # llama.cpp re-evaluates the last few tokens of a cached prompt, so "the whole earlier prompt came from
    # the cache" reads as "over half of it": a changed byte early in the history would drop this to ~1 (BOS).
    cached = cached_tokens(response)
    assert cached > 0
    assert cached >= earlier_input_tokens // 2, (
        f"only {cached} of the earlier prompt's {earlier_input_tokens} tokens came from llama.cpp's cache"
    )


def test_five_turn_chain_resends_history_and_hits_the_prefix_cache(client: TappedOpenAI) -> None:
    questions = [
        "Name a fruit.",
        "Name a colour.",
        "Name an animal.",
        "Name a city.",
        "Name a river.",
    ]
    turns: list[openai.types.responses.Response] = []
    for question in questions:
        chained = {"previous_response_id": turns[-1].id} if turns else {}
        response = ask(client, question, **chained)
        assert response.previous_response_id == (turns[-1].id if turns else None)
        assert client.tap.response_resource(response.id)["store"] is True
        if turns:
            earlier = turns[-1].usage
            assert earlier is not None and response.usage is not None
            assert response.usage.input_tokens > earlier.input_tokens + earlier.output_tokens // 2, (
                "the engine did not receive the earlier turns"
            )
            _assert_prefix_cache_hit(response, earlier.input_tokens)
        turns.append(response)

    # The last turn's input is the whole chain, oldest first: 4 x (question, answer) + the new question.
    ids = input_item_ids(client, turns[-1].id)
    assert len(ids) == 9
    assert ids[1::2] == [turn.output[0].id for turn in turns[:-1]]
    assert input_texts(client, turns[-1].id)[0::2] == questions
    assert len(set(ids)) == len(ids)


def test_branch_from_turn_two_leaves_the_main_line_alone(client: TappedOpenAI) -> None:
    first = ask(client, "Count to three.")
    second = ask(client, "Now count backwards.", previous_response_id=first.id)
    third = ask(client, "Say it louder.", previous_response_id=second.id)
    main = ask(client, "Once more.", previous_response_id=third.id)
    branch = ask(client, "Once more.", previous_response_id=second.id)

    assert branch.previous_response_id == second.id
    assert branch.usage is not None and main.usage is not None and second.usage is not None
    assert second.usage.input_tokens < branch.usage.input_tokens < main.usage.input_tokens
    _assert_prefix_cache_hit(branch, second.usage.input_tokens)

    branch_ids = input_item_ids(client, branch.id)
    assert len(branch_ids) == 5
    assert third.output[0].id not in branch_ids
    assert branch_ids[:4] == input_item_ids(client, third.id)[:4]
    # The main line's history did not move.
    main_ids = input_item_ids(client, main.id)
    assert len(main_ids) == 7
    assert main_ids[5] == third.output[0].id
    assert input_texts(client, branch.id)[-1] == input_texts(client, main.id)[-1] == "Once more."


def test_retrieve_input_items_and_delete(client: TappedOpenAI) -> None:
    first = ask(client, "Pick a number.")
    second = ask(client, "Add one to it.", previous_response_id=first.id)

    got = checked(client, client.responses.retrieve(second.id))
    assert got.id == second.id
    assert got.previous_response_id == first.id
    assert got.status == second.status
    assert got.output_text == second.output_text
    assert [item.id for item in got.output] == [item.id for item in second.output]
    assert got.usage == second.usage

    ascending = client.responses.input_items.list(second.id, order="asc")
    ids = [item.id for item in ascending.data]
    assert len(ids) == 3
    assert ids[1] == first.output[0].id
    assert ids == input_item_ids(client, second.id)
    descending = client.responses.input_items.list(second.id)  # default order: desc
    assert [item.id for item in descending.data] == ids[::-1]
    page = client.responses.input_items.list(second.id, limit=1)
    assert page.has_more is True
    raw_page = client.tap.last_json()
    assert raw_page["object"] == "list"
    assert raw_page["first_id"] == raw_page["last_id"] == ids[-1]
    after = client.responses.input_items.list(second.id, limit=1, after=ids[-1])
    assert [item.id for item in after.data] == [ids[-2]]

    deleted = client.responses.with_raw_response.delete(first.id)
    assert deleted.status_code == 200
    assert deleted.http_response.json() == {"id": first.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as rejected:
        ask(client, "Again.", previous_response_id=first.id)
    assert rejected.value.code == "previous_response_not_found"
    assert rejected.value.param == "previous_response_id"
    # What was chained from the deleted response keeps its own history.
    third = ask(client, "And one more.", previous_response_id=second.id)
    assert input_item_ids(client, third.id)[:3] == ids

    unstored = ask(client, "Forget this.", store=False)
    assert client.tap.response_resource(unstored.id)["store"] is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_conversation_items_reach_the_prompt_and_collect_the_turns(client: TappedOpenAI) -> None:
    seeded = [
        {"type": "message", "role": "user", "content": "My name is Ada and I collect blue teapots."},
        {"type": "message", "role": "assistant", "content": "Nice to meet you, Ada."},
    ]
    conversation = client.conversations.create(items=seeded, metadata={"suite": "e2e"})  # type: ignore[arg-type]
    assert conversation.id.startswith("conv_")
    assert conversation.metadata == {"suite": "e2e"}
    question = "What do I collect?"

    alone = ask(client, question, store=False)
    first = ask(client, question, conversation=conversation.id)
    assert first.conversation is not None and first.conversation.id == conversation.id
    assert first.usage is not None and alone.usage is not None
    assert first.usage.input_tokens > alone.usage.input_tokens, "the conversation's items were not sent"

    items = client.conversations.items.list(conversation.id, order="asc").data
    assert len(items) == 4
    assert [item.type for item in items] == ["message"] * 4
    assert [item.role for item in items] == ["user", "assistant", "user", "assistant"]  # type: ignore[union-attr]
    assert items[2].content[0].text == question  # type: ignore[union-attr]
    assert items[3].id == first.output[0].id
    assert input_item_ids(client, first.id) == [item.id for item in items[:3]]

    second = ask(client, "And my name?", conversation={"id": conversation.id})
    assert second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    _assert_prefix_cache_hit(second, first.usage.input_tokens)
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert len(items) == 6
    assert items[5].id == second.output[0].id


def test_ids_survive_a_sidecar_restart(sidecar: SidecarProcess, client: TappedOpenAI) -> None:
    first = ask(client, "Remember the word lantern.")
    second = ask(client, "Remember the word harbour.", previous_response_id=first.id)
    before = input_item_ids(client, second.id)
    old_pid = sidecar.pid

    sidecar.restart()  # a new process (new port) on the same Redis
    assert sidecar.pid != old_pid
    client = sdk_client(sidecar)

    got = checked(client, client.responses.retrieve(second.id))
    assert got.id == second.id
    assert [item.id for item in got.output] == [item.id for item in second.output]
    assert input_item_ids(client, second.id) == before
    third = ask(client, "Which words?", previous_response_id=second.id)
    assert third.usage is not None and second.usage is not None
    assert third.usage.input_tokens > second.usage.input_tokens
    ids = input_item_ids(client, third.id)
    assert ids[: len(before)] == before
    assert ids[len(before)] == second.output[0].id
