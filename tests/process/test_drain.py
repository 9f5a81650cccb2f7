"""Graceful drain on real processes: SIGTERM fails readiness at once, closes the listener, lets in-flight
requests and streams finish (stored), cuts streams still running at CONVOSTORE_DRAIN_SECONDS (an error
event or chunk to the client, stored `incomplete`), and exits 0."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fixtures.redis_servers import RedisServer
from tests.process.processes import Process, fake_engine, sidecar

JSON = dict[str, Any]


@pytest.fixture
def slow_engine() -> Iterator[Process]:
    engine = fake_engine("slow", delay=0.4, deltas=8)  # a streamed answer takes ~3 s
    try:
        yield engine
    finally:
        engine.close()


async def _sse(resp: aiohttp.ClientResponse, first: asyncio.Event) -> list[JSON]:
    """Every `data:` payload of an event stream, parsed (`[DONE]` as {"done": True})."""
    events: list[JSON] = []
    async for line in resp.content:
        if line.startswith(b"data: "):
            data = line[6:].strip()
            events.append({"done": True} if data == b"[DONE]" else orjson.loads(data))
            if any("delta" in str(e.get("type", "")) or e.get("choices") for e in events[-1:]):
                first.set()
    return events


async def _stream_response(session: aiohttp.ClientSession, url: str, first: asyncio.Event) -> list[JSON]:
    body = {"model": "m", "input": "tell me a long story please", "stream": True}
    async with session.post(f"{url}/v1/responses", json=body) as resp:
        assert resp.status == 200
        return await _sse(resp, first)


async def _stream_chat(
    session: aiohttp.ClientSession, url: str, first: asyncio.Event
) -> tuple[str, list[JSON]]:
    body = {"model": "m", "messages": [{"role": "user", "content": "a chat story"}], "stream": True}
    headers = {"X-Conversation-Id": "conv_drain_chat"}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200
        return resp.headers["X-Response-Id"], await _sse(resp, first)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def _stored(redis: RedisServer, engine: Process, response_id: str) -> JSON:
    """The response as a fresh sidecar on the same Redis serves it."""
    reader = sidecar(upstream=engine.url, redis_url=redis.url)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{reader.url}/v1/responses/{response_id}") as resp,
        ):
            assert resp.status == 200, await resp.text()
            body: JSON = await resp.json()
            return body
    finally:
        reader.close()


def _text(response: JSON) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item.get("type") == "message"
        for part in item["content"]
    )


async def test_sigterm_lets_in_flight_work_finish_and_exits_0(
    redis_server: RedisServer, slow_engine: Process
) -> None:
    proc = sidecar(upstream=slow_engine.url, redis_url=redis_server.url, extra=["--drain-seconds", "20"])
    try:
        async with aiohttp.ClientSession() as probe, aiohttp.ClientSession() as client:
            async with probe.get(f"{proc.url}/convostore/readyz") as ready:
                assert ready.status == 200  # and the probe keeps this connection open
            first = asyncio.Event()
            stream = asyncio.create_task(_stream_response(client, proc.url, first))
            plain_body = {"model": "m", "input": "not streamed"}
            plain = asyncio.create_task(client.post(f"{proc.url}/v1/responses", json=plain_body))
            await asyncio.wait_for(first.wait(), 10)

            proc.terminate()
            for _ in range(100):  # the signal is handled by the sidecar's loop: a moment later
                if _refused(proc.port):
                    break
                await asyncio.sleep(0.02)
            assert _refused(proc.port), "the listener still accepts connections while draining"
            async with probe.get(f"{proc.url}/convostore/readyz") as draining:
                assert draining.status == 503
                assert (await draining.json())["reasons"] == ["draining"]

            events = await asyncio.wait_for(stream, 20)
            answer = await asyncio.wait_for(plain, 20)
            assert answer.status == 200
            plain_id = (await answer.json())["id"]
        assert events[-1]["type"] == "response.completed"
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        proc.close()
    response_id = events[-1]["response"]["id"]
    stored = await _stored(redis_server, slow_engine, response_id)
    assert stored["status"] == "completed"
    assert _text(stored) == _text(events[-1]["response"]) == "echo: tell me a long story please"
    assert (await _stored(redis_server, slow_engine, plain_id))["status"] == "completed"


async def test_streams_running_at_the_deadline_end_with_an_error_and_are_stored_incomplete(
    redis_server: RedisServer, slow_engine: Process
) -> None:
    proc = sidecar(upstream=slow_engine.url, redis_url=redis_server.url, extra=["--drain-seconds", "1"])
    try:
        async with aiohttp.ClientSession() as client:
            first_response, first_chat = asyncio.Event(), asyncio.Event()
            responses = asyncio.create_task(_stream_response(client, proc.url, first_response))
            chat = asyncio.create_task(_stream_chat(client, proc.url, first_chat))
            await asyncio.wait_for(asyncio.gather(first_response.wait(), first_chat.wait()), 10)
            proc.terminate()
            events = await asyncio.wait_for(responses, 15)
            chat_id, chunks = await asyncio.wait_for(chat, 15)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        proc.close()

    assert events[-1]["type"] == "error" and events[-1]["code"] == "server_shutting_down"
    streamed = "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta")
    response_id = events[0]["response"]["id"]
    stored = await _stored(redis_server, slow_engine, response_id)
    assert stored["status"] == "incomplete"
    assert streamed and _text(stored) == streamed != "echo: tell me a long story please"

    assert chunks[-1]["error"]["code"] == "server_shutting_down"
    chat_text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    stored_chat = await _stored(redis_server, slow_engine, chat_id)
    assert stored_chat["status"] == "incomplete"
    assert chat_text and _text(stored_chat) == chat_text
