"""A lean pipelined RESP client for the store's hot path on standalone Redis.

redis-py spends ~100 µs of CPU per EVALSHA (pool checkout, retry wrapper, argument encoding, timeout
wrapper); this sends pre-packed commands (hiredis.pack_command) on a few long-lived connections, lets
concurrent requests share them (replies come back in order, matched FIFO) and parses with hiredis.
Redis Cluster keeps redis-py's client, which owns slot routing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import ssl
import time
from typing import Any, cast

import hiredis
from redis.connection import SSLConnection, parse_url

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0  # a reply older than this means Redis hangs: the connection is dropped
# Redis runs commands one at a time whatever the connection count, and one connection lets the commands
# of concurrent requests leave in one write per loop tick (fewer syscalls under load).
POOL_SIZE = 1


class RedisUnavailable(ConnectionError):
    """The connection failed, closed, or Redis stopped answering."""


class RedisReplyError(Exception):
    """Redis answered with an error reply."""


class RedisAuthFailed(RedisUnavailable):
    """Redis refused our credentials (NOAUTH, WRONGPASS): to the sidecar, a store it cannot use, like one
    that is down, not a failed command."""


_AUTH_REPLIES = ("NOAUTH", "WRONGPASS")
# A large command before AUTH is refused as a protocol error (Redis ≥ 6.2), and the connection closed.
_UNAUTHENTICATED_PROTOCOL_ERROR = "ERR Protocol error: unauthenticated"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            future, _ = self._waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                auth = message.startswith(_AUTH_REPLIES) or message.startswith(
                    _UNAUTHENTICATED_PROTOCOL_ERROR
                )
                future.set_exception(RedisAuthFailed(message) if auth else RedisReplyError(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(RedisUnavailable(f"connection to Redis lost: {exc or 'closed'}"))

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        if self.closed or self.transport is None:
            raise RedisUnavailable("connection to Redis is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, time.monotonic()))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(payload)
        return future

    def _flush(self) -> None:
        """Everything sent during one loop tick goes out in one write."""
        payload = b"".join(self._outgoing)
        self._outgoing.clear()
        if self.transport is not None and not self.closed:
            self.transport.write(payload)

    def stalled(self, now: float) -> bool:
        return bool(self._waiting) and now - self._waiting[0][1] > REPLY_TIMEOUT

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    def __init__(self, url: str, pool_size: int = POOL_SIZE) -> None:
        self._params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._slots: list[_Connection | None] = [None] * pool_size
        self._locks = [asyncio.Lock() for _ in range(pool_size)]
        self._next = itertools.cycle(range(pool_size))
        self._watchdog: asyncio.Task[None] | None = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        params = self._params
        try:
            if "path" in params:
                connect = loop.create_unix_connection(_Connection, params["path"])
            else:
                context = _tls_context(params) if params.get("connection_class") is SSLConnection else None
                connect = loop.create_connection(
                    _Connection, params["host"], params.get("port", 6379), ssl=context
                )
            _, conn = await asyncio.wait_for(connect, CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            raise RedisUnavailable(f"cannot connect to Redis: {exc}") from exc
        handshake = []
        if params.get("password"):
            auth = (
                [params["username"], params["password"]] if params.get("username") else [params["password"]]
            )
            handshake.append(conn.send(_pack("AUTH", *auth)))
        if params.get("db"):
            handshake.append(conn.send(_pack("SELECT", params["db"])))
        try:
            # Every reply is collected, so none is left failing unobserved when the first one fails.
            replies = await asyncio.gather(*handshake, return_exceptions=True)
        except BaseException:
            conn.close()
            raise
        failure = next((reply for reply in replies if isinstance(reply, BaseException)), None)
        if failure is not None:  # WRONGPASS, an older Redis's "ERR invalid password", a bad db number
            conn.close()
            if isinstance(failure, RedisUnavailable):
                raise failure
            raise RedisUnavailable(f"Redis refused the connection: {failure}") from failure
        return conn

    async def _connection(self) -> _Connection:
        index = next(self._next)
        conn = self._slots[index]
        if conn is not None and not conn.closed:
            return conn
        async with self._locks[index]:  # one reconnect per slot, however many requests wait on it
            conn = self._slots[index]
            if conn is None or conn.closed:
                conn = self._slots[index] = await self._open()
                if self._watchdog is None:
                    self._watchdog = asyncio.create_task(self._watch())
            return conn

    async def execute(self, *args: Any) -> Any:
        conn = await self._connection()
        return await conn.send(_pack(*args))

    async def execute_and_wait(
        self, args: tuple[Any, ...], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """A command, then WAIT on the same connection (WAIT covers that connection's earlier writes):
        its reply and how many replicas acknowledged it."""
        conn = await self._connection()
        replies: tuple[Any, Any] = await asyncio.gather(
            conn.send(_pack(*args)), conn.send(_pack("WAIT", replicas, timeout_ms)), return_exceptions=True
        )
        reply, acked = replies
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(acked, BaseException):
            raise acked
        return reply, int(acked)

    # The surface RedisStore uses, shared with redis-py's clients (RedisCluster keeps redis-py).
    def register_script(self, source: str) -> PipelinedScript:
        return PipelinedScript(self, source)

    async def get(self, key: str) -> Any:
        return await self.execute("GET", key)

    async def exists(self, key: str) -> int:
        return int(await self.execute("EXISTS", key))

    async def hgetall(self, key: str) -> list[Any]:
        """Field, value, field, value… (redis-py's cluster client answers a dict; callers take both)."""
        reply: list[Any] = await self.execute("HGETALL", key)
        return reply

    async def ping(self) -> Any:
        return await self.execute("PING")

    async def info(self, section: str) -> dict[str, Any]:
        raw = await self.execute("INFO", section)
        pairs = (line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)
        return {k: int(v) if v.isdigit() else v for k, v in pairs}

    async def _watch(self) -> None:
        """Drops connections whose oldest reply is overdue, failing what waits on them."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in self._slots:
                if conn is not None and conn.stalled(now):
                    conn.close()

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for conn in self._slots:
            if conn is not None:
                conn.close()


def _tls_context(params: dict[str, Any]) -> ssl.SSLContext:
    """rediss:// with redis-py's URL options: ssl_ca_certs, ssl_certfile/ssl_keyfile (client certificate),
    ssl_cert_reqs=none|optional|required, ssl_check_hostname."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    if params.get("ssl_check_hostname") is False:
        context.check_hostname = False
    requirement = str(params.get("ssl_cert_reqs") or "required").lower()
    if requirement == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif requirement == "optional":
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _pack(*args: Any) -> bytes:
    packed: bytes = hiredis.pack_command(args)
    return packed


class PipelinedScript:
    """EVALSHA with the NOSCRIPT fallback in one place (the script is loaded again after a Redis restart)."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._client.execute("EVALSHA", self._sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._client.execute("SCRIPT", "LOAD", self._source)
        return await self._client.execute("EVALSHA", self._sha, len(keys), *keys, *args)

    async def call_and_wait(
        self, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """The script, then WAIT for `replicas` to have its writes: its reply, replicas that acknowledged."""
        command = ("EVALSHA", self._sha, len(keys), *keys, *args)
        try:
            return await self._client.execute_and_wait(command, replicas, timeout_ms)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._client.execute("SCRIPT", "LOAD", self._source)
        return await self._client.execute_and_wait(command, replicas, timeout_ms)
