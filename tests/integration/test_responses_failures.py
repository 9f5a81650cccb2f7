"""POST /v1/responses when things go wrong: the engine fails mid-stream or answers 500, repeats its ids,
or the client leaves mid-stream — for both engine APIs and both stores, through the openai SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.integration.responses_stack import Stack, engine_view, stack

__all__ = ["stack"]  # the fixture, imported so pytest finds it

MODEL = "fake-model"


async def poll_stored(stack: Stack, response_id: str, timeout: float = 3.0) -> dict[str, Any]:
    """The stored response once it is no longer missing or in progress."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await stack.get(f"/v1/responses/{response_id}")
        if status == 200 and body["status"] != "in_progress":
            return body
        assert asyncio.get_running_loop().time() < deadline, f"still {status} {body}"
        await asyncio.sleep(0.02)


async def test_engine_fails_midstream(stack: Stack) -> None:
    root = await stack.client.responses.create(model=MODEL, input="before")
    await stack.set_mode("fail_midstream")
    stream = await stack.client.responses.create(
        model=MODEL, input="doomed", previous_response_id=root.id, stream=True
    )
    events = [event async for event in stream]

    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.message
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert (
        "".join(deltas) == "echo: doomed"[: len("".join(deltas))] and len(deltas) == 2
    )  # what came, in order
    assert stack.check_conformance() >= 2  # the failed stream is a complete, valid sequence too

    stored = await poll_stored(stack, failed.id)
    assert stored["status"] == "failed" and stored["error"]["message"] == failed.error.message
    assert stored["previous_response_id"] == root.id


async def test_engine_500_is_a_502_and_stores_nothing(stack: Stack) -> None:
    root = await stack.client.responses.create(model=MODEL, input="before")
    before = await stack.stored_count()
    await stack.set_mode("fail_status")
    for stream in (False, True):
        resp = await stack.sidecar.post(
            "/v1/responses",
            json={"model": MODEL, "input": "x", "stream": stream, "previous_response_id": root.id},
        )
        body = await resp.json()
        assert resp.status == 502 and resp.content_type == "application/json"
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "server_error" and "fake engine failure" in body["error"]["message"]
    with pytest.raises(openai.InternalServerError) as caught:
        await stack.client.responses.create(model=MODEL, input="fresh")
    assert caught.value.status_code == 502
    assert await stack.stored_count() == before

    # the failed turns left no trace in the chain
    await stack.set_mode("ok")
    await stack.client.responses.create(model=MODEL, input="retry", previous_response_id=root.id)
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [("user", "before"), ("assistant", "echo: before"), ("user", "retry")]


async def test_engine_drops_a_non_streamed_answer(stack: Stack) -> None:
    before = await stack.stored_count()
    await stack.set_mode("fail_midstream")
    resp = await stack.sidecar.post("/v1/responses", json={"model": MODEL, "input": "x"})
    body = await resp.json()
    assert resp.status == 502 and body["error"]["type"] == "server_error"
    assert await stack.stored_count() == before


async def test_engine_that_repeats_ids(stack: Stack) -> None:
    await stack.set_mode("repeat_ids")
    responses: list[Any] = []
    for i in range(4):
        previous = responses[-1].id if responses else openai.omit
        if i % 2:
            stream = await stack.client.responses.create(
                model=MODEL, input=f"turn {i}", stream=True, previous_response_id=previous
            )
            responses.append([event async for event in stream][-1].response)
        else:
            responses.append(
                await stack.client.responses.create(
                    model=MODEL, input=f"turn {i}", previous_response_id=previous
                )
            )

    seen = _ids_seen(stack)
    assert not any("fixed" in i for i in seen), seen
    response_ids = [r.id for r in responses]
    item_ids = [r.output[0].id for r in responses]
    assert len(set(response_ids + item_ids)) == 8
    assert seen == set(response_ids + item_ids)
    assert all(i.startswith("resp_") for i in response_ids) and all(i.startswith("msg_") for i in item_ids)

    for i, response in enumerate(responses):
        stored = await stack.client.responses.retrieve(response.id)
        assert stored.output_text == f"echo: turn {i}" and stored.output[0].id == item_ids[i]
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history == [
        *[m for j in range(3) for m in (("user", f"turn {j}"), ("assistant", f"echo: turn {j}"))],
        ("user", "turn 3"),
    ]
    status, items = await stack.get(f"/v1/responses/{responses[-1].id}/input_items")
    assert status == 200 and len({i["id"] for i in items["data"]}) == 7


def _ids_seen(stack: Stack) -> set[str]:
    """Every response and item id the client was sent, in objects and in streamed events."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                if key in ("id", "item_id") and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for exchange in stack.transport.exchanges:
        if exchange.content_type.startswith("text/event-stream"):
            walk(exchange.events)
        elif exchange.content_type.startswith("application/json"):
            walk(exchange.json)
    return found


async def test_client_disconnect_midstream_stores_incomplete(stack: Stack) -> None:
    root = await stack.client.responses.create(model=MODEL, input="before")
    await stack.set_mode("slow", delay=0.1, deltas=30)  # 3 s of answer if nobody left
    stream = await stack.client.responses.create(
        model=MODEL, input="long answer", previous_response_id=root.id, stream=True
    )
    first = await anext(aiter(stream))
    assert first.type == "response.created"
    response_id = first.response.id
    await stream.close()
    stack.checked = len(stack.transport.exchanges)  # a stream cut on purpose is no complete sequence

    stored = await poll_stored(stack, response_id, timeout=2.0)
    assert stored["status"] == "incomplete" and stored["incomplete_details"] is not None
    assert stored["previous_response_id"] == root.id
    assert await stack.client.responses.retrieve(response_id)  # and the SDK reads it
    # a cut turn can still be continued: its input is part of the history
    await stack.set_mode("ok")
    after = await stack.client.responses.create(model=MODEL, input="again", previous_response_id=response_id)
    assert after.output_text == "echo: again"
    _, history = engine_view(stack.api, (await stack.engine_bodies())[-1])
    assert history[:3] == [("user", "before"), ("assistant", "echo: before"), ("user", "long answer")]
    assert history[-1] == ("user", "again")
