"""`GET /v1/responses` upgraded to a WebSocket (WebSocket mode, docs/api.md): `response.create` messages run
one at a time, in the order they arrive, each like a streamed `POST /v1/responses`; a plain GET is the
engine's, as before.

Sequential, as the reference's WebSocket mode is: a `response.create` sent while one runs waits its turn (up
to QUEUED_CREATES of them). Other messages are answered at once: `response.steer` and unknown types with an
error message, the socket staying open. A client that closes mid-response cancels the engine request and the
response is stored `incomplete`, as over SSE. An idle socket is closed (1000, after
CONVOSTORE_WS_IDLE_SECONDS); a draining sidecar closes each socket once it has nothing to run (1012, service
restart: the SDK reconnects, to another replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..appkeys import CONFIG, METRICS
from ..drain import DRAIN
from ..errors import ConvoStoreError, InvalidRequest, ShuttingDown
from ..middleware import TENANT
from .common import parse_json_object
from .passthrough import passthrough
from .ws_session import Session, send_error

routes = web.RouteTableDef()
log = logging.getLogger("convostore.websocket")

QUEUED_CREATES = 16  # `response.create` messages waiting behind the running one; more are refused
DRAIN_CHECK_SECONDS = 0.5  # how soon an idle socket notices the sidecar is draining
# aiohttp's handshake refusals, by the start of their text, and the header each is about
_HANDSHAKE_HEADERS = (
    ("No WebSocket UPGRADE", "Upgrade"),
    ("No CONNECTION upgrade", "Connection"),
    ("Unsupported version", "Sec-WebSocket-Version"),
    ("Handshake error", "Sec-WebSocket-Key"),
)
_COUNTED_TYPES = frozenset({"response.create", "response.steer"})  # metric labels; the rest are "other"
# Headers that speak for one request: on the handshake they would speak for every message of the socket.
_PER_REQUEST = {
    "Idempotency-Key": "one key for every message would replay the first answer to all of them",
    "If-Match": "one version for every message would refuse all but the first",
}


@routes.get("/v1/responses")
async def responses_socket(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return await passthrough(request)
    for header, why in _PER_REQUEST.items():
        if header in request.headers:
            raise InvalidRequest(
                f"{header} is not supported on a WebSocket, whose messages have no headers: {why}.",
                param=header,
            )
    if request.app[DRAIN].draining:
        raise ShuttingDown("The sidecar is shutting down; open the WebSocket on another replica.")
    ws = web.WebSocketResponse(max_msg_size=request.app[CONFIG].max_body_bytes)
    try:
        await ws.prepare(request)
    except ValueError:  # aiohttp's base64 decoding of a key that is not ASCII
        raise InvalidRequest(
            "Invalid WebSocket handshake: Sec-WebSocket-Key is not base64.",
            param="Sec-WebSocket-Key",
            code="invalid_websocket_handshake",
        ) from None
    except web.HTTPBadRequest as exc:  # aiohttp's text says what was wrong with the handshake
        reason = exc.text or ""
        raise InvalidRequest(
            f"Invalid WebSocket handshake: {reason[:200]}",
            param=next((h for p, h in _HANDSHAKE_HEADERS if reason.startswith(p)), None),
            code="invalid_websocket_handshake",
        ) from None
    metrics = request.app[METRICS]
    metrics.websockets_open.inc()
    try:
        await _Connection(request, ws).serve()
    finally:
        metrics.websockets_open.dec()
    return ws


class _Connection:
    """The socket's reader (every message as it arrives) and its turns (one at a time, in order)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._app = request.app
        self._ws = ws
        self._tenant = request[TENANT]
        self._session = Session(request, ws)
        self._turns = 0
        self._creates: asyncio.Queue[tuple[dict[str, Any], bytes] | None] = asyncio.Queue()
        self._turn: asyncio.Task[None] | None = None
        self._idle_seconds = request.app[CONFIG].ws_idle_seconds
        self._last_seen = asyncio.get_running_loop().time()

    async def serve(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while (message := await self._next_create()) is not None:
                self._turn = asyncio.create_task(self._session.run(*message))
                self._turns += 1
                await asyncio.wait([self._turn])
                self._turn = None
                self._last_seen = asyncio.get_running_loop().time()
        finally:
            if self._turn is not None:  # the handler itself was cancelled: the turn ends as a departed one
                self._turn.cancel()
                await asyncio.wait([self._turn])
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._session.close()
            await self._ws.close()
            log.info(
                "WebSocket closed (%s) after %d response.create",
                self._ws.close_code,
                self._turns,
                extra={"tenant": self._tenant, "route": "/v1/responses", "status": self._ws.close_code},
            )

    async def _next_create(self) -> tuple[dict[str, Any], bytes] | None:
        """The next queued `response.create`; None once the client left, or after closing the socket for
        idleness or for a drain."""
        drain, loop = self._app[DRAIN], asyncio.get_running_loop()
        while True:
            if not self._creates.empty():
                if not drain.cut:
                    return self._creates.get_nowait()
                await self._close(WSCloseCode.SERVICE_RESTART, "the sidecar is shutting down")
                return None
            if drain.draining:
                await self._close(WSCloseCode.SERVICE_RESTART, "the sidecar is shutting down")
                return None
            idle_left = self._last_seen + self._idle_seconds - loop.time()
            if idle_left <= 0:
                await self._close(WSCloseCode.OK, f"idle for {self._idle_seconds:g} s")
                return None
            try:
                async with asyncio.timeout(min(idle_left, DRAIN_CHECK_SECONDS)):
                    item = await self._creates.get()
            except TimeoutError:
                continue
            if item is None or not drain.cut:
                return item
            self._creates.put_nowait(item)  # closed for the drain on the next pass

    async def _close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode())

    async def _read(self) -> None:
        """Every client message as it arrives. A close (or a broken connection) cancels the running turn:
        the engine request stops and the response is stored `incomplete`, as when an SSE client leaves."""
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._last_seen = asyncio.get_running_loop().time()
                    data = msg.data
                    await self._take(data.encode() if isinstance(data, str) else data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
        finally:
            if self._turn is not None:
                self._turn.cancel()
            self._creates.put_nowait(None)

    async def _take(self, raw: bytes) -> None:
        try:
            message = parse_json_object(raw)
        except ConvoStoreError as exc:
            await self._refuse("other", exc)
            return
        kind = message.get("type")
        label = kind if isinstance(kind, str) and kind in _COUNTED_TYPES else "other"
        self._app[METRICS].websocket_messages.labels(label).inc()
        if kind == "response.create":
            if self._creates.qsize() >= QUEUED_CREATES:
                await self._refuse(
                    None,
                    InvalidRequest(
                        f"{QUEUED_CREATES} response.create messages are already waiting on this socket; "
                        "send the next one after a response ends.",
                        param="type",
                        code="too_many_queued_responses",
                    ),
                )
                return
            self._creates.put_nowait((message, raw))
        elif kind == "response.steer":
            await self._refuse(
                None,
                InvalidRequest(
                    "response.steer is not supported by this sidecar yet; send a response.create with "
                    "previous_response_id to continue a response.",
                    param="type",
                    code="unsupported_message_type",
                ),
            )
        else:
            await self._refuse(
                None,
                InvalidRequest(
                    f"Unknown message type {kind!r}; expected 'response.create'.",
                    param="type",
                    code="unknown_message_type",
                ),
            )

    async def _refuse(self, label: str | None, exc: ConvoStoreError) -> None:
        if label is not None:
            self._app[METRICS].websocket_messages.labels(label).inc()
        await send_error(self._ws, self._app, exc, self._tenant)
