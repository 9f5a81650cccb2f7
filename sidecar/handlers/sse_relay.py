"""Relays an engine's event stream to the client as repaired Responses events, capturing the turn.

Each engine chunk's events are translated and written, in one write, as soon as the chunk arrives. The
turn is stored when the terminal event passes; if the engine fails first (an error event, a cut stream,
an event of the wrong shape, anything that raises) it ends with `response.failed` and is stored `failed`;
if the client leaves first the engine request is cancelled and it is stored `incomplete`; if the sidecar's
drain deadline passes first (docs/api.md §1) it ends with an `error` event and is stored `incomplete`.
Where the events go is an EventSink: an SSE body here, a WebSocket's messages in ws_session.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ..drain import CUT_CODE, CUT_MESSAGE, DRAIN, StreamCut
from ..turns import save_quietly
from ..upstream import EngineAnswer, failure_reason
from ..wire import events as ev
from ..wire.events import error_event
from ..wire.sse import SSEDecoder, encode_events
from ..wire.translator import StreamTranslator, translate_messages
from .engine_answer import require_event_stream, settle_departed_client

log = logging.getLogger("convostore.stream")


class ClientGone(Exception):
    """The client's connection broke while the relay wrote to it."""


class EventSink(Protocol):
    """Where a relay's events go. A write to a client that has gone raises ConnectionResetError or
    RuntimeError; `response` is what the handler returns."""

    @property
    def response(self) -> web.StreamResponse: ...

    async def open(self) -> None: ...

    async def write(self, events: list[dict[str, Any]]) -> None: ...

    async def write_last(self, events: list[dict[str, Any]]) -> None:
        """The batch that ends with the terminal event: nothing follows it."""
        ...

    async def close(self) -> None:
        """After the relay, whatever happened (quietly: the client may be gone)."""
        ...


class EventStreamResponse(web.StreamResponse):
    """A `text/event-stream` response. Its headers (the stateful ones included) go out at `prepare()`,
    before the engine's first event: a client learns the response id even during a long prefill."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )


class SSESink:
    """The events as a `text/event-stream` body."""

    def __init__(self, request: web.Request, headers: dict[str, str]) -> None:
        self._request = request
        self._response = EventStreamResponse(headers)

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def open(self) -> None:
        await self._response.prepare(self._request)

    async def write(self, events: list[dict[str, Any]]) -> None:
        await self._response.write(encode_events(events))

    async def write_last(self, events: list[dict[str, Any]]) -> None:
        # Nothing can follow a terminal event: it and the end of the body go out in one write.
        await self._response.write_eof(encode_events(events))

    async def close(self) -> None:
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await self._response.write_eof()


async def relay_stream(
    request: web.Request,
    engine: EngineAnswer,
    translator: StreamTranslator,
    sink: EventSink,
    save: Callable[[dict[str, Any]], Awaitable[Any]],
) -> None:
    await require_event_stream(engine)
    await sink.open()
    drain = request.app[DRAIN]
    drain.track(engine)

    saved = False

    async def send(events: list[dict[str, Any]]) -> None:
        nonlocal saved
        if not events:
            return
        try:
            if translator.status is None:
                await sink.write(events)
                return
            if not saved and translator.final_response is not None:
                # Store before the terminal event (always the batch's last) goes out: a client that chains
                # the moment it sees `response.completed` must find the turn. What precedes it need not wait.
                if len(events) > 1:
                    await sink.write(events[:-1])
                    events = events[-1:]
                saved = True
                unstored = await asyncio.shield(save_quietly(save, translator.final_response))
                if unstored is not None:
                    events = [ev.unstored(events[-1], unstored)]
            await sink.write_last(events)
        except (ConnectionResetError, RuntimeError) as exc:
            raise ClientGone from exc

    final: dict[str, Any] | None = None
    try:
        try:
            await _pump(engine, translator, send)
        except StreamCut:
            engine.close()  # the engine stops generating for a client that gets no more of it
            translator.incomplete("max_output_tokens")  # what was streamed, stored with the error event
            await send([error_event(CUT_MESSAGE, CUT_CODE)])
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("engine stream failed: %s", failure_reason(exc))
            await send(
                translator.fail(f"The engine failed mid-stream: {failure_reason(exc)}.", "server_error")
            )
        except ClientGone:
            raise
        except Exception:
            # The headers are out: whatever went wrong, the client gets a well-formed end, and the turn is
            # stored failed, never a 500 written into the middle of the body.
            log.exception("relaying the engine's stream failed")
            await send(translator.fail("The sidecar could not relay the engine's stream.", "server_error"))
        final = translator.final_response
    except (ClientGone, asyncio.CancelledError) as exc:
        await settle_departed_client(engine, translator, save, saved=saved)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    finally:
        drain.untrack(engine)
        engine.release()
    if final is not None and not saved:
        await asyncio.shield(save_quietly(save, final))
    await sink.close()


async def _pump(
    engine: EngineAnswer,
    translator: StreamTranslator,
    send: Callable[[list[dict[str, Any]]], Awaitable[None]],
) -> None:
    """Engine events in, repaired events out, until the stream ends (then `end` closes it) or a terminal
    event has gone out."""
    decoder = SSEDecoder()
    async for chunk in engine.content.iter_any():
        # One write per engine chunk, not per event: the client gets the chunk's events together, at once.
        await send(translate_messages(decoder.feed(chunk), translator))
        if translator.status is not None:
            return
    events = translate_messages(decoder.flush(), translator)  # a last event the engine left unterminated
    await send(events + translator.end(done=False))
