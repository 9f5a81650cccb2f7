"""Redis dies while a stream runs: the answer cannot be stored, so the client is told so (a failed
terminal event or an error chunk, never `response.completed` or `[DONE]`) and no client chains from it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.fixtures.fake_engine import CONFIG_KEY
from tests.fixtures.redis_servers import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def data_lines(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


@pytest.mark.parametrize("upstream_api", ["responses", "chat"])
async def test_a_responses_stream_whose_turn_cannot_be_stored_ends_failed(
    own_redis: RedisServer, engine: TestServer, make_sidecar: Any, upstream_api: str
) -> None:
    engine.app[CONFIG_KEY].mode, engine.app[CONFIG_KEY].delay = "slow", 0.1
    sidecar = await make_sidecar(
        upstream=str(engine.make_url("")).rstrip("/"), upstream_api=upstream_api, redis_url=own_redis.url
    )
    async with sidecar.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True}) as r:
        assert r.status == 200
        await r.content.readline()  # the stream is under way: history resolved, id announced
        own_redis.kill()
        events = [orjson.loads(d) for d in data_lines(await r.read())]
    assert events[-1]["type"] == "response.failed"
    assert "not stored" in events[-1]["response"]["error"]["message"]
    assert all(e["type"] != "response.completed" for e in events)


async def test_a_stateful_chat_stream_whose_turn_cannot_be_stored_ends_with_an_error_chunk(
    own_redis: RedisServer, engine: TestServer, make_sidecar: Any
) -> None:
    engine.app[CONFIG_KEY].mode, engine.app[CONFIG_KEY].delay = "slow", 0.1
    sidecar = await make_sidecar(upstream=str(engine.make_url("")).rstrip("/"), redis_url=own_redis.url)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with sidecar.post("/v1/chat/completions", json=body, headers={"X-Conversation-Id": "down"}) as r:
        assert r.status == 200
        await r.content.readline()
        own_redis.kill()
        lines = data_lines(await r.read())
    assert lines[-1] != b"[DONE]"
    assert "not stored" in orjson.loads(lines[-1])["error"]["message"]
