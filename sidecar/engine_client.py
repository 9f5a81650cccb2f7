"""A lean HTTP/1.1 keep-alive client for the hot path's POSTs to the one engine: a pool of asyncio
connections, each request one write, each answer parsed by httptools.

aiohttp's client costs a good part of the sidecar's CPU per turn (request objects, URL handling, connector
bookkeeping, a task per request body); an engine at one plain-http address needs none of it. Anything else
(https, credentials in the URL) keeps the aiohttp session (`EngineClient.for_url` says None). Failures are
aiohttp's own exception types, so the relays and the 502/504 mapping in upstream.py do not tell the two apart.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping
from typing import cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .engine_response import EngineBody, EngineResponse

# Idle connections older than this are closed instead of reused (aiohttp's keepalive_timeout for the engine).
IDLE_SECONDS = 60.0
# A base path the request target can carry as it is: anything fancier goes through aiohttp's URL handling.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._~/-]*")


class _StaleConnection(Exception):
    """A reused connection closed before any byte of the answer came back."""


class EngineClient:
    """Keep-alive connections to one `http://host:port[/prefix]`, at most `limit` of them in use at once."""

    def __init__(
        self, url: URL, *, connect_timeout: float | None, read_timeout: float | None, limit: int = 512
    ) -> None:
        assert url.host is not None
        self.host = url.host
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == 80 else f"{host}:{self.port}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: deque[_Connection] = deque()  # most recently used last
        self._slots = asyncio.Semaphore(limit)
        self._sweep_timer: asyncio.TimerHandle | None = None

    @classmethod
    def for_url(
        cls, base_url: str, *, connect_timeout: float | None, read_timeout: float | None, limit: int = 512
    ) -> EngineClient | None:
        """A client for a plain `http://host[:port][/path]` engine; None for anything that needs aiohttp."""
        url = URL(base_url)
        if url.scheme != "http" or not url.host or url.user or url.password or url.query_string:
            return None
        if url.fragment or not _PLAIN_PATH.fullmatch(url.raw_path):
            return None
        return cls(url, connect_timeout=connect_timeout, read_timeout=read_timeout, limit=limit)

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> EngineResponse:
        """Send the request, return the answer once its headers are in; the caller reads and releases it."""
        request = self._request(path, body, headers)
        # A connection in an exchange owns one slot, and frees it however the exchange ends.
        await self._slots.acquire()
        connection = self._pooled()
        if connection is not None:
            try:
                return await connection.exchange(request)
            except _StaleConnection:
                # It closed before a byte of the answer: the engine dropped it while idle, as it may at any
                # time, most likely before the request arrived. Once more on a fresh connection, as aiohttp
                # does; never after a byte of an answer or a timeout, when the engine may be generating.
                await self._slots.acquire()
        try:
            connection = await self._connect()
        except BaseException:
            self._slots.release()
            raise
        try:
            return await connection.exchange(request)
        except _StaleConnection:  # only a reused connection goes stale
            raise aiohttp.ServerDisconnectedError() from None

    def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\nAccept: */*\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"Newline or carriage return in the value of header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return "".join(lines).encode("utf-8") + body

    def _pooled(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to {self.host_header}") from None
        except OSError as exc:
            raise aiohttp.ClientOSError(exc.errno, exc.strerror or str(exc)) from None
        return connection

    def checkin(self, connection: _Connection) -> None:
        """A connection whose answer has fully arrived, kept alive: back to the pool."""
        now = connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)
        self._slots.release()
        # The least recently used are reused last (LIFO keeps few connections warm): age them out here, and
        # on a timer when the traffic stops (an engine need not close idle connections itself).
        self._close_aged(now)
        if self._sweep_timer is None:
            self._sweep_timer = asyncio.get_running_loop().call_at(now + IDLE_SECONDS, self._sweep)

    def _close_aged(self, now: float) -> None:
        while self._idle and now - self._idle[0].idle_since >= IDLE_SECONDS:
            self._idle.popleft().close()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._close_aged(now)
        self._sweep_timer = None
        if self._idle:  # a timer may fire a little early: never re-armed for at once
            when = max(self._idle[0].idle_since + IDLE_SECONDS, now + 0.05)
            self._sweep_timer = loop.call_at(when, self._sweep)

    def discard(self) -> None:
        """A connection in use will not be reused (it has closed, or is closing)."""
        self._slots.release()

    async def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class _Connection(asyncio.Protocol):
    """One connection to the engine, answering one request at a time. In use from `exchange` until its
    answer has fully arrived (then back to the pool if keep-alive) or it closes (then its slot is freed)."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self._answered = 0  # answers completed on this connection: a reused one may have gone stale
        self._in_use = False
        self._waiter: asyncio.Future[EngineResponse] | None = None  # until the answer's headers are in
        self._body: EngineBody | None = None  # from the headers until the answer has fully arrived
        self._received = False  # any byte of the current answer
        self._status_reason = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._until_close = True  # no Content-Length, not chunked: the body ends when the engine closes
        self._complete = False
        self._keep_alive = False
        self._broken = False  # bytes beyond the answer, or a parse error: never reused
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing() and not self._broken

    async def exchange(self, request: bytes) -> EngineResponse:
        if self._transport is None:  # the engine closed it between the connect and now: its slot goes back
            self._client.discard()
            raise aiohttp.ServerDisconnectedError()
        self._in_use, self._received, self._complete = True, False, False
        self._raw_headers, self._until_close = [], True
        waiter: asyncio.Future[EngineResponse] = self._loop.create_future()
        self._waiter = waiter
        self._transport.write(request)
        self._last_read = self._loop.time()
        self._arm()
        try:
            return await waiter
        except BaseException:
            self.close()  # cancelled, timed out, or failed: the engine may still be answering
            raise

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the base class

    def data_received(self, data: bytes) -> None:
        if not self._in_use:  # an idle connection the engine talks on is out of step: never reuse it
            self.close()
            return
        self._received = True
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken = True
            if not self._complete:  # garbage after a whole answer spoils the connection, not the answer
                self._fail(self._garbage(exc))
                return
        if self._complete:
            self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        self._disarm()
        body = self._body
        if self._waiter is not None and not self._waiter.done():
            stale = self._answered > 0 and not self._received
            self._waiter.set_exception(_StaleConnection() if stale else aiohttp.ServerDisconnectedError())
        elif body is not None and not self._complete:
            if self._until_close:
                body.feed_eof()
            else:
                body.set_exception(aiohttp.ClientPayloadError("Response payload is not completed"))
        self._body = None
        if self._in_use:
            self._in_use = False
            self._client.discard()

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._status_reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:  # the answer's headers are handed over: a second answer's are not its own
            return
        self._raw_headers.append((name, value))
        if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self._until_close = False

    def on_headers_complete(self) -> None:
        if self._complete:  # a second answer to one request
            self._broken = True
            return
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._raw_headers, self._status_reason, self._until_close = [], b"", True
            return
        body = self._body = EngineBody(self)
        reason = self._status_reason.decode("latin-1")
        self._status_reason = b""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(EngineResponse(status, reason, self._raw_headers, body))

    def on_body(self, data: bytes) -> None:
        if self._body is not None and not self._complete:
            self._body.feed(data)

    def on_message_complete(self) -> None:
        if self._body is None or self._complete:  # the end of an interim answer, or of a second one
            return
        self._complete = True
        # Asked here: once feed_data returns, llhttp has reset its flags for the next message.
        self._keep_alive = self._parser.should_keep_alive()

    def _settle(self) -> None:
        """The answer has fully arrived: its body ends, the connection goes back or closes."""
        self._disarm()
        body, self._body = self._body, None
        if body is not None:
            body.feed_eof()
        self._answered += 1
        self._in_use = False
        if self._paused:  # the last bytes came with the ones that paused reading: the body is whole now
            self.resume()
        if self.usable and self._keep_alive:
            self._client.checkin(self)
        else:
            self._client.discard()
            self.close()

    # BodyFlow: back-pressure and giving up, from the answer's body

    def pause(self) -> None:
        if self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()
            self._disarm()  # the engine is not silent, the reader is slow: no read timeout while paused

    def resume(self) -> None:
        if self._transport is not None and self._paused:
            self._paused = False
            self._transport.resume_reading()
            if self._in_use:
                self._last_read = self._loop.time()
                self._arm()

    def drop(self) -> None:
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # connection_lost follows, and frees the slot

    # read timeout: the longest the engine may stay silent (aiohttp's sock_read)

    def _arm(self) -> None:
        timeout = self._client.read_timeout
        if timeout is not None and self._timer is None:
            self._timer = self._loop.call_at(self._last_read + timeout, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        # Re-armed from the last read rather than rescheduled on every chunk: one timer per silence.
        self._timer = None
        timeout = self._client.read_timeout
        assert timeout is not None
        if self._loop.time() - self._last_read < timeout:
            self._arm()
            return
        self._fail(aiohttp.SocketTimeoutError(f"Timeout on reading data from socket after {timeout}s"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        elif self._body is not None:
            self._body.set_exception(exc)
        self._body = None
        self.close()

    def _garbage(self, exc: httptools.HttpParserError) -> aiohttp.ClientError:
        if self._waiter is not None and not self._waiter.done():  # before the answer's headers
            url = URL.build(scheme="http", host=self._client.host, port=self._client.port)
            info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
            return aiohttp.ClientResponseError(info, (), status=400, message=f"Invalid answer: {exc}")
        return aiohttp.ClientPayloadError(f"Response payload is not valid: {exc}")
