"""Races through HTTP: concurrent first turns on a new conversation, and concurrent calls sharing an
Idempotency-Key, on both relays (Responses in both upstream modes, stateful chat), stream and not."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.fake_engine import CONFIG_KEY, recorded

Client = TestClient[Any, Any]
N = 12


@pytest.fixture(autouse=True)
def slow_engine(engine: TestServer) -> None:
    """Deltas 20 ms apart: long enough for the racing calls to overlap."""
    engine.app[CONFIG_KEY].mode = "slow"
    engine.app[CONFIG_KEY].delay = 0.02


@pytest.fixture(params=["memory", "redis"])
async def store_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_server").url)


@pytest.fixture(params=["responses", "chat"])
async def sidecar(
    request: pytest.FixtureRequest, engine: TestServer, make_sidecar: Any, store_url: str
) -> Client:
    upstream = str(engine.make_url("")).rstrip("/")
    return await make_sidecar(upstream=upstream, upstream_api=request.param, redis_url=store_url)


def sse_data(body: bytes) -> list[Any]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


async def response_id_of(answer: Any, stream: bool) -> str:
    assert answer.status == 200, await answer.text()
    if stream:
        events = sse_data(await answer.read())
        terminal = events[-1]
        assert terminal.get("type") == "response.completed" or "choices" in terminal, terminal
    else:
        await answer.read()
    return str(answer.headers["X-Response-Id"])


@pytest.mark.parametrize("stream", [False, True])
async def test_concurrent_first_chats_on_a_new_conversation_are_all_stored(
    sidecar: Client, engine: TestServer, stream: bool
) -> None:
    conv = f"new-conv-{os.urandom(6).hex()}"
    answers = await asyncio.gather(
        *(
            sidecar.post(
                "/v1/chat/completions",
                json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": f"hi {n}"}]},
                headers={"X-Conversation-Id": conv},
            )
            for n in range(N)
        )
    )
    ids = [await response_id_of(a, stream) for a in answers]
    assert len(set(ids)) == N
    for rid in ids:  # every announced id was stored
        assert (await sidecar.get(f"/v1/responses/{rid}")).status == 200
    session = await (await sidecar.get(f"/v1/sessions/{conv}")).json()
    assert session["turns"] == N and session["version"] == N


@pytest.mark.parametrize("stream", [False, True])
async def test_concurrent_calls_with_one_key_make_one_engine_call_and_one_turn(
    sidecar: Client, engine: TestServer, stream: bool
) -> None:
    start = await (await sidecar.post("/v1/responses", json={"model": "m", "input": "start"})).json()
    body = {"model": "m", "input": "next", "previous_response_id": start["id"], "stream": stream}
    before = len(recorded(engine.app))
    key = {"Idempotency-Key": f"k-{os.urandom(6).hex()}"}
    answers = await asyncio.gather(*(sidecar.post("/v1/responses", json=body, headers=key) for _ in range(N)))
    ids = {await response_id_of(a, stream) for a in answers}
    assert len(ids) == 1 and len(recorded(engine.app)) == before + 1
    stored = await sidecar.get(f"/v1/responses/{ids.pop()}")
    assert stored.status == 200 and (await stored.json())["status"] == "completed"
    session = await (
        await sidecar.get("/v1/sessions/resolve", params={"previous_response_id": start["id"]})
    ).json()
    assert session["version"] == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_stateful_chat_retries_with_one_key_replay_the_first_answer(
    sidecar: Client, engine: TestServer, stream: bool
) -> None:
    conv = f"chat-idem-{os.urandom(6).hex()}"
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hello"}]}
    headers = {"X-Conversation-Id": conv, "Idempotency-Key": f"chat-{stream}"}
    before = len(recorded(engine.app))
    answers = await asyncio.gather(
        *(sidecar.post("/v1/chat/completions", json=body, headers=headers) for _ in range(N))
    )
    ids = {await response_id_of(a, stream) for a in answers}
    assert len(ids) == 1 and len(recorded(engine.app)) == before + 1
    # A sequential retry too, and its answer carries the same text the first client got.
    again = await sidecar.post("/v1/chat/completions", json=body, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["X-Response-Id"] in ids
    if stream:
        chunks = sse_data(await again.read())
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    else:
        text = (await again.json())["choices"][0]["message"]["content"]
    stored = await (await sidecar.get(f"/v1/responses/{again.headers['X-Response-Id']}")).json()
    assert text and text == stored["output"][0]["content"][0]["text"]
    session = await (await sidecar.get(f"/v1/sessions/{conv}")).json()
    assert session["turns"] == 1
    other = await sidecar.post(
        "/v1/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "other"}]},
        headers=headers,
    )
    assert other.status == 409


async def test_a_key_whose_first_call_the_engine_refused_can_be_retried(
    sidecar: Client, engine: TestServer
) -> None:
    body = {"model": "m", "input": "hello"}
    key = {"Idempotency-Key": f"retry-me-{os.urandom(6).hex()}"}
    engine.app[CONFIG_KEY].mode = "fail_status"
    refused = await sidecar.post("/v1/responses", json=body, headers=key)
    assert refused.status >= 500
    engine.app[CONFIG_KEY].mode = "ok"
    retried = await sidecar.post("/v1/responses", json=body, headers=key)
    assert retried.status == 200 and (await retried.json())["status"] == "completed"
