"""The engine's answer as the lean engine client hands it over: status, headers, and a body read whole or
as it arrives, with back-pressure on the engine's connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

# Above this many unread body bytes the engine's socket stops being read (aiohttp pauses at twice 64 KiB too);
# reading resumes once the consumer has taken what is buffered.
PAUSE_ABOVE = 2**17


class BodyFlow(Protocol):
    """What a body asks of the connection it arrives on."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def drop(self) -> None:
        """The consumer gave up on the answer: the connection closes (the engine stops generating)."""
        ...


class EngineBody:
    """The answer's body: chunks as parsed, read whole or as they come. `set_exception` makes every read from
    then on raise it, buffered data or not (drain.py cuts a stream this way, as on aiohttp's StreamReader)."""

    __slots__ = ("_chunks", "_eof", "_exc", "_flow", "_paused", "_size", "_waiter")

    def __init__(self, flow: BodyFlow | None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._flow = flow  # None once the body has fully arrived
        self._paused = False

    @property
    def complete(self) -> bool:
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes that have arrived and not been read yet."""
        return self._size

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if self._size > PAUSE_ABOVE and not self._paused and self._flow is not None:
            self._paused = True
            self._flow.pause()

    def feed_eof(self) -> None:
        self._eof = True
        self._flow = None
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        self._exc = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def drop(self) -> None:
        """The reader stops here: an unfinished answer's connection closes."""
        if self._flow is not None and not self._eof:
            flow, self._flow = self._flow, None
            flow.drop()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readany(self) -> bytes:
        """What has arrived since the last read (waiting for something); b"" at the end."""
        while True:
            if self._exc is not None:
                raise self._exc
            if self._chunks:
                break
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            if self._flow is not None:
                self._flow.resume()
        return data

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def iter_any(self) -> AsyncIterator[bytes]:
        return _Chunks(self)


class _Chunks:
    """`async for chunk in body.iter_any()`: a plain iterator, not an async generator (nothing to finalise
    when a consumer breaks out early)."""

    __slots__ = ("_body",)

    def __init__(self, body: EngineBody) -> None:
        self._body = body

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._body.readany()
        if not chunk:
            raise StopAsyncIteration
        return chunk


class EngineResponse:
    """The surface of aiohttp's ClientResponse the relays use: `status`, `headers`, `content_type`, `content`
    (`iter_any`, `set_exception`), `read`, `release`, `close`, `async with`."""

    __slots__ = ("_headers", "_raw_headers", "content", "reason", "status")

    def __init__(
        self, status: int, reason: str, raw_headers: list[tuple[bytes, bytes]], body: EngineBody
    ) -> None:
        self.status = status
        self.reason = reason
        self._raw_headers = raw_headers
        self._headers: CIMultiDictProxy[str] | None = None
        self.content = body

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        # Built on first use: the hot path reads only the Content-Type.
        if self._headers is None:
            pairs = ((name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw_headers)
            self._headers = CIMultiDictProxy(CIMultiDict(pairs))
        return self._headers

    @property
    def content_type(self) -> str:
        """The media type, lower-cased; no Content-Type reads as application/octet-stream (RFC 9110 §8.3)."""
        for name, value in self._raw_headers:
            if len(name) == 12 and name.lower() == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
                return media.decode("latin-1") or "application/octet-stream"
        return "application/octet-stream"

    @property
    def ok(self) -> bool:
        return self.status < 400

    async def read(self) -> bytes:
        try:
            return await self.content.read()
        finally:
            self.content.drop()

    def release(self) -> None:
        """Done with the answer: a connection whose answer has not fully arrived cannot be reused."""
        self.content.drop()

    def close(self) -> None:
        self.content.drop()

    async def __aenter__(self) -> EngineResponse:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A relay that lost its answer unreleased (an exception between the call and its read) must not hold
        # the connection, and its slot in the pool, forever; aiohttp's ClientResponse does the same.
        with contextlib.suppress(RuntimeError):  # the loop may be gone already
            self.content.drop()
