"""Idempotency-Key on POST /v1/responses: a retry gets the first answer and the engine is not asked twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conformance import assert_event_sequence
from tests.fixtures.fake_engine import recorded

Client = TestClient[Any, Any]


@pytest.fixture(params=["memory", "redis"])
async def sidecar(request: pytest.FixtureRequest, engine: TestServer, make_sidecar: Any) -> Client:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_server").url
    return await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), redis_url=url)


def events_of(body: bytes) -> list[dict[str, Any]]:
    import orjson

    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


async def test_retry_returns_the_first_answer_without_calling_the_engine(
    sidecar: Client, engine: TestServer
) -> None:
    body = {"model": "m", "input": "hello"}
    first = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "abc"})
    first_body = await first.json()
    calls = len(recorded(engine.app, "/v1/responses"))
    again = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "abc"})
    assert again.status == 200 and await again.json() == first_body
    assert len(recorded(engine.app, "/v1/responses")) == calls
    streamed = await sidecar.post(
        "/v1/responses", json={**body, "stream": True}, headers={"Idempotency-Key": "abc"}
    )
    assert streamed.status == 409  # `stream` absent vs present is another body; same body must match


async def test_stream_retry_replays_a_valid_event_sequence(sidecar: Client) -> None:
    body = {"model": "m", "input": "hello", "stream": True}
    first = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "s1"})
    original = events_of(await first.read())
    again = await sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "s1"})
    replayed = events_of(await again.read())
    assert_event_sequence(replayed)
    assert replayed[-1]["response"]["id"] == original[-1]["response"]["id"]
    assert replayed[-1]["response"]["output"] == original[-1]["response"]["output"]


async def test_same_key_other_body_is_409_and_writes_nothing(sidecar: Client) -> None:
    first = await (
        await sidecar.post(
            "/v1/responses", json={"model": "m", "input": "a"}, headers={"Idempotency-Key": "k"}
        )
    ).json()
    resp = await sidecar.post(
        "/v1/responses", json={"model": "m", "input": "b"}, headers={"Idempotency-Key": "k"}
    )
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["param"] == "Idempotency-Key"
    items = await (await sidecar.get(f"/v1/responses/{first['id']}/input_items")).json()
    assert len(items["data"]) == 1


async def test_concurrent_retries_store_one_turn(sidecar: Client) -> None:
    chain = await (await sidecar.post("/v1/responses", json={"model": "m", "input": "start"})).json()
    body = {"model": "m", "input": "next", "previous_response_id": chain["id"]}
    answers = await asyncio.gather(
        *(sidecar.post("/v1/responses", json=body, headers={"Idempotency-Key": "c"}) for _ in range(5))
    )
    ids = {(await a.json())["id"] for a in answers}
    assert len(ids) == 1
    stored = await sidecar.get(f"/v1/responses/{ids.pop()}")
    assert stored.status == 200
    session = await (
        await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": chain["id"]})
    ).json()
    assert session["version"] == 2  # the first turn and exactly one retried turn
