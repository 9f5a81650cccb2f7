"""The lean engine client against an engine that misbehaves on a real socket: silent before or during its
answer (the read timeout), a body cut short, garbage instead of HTTP, a reader slower than the engine
(back-pressure), and a stream cut by the drain. Failures are aiohttp's exception types, as upstream.py and
the relays expect, and a connection that failed is never reused."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from sidecar.engine_response import PAUSE_ABOVE
from tests.integration.engine_servers import OK_HEAD, Seen, answer, client_for, raw_engine, read_request

HEADERS = {"Content-Type": "application/json"}
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
TIMEOUT = 0.2


def _first_then(misbehaviour: bytes, *, stall: bool = False) -> object:
    """Connection 1 gets `misbehaviour` for its first request (then silence, or the close); any later
    connection a good answer (which shows the failed one was not reused)."""

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        while await read_request(reader, seen) is not None:
            if n > 1:
                writer.write(answer(b"{}"))
                continue
            writer.write(misbehaviour)
            await writer.drain()
            if stall:
                await asyncio.sleep(10)
            return

    return handler


@pytest.mark.parametrize(
    ("sent", "stall", "expected"),
    [
        (b"", True, aiohttp.SocketTimeoutError),
        (b"HTTP/1.1 200 OK\r\n", True, aiohttp.SocketTimeoutError),
        (b"HTTP/1.1 200 OK\r\nContent-Le", False, aiohttp.ServerDisconnectedError),
        (b"I am not HTTP\r\n\r\n", False, aiohttp.ClientResponseError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", False, aiohttp.ClientResponseError),
    ],
    ids=["silent", "silent-after-status", "cut-in-headers", "garbage", "bad-length"],
)
async def test_an_answer_that_fails_before_its_headers_raises_and_its_connection_goes(
    sent: bytes, stall: bool, expected: type[Exception]
) -> None:
    async with raw_engine(_first_then(sent, stall=stall)) as (url, seen):  # type: ignore[arg-type]
        client = client_for(url, read_timeout=TIMEOUT)
        started = time.monotonic()
        with pytest.raises(expected):
            await client.post("/v1/responses", b"{}", HEADERS)
        assert time.monotonic() - started < 2
        async with await client.post("/v1/responses", b"{}", HEADERS) as response:
            assert await response.read() == b"{}"
        await client.close()
    assert (seen.connections, len(seen.requests)) == (2, 2)  # no retry of a request the engine had


def _cut_json() -> bytes:
    return OK_HEAD + b"Content-Length: 100\r\n\r\n" + b'{"partial": '


@pytest.mark.parametrize(
    ("sent", "stall", "expected"),
    [
        (CHUNKED_HEAD + b"6\r\ndata: \r\n", True, aiohttp.SocketTimeoutError),
        (_cut_json(), True, aiohttp.SocketTimeoutError),
        (_cut_json(), False, aiohttp.ClientPayloadError),
        (CHUNKED_HEAD + b"6\r\ndata: \r\n", False, aiohttp.ClientPayloadError),
        (CHUNKED_HEAD + b"6\r\ndata: \r\nzz\r\n", False, aiohttp.ClientPayloadError),
    ],
    ids=["silent-chunked", "silent-length", "cut-length", "cut-chunked", "garbage-chunk"],
)
async def test_a_body_that_fails_midway_raises_from_its_reads_and_its_connection_goes(
    sent: bytes, stall: bool, expected: type[Exception]
) -> None:
    async with raw_engine(_first_then(sent, stall=stall)) as (url, seen):  # type: ignore[arg-type]
        client = client_for(url, read_timeout=TIMEOUT)
        response = await client.post("/v1/responses", b"{}", HEADERS)
        assert response.status == 200
        received = b""
        with pytest.raises(expected):
            async for chunk in response.content.iter_any():
                received += chunk
        # What came before the failure, unless it came with it (then, as on aiohttp, the error comes first).
        assert received in (b"data: ", b'{"partial": ', b"")
        response.release()
        async with await client.post("/v1/responses", b"{}", HEADERS) as again:
            assert await again.read() == b"{}"
        await client.close()
    assert seen.connections == 2


@pytest.mark.parametrize(
    "extra", [b"garbage\r\n\r\n", answer(b'"unasked"')], ids=["garbage", "a-second-answer"]
)
async def test_bytes_after_a_whole_answer_leave_it_whole_and_the_connection_unused(extra: bytes) -> None:
    async with raw_engine(_first_then(answer(b'"asked"') + extra, stall=True)) as (url, seen):  # type: ignore[arg-type]
        client = client_for(url)
        async with await client.post("/v1/responses", b"{}", HEADERS) as response:
            assert await response.read() == b'"asked"'
            assert "Content-Length: 7" in [f"{k}: {v}" for k, v in response.headers.items()]
            assert len(response.headers) == 2
        async with await client.post("/v1/responses", b"{}", HEADERS) as again:
            assert await again.read() == b"{}"
        await client.close()
    assert seen.connections == 2


async def test_an_interim_answer_is_skipped() -> None:
    sent = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer(b'"final"')
    async with raw_engine(_first_then(sent, stall=True)) as (url, _):  # type: ignore[arg-type]
        client = client_for(url)
        async with await client.post("/v1/responses", b"{}", HEADERS) as response:
            assert response.status == 200 and "Link" not in response.headers
            assert await response.read() == b'"final"'
        await client.close()


async def test_a_slow_reader_pauses_the_engine_and_the_pause_is_no_timeout() -> None:
    size = 32 * 2**20  # more than loopback's socket buffers hold, so the engine must wait for the reader
    block = b"x" * 2**16

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        await read_request(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()

    async with raw_engine(handler) as (url, _):
        client = client_for(url, read_timeout=TIMEOUT)
        response = await client.post("/v1/responses", b"{}", HEADERS)
        body = response.content
        await asyncio.sleep(3 * TIMEOUT)  # a reader busy elsewhere, for longer than the read timeout
        assert body.buffered < PAUSE_ABOVE + 2**20  # what had arrived when reading paused, no more
        total = 0
        while chunk := await body.readany():
            total += len(chunk)
            assert body.buffered < PAUSE_ABOVE + 2**20
        assert total == size
        await client.close()


async def test_a_connection_paused_by_the_last_bytes_of_its_answer_goes_back_reading() -> None:
    big = b"x" * (PAUSE_ABOVE + 2**14)  # over the pause mark, likely in one read with its end

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        while await read_request(reader, seen) is not None:
            writer.write(answer(big))

    async with raw_engine(handler) as (url, seen):
        client = client_for(url, read_timeout=TIMEOUT)
        for _ in range(3):
            response = await client.post("/v1/responses", b"{}", HEADERS)
            await asyncio.sleep(0.05)  # all of it has arrived, unread
            assert await response.read() == big
        await client.close()
    assert seen.connections == 1


async def test_a_cut_stream_raises_its_exception_from_every_read_and_closes_on_release() -> None:
    class Cut(Exception):
        pass

    closed = asyncio.Event()

    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        await read_request(reader, seen)
        writer.write(CHUNKED_HEAD + b"6\r\ndata: \r\n")
        await writer.drain()
        await reader.read()  # until the client closes: the engine would stop generating here
        closed.set()

    async with raw_engine(handler) as (url, _):
        client = client_for(url)
        response = await client.post("/v1/responses", b"{}", HEADERS)
        while not response.content.buffered:
            await asyncio.sleep(0.01)
        response.content.set_exception(Cut())  # as drain.py does at its deadline
        with pytest.raises(Cut):  # buffered data or not
            await response.content.readany()
        response.close()
        await asyncio.wait_for(closed.wait(), 2)
        await client.close()


async def test_a_connection_the_engine_closes_before_the_request_is_a_disconnect_and_frees_its_slot() -> None:
    async def handler(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        if n > 1:
            while await read_request(reader, seen) is not None:
                writer.write(answer(b"{}"))

    async with raw_engine(handler) as (url, seen):
        client = client_for(url, limit=1)
        await client._slots.acquire()  # as post() does before it connects
        connection = await client._connect()
        connection.close()  # as if the engine had: closed before a byte of the request went out
        await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await connection.exchange(b"POST /v1/responses HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        async with asyncio.timeout(2):  # the one slot is free again: the next call is served
            async with await client.post("/v1/responses", b"{}", HEADERS) as engine:
                assert await engine.read() == b"{}"
        assert seen.connections == 2  # the closed one was not used again
        await client.close()
