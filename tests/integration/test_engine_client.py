"""The lean engine client on real sockets: keep-alive reuse, the request it writes, whole, chunked and
until-close bodies, a stale pooled connection retried once (and only when that is safe), the connection
limit, uvloop, and the aiohttp session kept for engines the client does not serve."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar import engine_client
from sidecar.engine_client import EngineClient
from tests.fixtures.fake_engine import create_fake_engine, recorded
from tests.integration.conftest import SidecarFactory
from tests.integration.engine_servers import OK_HEAD, Seen, answer, client_for, raw_engine, read_request

JSON_HEADERS = {"Content-Type": "application/json"}
EVENTS = b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def _ports_app() -> web.Application:
    """An engine that answers with the client port it saw (one per connection), whole or chunked."""

    async def whole(request: web.Request) -> web.Response:
        await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.json_response({"port": peer[1] if peer else None})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for line in EVENTS.split(b"\n\n")[:-1]:
            await response.write(line + b"\n\n")
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/whole", whole)
    app.router.add_post("/v1/chunked", chunked)
    return app


@pytest.fixture
async def ports_engine() -> AsyncIterator[str]:
    server = TestServer(_ports_app())
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def _reuse_round(url: str) -> set[int]:
    client = client_for(url)
    ports = set()
    try:
        for _ in range(5):
            async with await client.post("/v1/whole", b"{}", JSON_HEADERS) as response:
                assert response.status == 200 and response.content_type == "application/json"
                ports.add(orjson.loads(await response.read())["port"])
            async with await client.post("/v1/chunked", b"{}", JSON_HEADERS) as response:
                assert response.content_type == "text/event-stream"
                assert b"".join([chunk async for chunk in response.content.iter_any()]) == EVENTS
    finally:
        await client.close()
    return ports


async def test_sequential_calls_reuse_one_connection_for_whole_and_chunked_bodies(ports_engine: str) -> None:
    assert len(await _reuse_round(ports_engine)) == 1


def test_the_client_runs_on_uvloop() -> None:
    """The sidecar runs on uvloop, whose transports are not asyncio.Transport subclasses."""

    async def scenario() -> set[int]:
        server = TestServer(_ports_app())
        await server.start_server()
        try:
            return await _reuse_round(str(server.make_url("")).rstrip("/"))
        finally:
            await server.close()

    assert len(uvloop.run(scenario())) == 1


async def test_the_request_is_one_well_formed_message_with_the_callers_headers() -> None:
    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        await read_request(reader, seen)
        writer.write(answer(b"{}"))

    async with raw_engine(handler) as (url, seen):
        client = client_for(url + "/engine")
        headers = {
            **JSON_HEADERS,
            "Authorization": "Bearer k",
            "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        }
        async with await client.post("/v1/responses", b'{"a":1}', headers) as response:
            assert await response.read() == b"{}"
        with pytest.raises(ValueError):  # a header value must not smuggle a second header or request
            await client.post("/v1/responses", b"{}", {"X-Bad": "a\r\nHost: evil"})
        await client.close()
    head, _, body = seen.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /engine/v1/responses HTTP/1.1"
    assert set(lines[1:]) == {
        f"Host: {url.removeprefix('http://')}",
        "Accept: */*",
        "Content-Type: application/json",
        "Authorization: Bearer k",
        f"traceparent: {headers['traceparent']}",
        "Content-Length: 7",
    }
    assert body == b'{"a":1}' and len(seen.requests) == 1


async def test_a_body_that_ends_with_the_connection_is_read_whole_and_the_connection_not_reused() -> None:
    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + EVENTS)
        await writer.drain()

    async with raw_engine(handler) as (url, seen):
        client = client_for(url)
        for _ in range(2):
            async with await client.post("/v1/responses", b"{}", JSON_HEADERS) as response:
                assert await response.read() == EVENTS
        await client.close()
    assert seen.connections == 2


def _stale_second_request(answers_on_fresh: bool) -> object:
    """First connection: answers its first request (keep-alive), then closes on the next one unanswered, as
    an engine does that drops an idle connection just as a request goes out. Later connections answer."""

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        if n == 1:
            await read_request(reader, seen)
            writer.write(answer(b'"first"'))
            await read_request(reader, seen)
            return  # closed unanswered
        while await read_request(reader, seen) is not None and answers_on_fresh:
            writer.write(answer(b'"fresh"'))

    return handler


@pytest.mark.parametrize("answers_on_fresh", [True, False], ids=["retried", "fresh-fails-too"])
async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one(answers_on_fresh: bool) -> None:
    async with raw_engine(_stale_second_request(answers_on_fresh)) as (url, seen):  # type: ignore[arg-type]
        client = client_for(url)
        async with await client.post("/v1/responses", b"{}", JSON_HEADERS) as response:
            assert await response.read() == b'"first"'
        if answers_on_fresh:
            async with await client.post("/v1/responses", b"{}", JSON_HEADERS) as response:
                assert await response.read() == b'"fresh"'
        else:  # a fresh connection that fails is not retried: that is no stale keep-alive
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await client.post("/v1/responses", b"{}", JSON_HEADERS)
        await client.close()
    assert seen.connections == 2
    assert len(seen.requests) == 3


async def test_no_retry_once_any_byte_of_the_answer_came_back() -> None:
    """The engine had taken the request: sending it again could run it twice."""

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        await read_request(reader, seen)
        writer.write(answer(b'"first"'))
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")
        await writer.drain()

    async with raw_engine(handler) as (url, seen):
        client = client_for(url)
        async with await client.post("/v1/responses", b"{}", JSON_HEADERS) as response:
            await response.read()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.post("/v1/responses", b"{}", JSON_HEADERS)
        await client.close()
    assert (seen.connections, len(seen.requests)) == (1, 2)


async def test_an_idle_connection_the_engine_closed_is_not_picked() -> None:
    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        await read_request(reader, seen)
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()  # then the engine closes its idle connection (keep-alive, but not for long)

    async with raw_engine(handler) as (url, seen):
        client = client_for(url)
        for _ in range(3):
            async with await client.post("/v1/responses", b"{}", JSON_HEADERS) as response:
                assert await response.read() == b"{}"
            await asyncio.sleep(0.05)  # the close has arrived
        await client.close()
    assert (seen.connections, len(seen.requests)) == (3, 3)  # no request went to a closed connection


async def test_connections_idle_too_long_are_not_reused(
    ports_engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_client, "IDLE_SECONDS", 0.05)
    client = client_for(ports_engine)

    async def port() -> int:
        async with await client.post("/v1/whole", b"{}", JSON_HEADERS) as response:
            return int(orjson.loads(await response.read())["port"])

    first = await port()
    assert await port() == first
    await asyncio.sleep(0.1)
    assert await port() != first
    await client.close()


async def test_idle_connections_are_closed_when_the_traffic_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_client, "IDLE_SECONDS", 0.1)
    closed: list[float] = []

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        while await read_request(reader, seen) is not None:
            writer.write(answer(b"{}"))
            await writer.drain()
        closed.append(asyncio.get_running_loop().time())  # the client closed the connection

    async with raw_engine(handler) as (url, seen):
        client = client_for(url)
        for _ in range(2):
            async with await client.post("/v1/responses", b"{}", JSON_HEADERS) as response:
                assert await response.read() == b"{}"
        last_answer = asyncio.get_running_loop().time()
        await asyncio.sleep(0.5)  # no traffic: nothing but a timer can close the idle connection
        assert seen.connections == 1 and len(closed) == 1
        assert 0.1 <= closed[0] - last_answer < 0.4
        await client.close()


async def test_an_answer_released_unread_closes_its_connection(ports_engine: str) -> None:
    client = client_for(ports_engine)
    response = await client.post("/v1/chunked", b"{}", JSON_HEADERS)
    response.release()  # the relay left (its client went): the engine must stop, the connection goes
    async with await client.post("/v1/whole", b"{}", JSON_HEADERS) as first:
        port = orjson.loads(await first.read())["port"]
    async with await client.post("/v1/whole", b"{}", JSON_HEADERS) as second:
        assert orjson.loads(await second.read())["port"] == port  # the new connection is kept
    await client.close()


async def test_calls_beyond_the_limit_wait_for_a_connection() -> None:
    finish = asyncio.Event()

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        while await read_request(reader, seen) is not None:
            writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\n{")
            await finish.wait()  # the first answer stays unfinished until the test says
            writer.write(b"}")

    async with raw_engine(handler) as (url, seen):
        client = client_for(url, limit=1)
        first = await client.post("/v1/responses", b"{}", JSON_HEADERS)
        waiting = asyncio.ensure_future(client.post("/v1/responses", b"{}", JSON_HEADERS))
        await asyncio.sleep(0.1)
        assert not waiting.done() and len(seen.requests) == 1
        finish.set()
        assert await first.read() == b"{}"
        second = await asyncio.wait_for(waiting, 2)
        assert second.status == 200
        second.release()
        await client.close()
    assert seen.connections == 1


async def test_an_unreachable_engine_is_a_client_error() -> None:
    client = client_for("http://127.0.0.1:9")
    with pytest.raises(aiohttp.ClientOSError):
        await client.post("/v1/responses", b"{}", JSON_HEADERS)


@pytest.mark.parametrize(
    ("url", "lean"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://engine:8000/prefix/v1", True),
        ("http://[::1]:8000", True),
        ("https://engine", False),
        ("http://user:secret@engine:8000", False),
        ("http://engine/a%20b", False),
        ("http://engine/?x=1", False),
    ],
)
def test_engines_the_lean_client_does_not_serve_keep_the_aiohttp_session(url: str, lean: bool) -> None:
    assert (EngineClient.for_url(url, connect_timeout=1, read_timeout=1) is not None) == lean


async def test_the_aiohttp_session_still_serves_an_engine_with_credentials_in_its_url(
    make_sidecar: SidecarFactory,
) -> None:
    engine = TestServer(create_fake_engine())
    await engine.start_server()
    try:
        url = engine.make_url("").with_user("user").with_password("secret")
        sidecar = await make_sidecar(redis_url="memory://", upstream=str(url).rstrip("/"))
        for stream in (False, True):
            response = await sidecar.post(
                "/v1/responses", json={"model": "m", "input": "hi", "stream": stream}
            )
            assert response.status == 200, await response.text()
            await response.read()
        sent = recorded(engine.app, "/v1/responses")
        assert len(sent) == 2
        basic = "Basic " + base64.b64encode(b"user:secret").decode()
        assert all(r["headers"].get("Authorization") == basic for r in sent)
    finally:
        await engine.close()
