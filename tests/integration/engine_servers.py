"""Engines on real sockets for the engine client's tests: a raw asyncio server whose handler sees each
connection's bytes (to misbehave precisely), and a log of the connections and requests it saw."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.engine_client import EngineClient

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@dataclass
class Seen:
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)  # each request's head and body, as it arrived


Handler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter, Seen], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader, seen: Seen) -> bytes | None:
    """One request (head and Content-Length body), or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    request = head + await reader.readexactly(length)
    seen.requests.append(request)
    return request


def answer(body: bytes, *, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return OK_HEAD + connection + b"Content-Length: %d\r\n\r\n" % len(body) + body


@contextlib.asynccontextmanager
async def raw_engine(handler: Handler) -> AsyncIterator[tuple[str, Seen]]:
    """An engine at the yielded base URL; `handler(n, reader, writer, seen)` runs its n-th connection."""
    seen = Seen()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(seen.connections, reader, writer, seen)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await server.wait_closed()


def client_for(url: str, *, read_timeout: float | None = 5.0, limit: int = 512) -> EngineClient:
    client = EngineClient.for_url(url, connect_timeout=2.0, read_timeout=read_timeout, limit=limit)
    assert client is not None
    return client
