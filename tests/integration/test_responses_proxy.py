"""POST /v1/responses through the sidecar to the fake engine, driven by the openai SDK: chains,
instructions, streaming, retrieve/delete, input items, branching, `store: false` and the stateful headers —
for both engine APIs and both stores (the `stack` fixture), every object and event checked against the
Open Responses models."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.integration.responses_stack import STATE_HEADERS, Stack, engine_view, stack

__all__ = ["stack"]  # the fixture, imported so pytest finds it

MODEL = "fake-model"
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 4,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def not_found_body(response_id: str) -> dict[str, Any]:
    return {
        "error": {
            "message": f"Response with id '{response_id}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def previous_not_found_body(response_id: str) -> dict[str, Any]:
    return {
        "error": {
            "message": f"Previous response with id '{response_id}' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }
    }


async def create(stack: Stack, text: str, previous: str | None = None, **fields: Any) -> Any:
    previous_id = previous if previous is not None else openai.omit
    return await stack.client.responses.create(
        model=MODEL, input=text, previous_response_id=previous_id, **fields
    )


async def chain(stack: Stack, n: int) -> list[Any]:
    responses: list[Any] = []
    for i in range(n):
        responses.append(await create(stack, f"turn {i}", responses[-1].id if responses else None))
    return responses


def turns(*texts: str) -> list[tuple[str, ...]]:
    """The history the engine must see for user turns `texts` answered by the fake engine."""
    history: list[tuple[str, ...]] = []
    for text in texts:
        history += [("user", text), ("assistant", f"echo: {text}")]
    return history


async def test_five_turn_chain_sends_the_whole_history(stack: Stack) -> None:
    responses = await chain(stack, 5)

    bodies = await stack.engine_bodies()
    assert len(bodies) == 5
    for i, (response, body) in enumerate(zip(responses, bodies, strict=True)):
        assert response.status == "completed" and response.output_text == f"echo: turn {i}"
        assert response.previous_response_id == (responses[i - 1].id if i else None)
        assert "previous_response_id" not in body and "conversation" not in body
        instructions, history = engine_view(stack.api, body)
        assert instructions is None
        assert history == [*turns(*(f"turn {j}" for j in range(i))), ("user", f"turn {i}")]
    ids = [r.id for r in responses] + [r.output[0].id for r in responses]
    assert len(set(ids)) == 10 and all(i.startswith(("resp_", "msg_")) for i in ids)
    # the SDK sent only the new input each time
    assert [s["input"] for s in stack.sent()] == [f"turn {i}" for i in range(5)]


async def test_instructions_apply_to_their_turn_only(stack: Stack) -> None:
    first = await create(stack, "hello", instructions="Be terse.")
    second = await create(stack, "again", first.id, instructions="Speak French.")
    third = await create(stack, "more", second.id)

    views = [engine_view(stack.api, body) for body in await stack.engine_bodies()]
    assert [instructions for instructions, _ in views] == ["Be terse.", "Speak French.", None]
    assert views[2][1] == [*turns("hello", "again"), ("user", "more")]  # no system/developer message carried
    assert (first.instructions, second.instructions, third.instructions) == (
        "Be terse.",
        "Speak French.",
        None,
    )
    assert (await stack.client.responses.retrieve(first.id)).instructions == "Be terse."


async def test_create_stream_true(stack: Stack) -> None:
    first = await create(stack, "hello")
    stream = await stack.client.responses.create(
        model=MODEL, input="stream me", previous_response_id=first.id, stream=True
    )
    events = [event async for event in stream]

    assert [e.type for e in events] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(TEXT_EVENTS)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: stream me"
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "echo: stream me"
    assert final.previous_response_id == first.id and events[0].response.id == final.id
    (streamed,) = [e for e in stack.transport.exchanges if e.content_type.startswith("text/event-stream")]
    assert_streamed_ids_match(streamed.events, final.id)
    assert stack.check_conformance() >= 2

    stored = await stack.client.responses.retrieve(final.id)
    assert stored.status == "completed" and stored.output_text == "echo: stream me"
    assert stored.output[0].id == final.output[0].id
    after = await create(stack, "next", final.id)
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [*turns("hello", "stream me"), ("user", "next")]
    assert after.output_text == "echo: next"


def assert_streamed_ids_match(events: list[dict[str, Any]], response_id: str) -> None:
    item_ids = {e["item"]["id"] for e in events if "item" in e} | {
        e["item_id"] for e in events if "item_id" in e
    }
    assert {e["response"]["id"] for e in events if "response" in e} == {response_id}
    assert len(item_ids) == 1 and next(iter(item_ids)).startswith("msg_")


async def test_responses_stream_helper(stack: Stack) -> None:
    first = await create(stack, "hello")
    async with stack.client.responses.stream(
        model=MODEL, input="helper", previous_response_id=first.id
    ) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "echo: helper" == final.output_text
    assert final.status == "completed" and final.id.startswith("resp_")
    stored = await stack.client.responses.retrieve(final.id)
    assert stored.output_text == "echo: helper" and stored.previous_response_id == first.id
    assert stack.check_conformance() == 3


async def test_retrieve_and_delete(stack: Stack) -> None:
    r0, r1, r2 = await chain(stack, 3)
    got = await stack.client.responses.retrieve(r1.id)
    assert (got.id, got.status, got.output_text, got.previous_response_id) == (
        r1.id,
        "completed",
        "echo: turn 1",
        r0.id,
    )
    assert got.output[0].id == r1.output[0].id and got.usage.input_tokens == r1.usage.input_tokens

    resp = await stack.sidecar.delete(f"/v1/responses/{r1.id}")
    assert resp.status == 200
    assert await resp.json() == {"id": r1.id, "object": "response", "deleted": True}

    assert await stack.get(f"/v1/responses/{r1.id}") == (404, not_found_body(r1.id))
    assert await stack.get(f"/v1/responses/{r1.id}/input_items") == (404, not_found_body(r1.id))
    resp = await stack.sidecar.delete(f"/v1/responses/{r1.id}")
    assert (resp.status, await resp.json()) == (404, not_found_body(r1.id))
    resp = await stack.sidecar.post(
        "/v1/responses", json={"model": MODEL, "input": "x", "previous_response_id": r1.id}
    )
    assert (resp.status, await resp.json()) == (400, previous_not_found_body(r1.id))
    with pytest.raises(openai.NotFoundError):
        await stack.client.responses.retrieve(r1.id)

    # the child keeps its whole history, the deleted turn's items included
    assert (await stack.client.responses.retrieve(r2.id)).output_text == "echo: turn 2"
    status, items = await stack.get(f"/v1/responses/{r2.id}/input_items", order="asc")
    assert status == 200 and [i["role"] for i in items["data"]] == ["user", "assistant"] * 2 + ["user"]
    await create(stack, "after delete", r2.id)
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [*turns("turn 0", "turn 1", "turn 2"), ("user", "after delete")]
    # and the parent of the deleted one is untouched
    await create(stack, "from root", r0.id)
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [*turns("turn 0"), ("user", "from root")]


async def test_input_items_pagination(stack: Stack) -> None:
    responses = await chain(stack, 3)
    last = responses[-1]
    expected = [
        ("user", "turn 0"),
        ("assistant", "echo: turn 0"),
        ("user", "turn 1"),
        ("assistant", "echo: turn 1"),
        ("user", "turn 2"),
    ]

    def view(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(i["role"], "".join(p["text"] for p in i["content"])) for i in items]

    status, page = await stack.get(f"/v1/responses/{last.id}/input_items")
    assert status == 200 and page["object"] == "list" and page["has_more"] is False
    assert view(page["data"]) == expected[::-1]  # default order: desc
    ids = [i["id"] for i in page["data"]]
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[-1]) and len(set(ids)) == 5
    assert all(i["type"] == "message" for i in page["data"])
    assert responses[1].output[0].id in ids and responses[0].output[0].id in ids

    status, page = await stack.get(f"/v1/responses/{last.id}/input_items", limit=2, order="asc")
    assert view(page["data"]) == expected[:2] and page["has_more"] is True
    status, page = await stack.get(
        f"/v1/responses/{last.id}/input_items", limit=2, order="asc", after=page["last_id"]
    )
    assert view(page["data"]) == expected[2:4] and page["has_more"] is True
    status, page = await stack.get(
        f"/v1/responses/{last.id}/input_items", limit=2, order="asc", after=page["last_id"]
    )
    assert view(page["data"]) == expected[4:] and page["has_more"] is False
    assert page["first_id"] == page["last_id"] == page["data"][0]["id"]

    status, page = await stack.get(
        f"/v1/responses/{last.id}/input_items", limit=3, order="desc", after=ids[1]
    )
    assert view(page["data"]) == expected[::-1][2:5] and page["has_more"] is False

    # the SDK follows `after`/`has_more` by itself
    listed = [item async for item in stack.client.responses.input_items.list(last.id, limit=2, order="asc")]
    assert [(i.role, i.content[0].text) for i in listed] == expected
    for bad in ({"limit": "0"}, {"limit": "101"}, {"order": "up"}):
        status, body = await stack.get(f"/v1/responses/{last.id}/input_items", **bad)
        assert status == 400 and body["error"]["param"] == next(iter(bad))


async def test_unknown_previous_response_id(stack: Stack) -> None:
    unknown = "resp_0123456789abcdef0123456789abcdef01234567"
    for stream in (False, True):
        resp = await stack.sidecar.post(
            "/v1/responses",
            json={"model": MODEL, "input": "hi", "stream": stream, "previous_response_id": unknown},
        )
        assert (resp.status, await resp.json()) == (400, previous_not_found_body(unknown))
    with pytest.raises(openai.BadRequestError) as caught:
        await create(stack, "hi", "resp_nope")
    assert caught.value.code == "previous_response_not_found" and caught.value.param == "previous_response_id"
    assert await stack.engine_bodies() == []


async def test_branch_from_an_older_response(stack: Stack) -> None:
    r0, r1, r2 = await chain(stack, 3)
    branch = await create(stack, "other way", r0.id)
    branch_next = await create(stack, "go on", branch.id)
    main_next = await create(stack, "main line", r2.id)

    histories = [engine_view(stack.api, b)[1] for b in (await stack.engine_bodies())[3:]]
    assert histories[0] == [*turns("turn 0"), ("user", "other way")]
    assert histories[1] == [*turns("turn 0", "other way"), ("user", "go on")]
    assert histories[2] == [*turns("turn 0", "turn 1", "turn 2"), ("user", "main line")]
    assert branch_next.output_text == "echo: go on" and main_next.output_text == "echo: main line"
    # the branch shares r0's stored items (same ids), not r1's
    _, root_items = await stack.get(f"/v1/responses/{r0.id}/input_items")
    _, r1_items = await stack.get(f"/v1/responses/{r1.id}/input_items", order="asc")
    _, items = await stack.get(f"/v1/responses/{branch_next.id}/input_items", order="asc")
    ids = [i["id"] for i in items["data"]]
    assert ids[:2] == [root_items["data"][0]["id"], r0.output[0].id] and len(ids) == 5
    assert not set(ids) & ({i["id"] for i in r1_items["data"][2:]} | {r1.output[0].id})


async def test_store_false(stack: Stack) -> None:
    root = await create(stack, "kept")
    before = await stack.stored_count()
    loose = await create(stack, "not kept", root.id, store=False)
    assert loose.store is False and loose.output_text == "echo: not kept"
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [*turns("kept"), ("user", "not kept")]  # an unstored turn still gets its history
    stream = await stack.client.responses.create(model=MODEL, input="nor this", store=False, stream=True)
    streamed = [event async for event in stream][-1].response
    assert streamed.store is False and streamed.output_text == "echo: nor this"
    assert await stack.stored_count() == before

    for response_id in (loose.id, streamed.id):
        assert await stack.get(f"/v1/responses/{response_id}") == (404, not_found_body(response_id))
        resp = await stack.sidecar.post(
            "/v1/responses", json={"model": MODEL, "input": "x", "previous_response_id": response_id}
        )
        assert (resp.status, await resp.json()) == (400, previous_not_found_body(response_id))
    # the un-stored turn did not join the chain it came from
    await create(stack, "continue", root.id)
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [*turns("kept"), ("user", "continue")]


async def test_stateful_headers_on_stream_and_non_stream(stack: Stack) -> None:
    raw = await stack.client.responses.with_raw_response.create(model=MODEL, input="hello")
    first = raw.parse()
    assert all(raw.headers.get(h) for h in STATE_HEADERS), dict(raw.headers)
    assert raw.headers["X-Response-Id"] == first.id
    assert raw.headers["X-Prefix-Fingerprint"].isalnum() and int(raw.headers["X-Estimated-Input-Tokens"]) > 0

    async with stack.client.responses.with_streaming_response.create(
        model=MODEL, input="streamed", previous_response_id=first.id, stream=True
    ) as streamed:
        assert all(streamed.headers.get(h) for h in STATE_HEADERS), dict(streamed.headers)
        assert streamed.headers["Content-Type"].startswith("text/event-stream")
        events = [event async for event in await streamed.parse()]
    second = events[-1].response
    assert streamed.headers["X-Response-Id"] == second.id
    assert streamed.headers["X-Conversation-Id"] == raw.headers["X-Conversation-Id"]
    assert int(streamed.headers["X-Conversation-Version"]) == int(raw.headers["X-Conversation-Version"]) + 1
    assert int(streamed.headers["X-Estimated-Input-Tokens"]) > int(raw.headers["X-Estimated-Input-Tokens"])
    assert streamed.headers["X-Request-Id"] != raw.headers["X-Request-Id"]
    assert (
        streamed.headers["X-Prefix-Fingerprint"] == raw.headers["X-Prefix-Fingerprint"]
    )  # no tools either time


async def test_streamed_turn_is_stored_by_the_time_its_terminal_event_arrives(stack: Stack) -> None:
    stream = await stack.client.responses.create(model=MODEL, input="chain at once", stream=True)
    async for event in stream:
        if event.type == "response.completed":
            # The stream is still open: a client that chains the moment it sees the end must find the turn.
            stored = await stack.client.responses.retrieve(event.response.id)
            assert stored.status == "completed" and stored.output_text == "echo: chain at once"
    assert stack.check_conformance() >= 2
