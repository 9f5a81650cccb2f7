"""Graceful drain: on SIGTERM readiness fails, the listener closes, in-flight work gets a deadline, and
streams still running at it are cut (an error event to the client, the turn stored `incomplete`).

docs/api.md §1. The order matters: `Drain.run` does it all before aiohttp's own shutdown starts, so
aiohttp only ever finds finished handlers (or stragglers it cancels, whose relays still store their turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .errors import ShuttingDown
from .protocol_errors import JSONErrorAppRunner
from .upstream import EngineAnswer

log = logging.getLogger("convostore.drain")

# What a cut stream's client is told; the stored response says `incomplete`.
CUT_MESSAGE = "The sidecar is shutting down: the response stopped early and is stored as incomplete."
CUT_CODE = "server_shutting_down"
# After the deadline: how long cut streams get to store their turn and write their last event, how long
# aiohttp then waits for anything else before cancelling it, and how long cancelled handlers get to store
# what they have before the store closes.
CUT_GRACE_SECONDS = 5.0
CANCEL_AFTER_SECONDS = 1.0
STORE_GRACE_SECONDS = 5.0


class StreamCut(Exception):
    """Raised from an engine stream's reads once the drain deadline has passed."""


class Drain:
    """Counts in-flight requests, knows the engine streams being relayed, and runs the drain."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False
        self.cut = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._streams: set[EngineAnswer] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def track(self, engine: EngineAnswer) -> None:
        """A relay is passing this engine stream on: at the deadline its reads raise StreamCut."""
        if self.cut:
            engine.content.set_exception(StreamCut())
        self._streams.add(engine)

    def untrack(self, engine: EngineAnswer) -> None:
        self._streams.discard(engine)

    async def run(self, stop_listening: Callable[[], Awaitable[None]], hurry: asyncio.Event) -> None:
        """Fail readiness, stop accepting, wait for in-flight work until the deadline (or a second
        signal, `hurry`), then cut the streams still running and give them a moment to store."""
        self.draining = True
        log.warning("draining: %d requests in flight, up to %gs to finish", self._in_flight, self.seconds)
        await stop_listening()
        if not await self._settled(self.seconds, hurry):
            self.cut = True
            log.warning("drain deadline: cutting %d streams", len(self._streams))
            for engine in self._streams:
                engine.content.set_exception(StreamCut())
            await self._settled(CUT_GRACE_SECONDS)
        log.info("drained: %d requests still in flight", self._in_flight)

    async def _settled(self, seconds: float, hurry: asyncio.Event | None = None) -> bool:
        waits = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waits.append(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return self._idle.is_set()

    def enter(self) -> None:
        """A request starts (request_context calls this and `leave` around every handler: plain calls, not
        a middleware layer of their own); once streams were cut, a request that still arrives on a
        kept-alive connection is refused rather than started."""
        if self.cut:
            raise ShuttingDown("The sidecar is shutting down; retry on another replica.")
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # While draining, kept-alive connections close after their current answer: clients reconnect,
        # and reach a replica that is not going away.
        if self.draining:
            response.force_close()

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        """Last of the app's cleanup contexts, so first to exit: handlers that aiohttp cancelled store
        what they have before the store and the engine session close."""
        yield
        if self._in_flight:
            await self._settled(STORE_GRACE_SECONDS)


DRAIN: web.AppKey[Drain] = web.AppKey("drain")


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    keepalive_timeout: float,
    on_listening: Callable[[], None],
    reuse_port: bool = False,
) -> None:
    """Run `app` until SIGTERM or SIGINT, then drain it and shut it down; returns when all is closed.
    `reuse_port`: share the port with the other workers (SO_REUSEPORT, sidecar/workers.py)."""
    runner = JSONErrorAppRunner(
        app,
        handle_signals=False,
        access_log=None,  # access logging on the hot path costs more than the proxy itself
        # Idle connections, and the headers of each request, get this long (aiohttp closes a connection
        # whose request has not fully arrived when it runs out); bodies get it again in the handlers.
        keepalive_timeout=keepalive_timeout,
        shutdown_timeout=CANCEL_AFTER_SECONDS,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        on_listening()
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, signalled.set)
        await signalled.wait()
        signalled.clear()  # a second signal cuts the drain short
        await app[DRAIN].run(site.stop, signalled)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for signum in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().remove_signal_handler(signum)
        await runner.cleanup()
