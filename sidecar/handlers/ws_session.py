"""One Responses WebSocket's turns: each `response.create` runs through the create pipeline of a streamed
`POST /v1/responses` and its events go out as text messages; the response the socket produced last stays in
the connection, so the turn that continues it resolves no history in the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ..appkeys import CONTEXT, METRICS, STORE
from ..context.packs import PACK_HEADER
from ..errors import ConvoStoreError, InvalidRequest
from ..middleware import TENANT, store_error
from ..quota import admit
from ..store import TurnResult
from ..store.base import Begun
from ..turns import TurnPlan, plan_continuation, stored_output
from .common import request_hash
from .responses import answer_in_session, plan_create
from .responses_request import CreateRequest, parse_create

log = logging.getLogger("convostore.websocket")

# Create fields WebSocket mode refuses: the reference's multiplexing lanes and warm-up, which this sidecar
# does not offer (sent on to the engine they would be ignored or refused there, not explained).
_UNSUPPORTED_FIELDS = ("stream_id", "generate")


def parse_socket_create(message: dict[str, Any]) -> CreateRequest:
    """A `response.create` message as the create request of a streamed POST: `type` dropped, `stream`
    implied (a client's value is ignored, as the reference does), `background: true` refused."""
    body = {k: v for k, v in message.items() if k not in ("type", "stream")}
    if body.get("background") is True:
        raise InvalidRequest("Background mode is not supported in WebSocket mode.", param="background")
    for name in _UNSUPPORTED_FIELDS:
        if name in body:
            raise InvalidRequest(f"'{name}' is not supported by this sidecar's WebSocket mode.", param=name)
    return parse_create({**body, "stream": True})


_CODE_BY_STATUS = {404: "not_found"}


def error_message(exc: ConvoStoreError) -> bytes:
    """A failed message as WebSocket mode reports it: its HTTP status beside the OpenAI error body (with
    the headers a 429 would carry). Numbered 0: it is the whole stream of the request that failed."""
    error = exc.body()["error"]
    # The message's code is required (WebSocketErrorEvent), where an HTTP error body may have null.
    error["code"] = error["code"] or _CODE_BY_STATUS.get(exc.status) or error["type"]
    if exc.headers:
        error["headers"] = exc.headers
    return orjson.dumps({"type": "error", "status": exc.status, "sequence_number": 0, "error": error})


async def send_error(
    ws: web.WebSocketResponse, app: web.Application, exc: ConvoStoreError, tenant: str | None
) -> None:
    """One error message; the socket stays open (a client already gone is not an error of ours). Logged
    as the request log has a refused request: a warning for a 5xx, else info."""
    app[METRICS].websocket_errors.labels(str(exc.status)).inc()
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "WebSocket error message %d %s", exc.status, exc.code, extra={"tenant": tenant})
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_frame(error_message(exc), WSMsgType.TEXT)


def as_client_error(exc: Exception) -> ConvoStoreError:
    """What the error middleware would have answered a POST with."""
    if isinstance(exc, ConvoStoreError):
        return exc
    try:
        return store_error(exc)  # re-raises what is not a store outcome
    except Exception:
        log.exception("a WebSocket turn failed")
        return ConvoStoreError("Internal server error.")


class SocketSink:
    """A relay's events as WebSocket text messages, one JSON object each."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    @property
    def response(self) -> web.StreamResponse:
        return self._ws

    async def open(self) -> None:
        return None

    async def write(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            await self._ws.send_frame(orjson.dumps(event), WSMsgType.TEXT)

    async def write_last(self, events: list[dict[str, Any]]) -> None:
        await self.write(events)  # the socket stays open for the next response

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class LastTurn:
    """The response this socket produced last, with the history a turn continuing it starts from."""

    response_id: str
    conversation_id: str
    history: list[bytes]  # its history, input and output: stored item bytes, oldest first
    version: int
    stored: bool
    in_conversation: bool  # made with `conversation`: the next turn most likely names it again


class Session:
    """The turns of one socket, one at a time (the caller's loop runs them in order)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._request = request
        self._ws = ws
        self._app = request.app
        self._tenant = request[TENANT]
        self._last: LastTurn | None = None
        # The record index of the turn that will continue `_last` (stored), reserved while the client reads
        # the answer: the store has no reserve-only call, so begin_turn's history read is paid off the path.
        self._next: asyncio.Task[Begun] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, message: dict[str, Any], raw: bytes) -> None:
        """One `response.create`: the events a streamed POST would send, or one error message."""
        try:
            await admit(self._app, self._tenant, stores=True)  # rate and stored quotas, as for a POST
            create = parse_socket_create(message)
            plan = await self._plan(raw, create)
            sink = SocketSink(self._ws)
            await answer_in_session(
                self._request, create, plan, request_hash(raw, "responses"), sink, self._keep
            )
        except Exception as exc:
            await send_error(self._ws, self._app, as_client_error(exc), self._tenant)
        if self._next is None:
            self._reserve_next()

    async def close(self) -> None:
        """The socket is done: give back an unused reservation, finish what runs in the background."""
        self._give_back(self._next)
        self._next = None
        if self._background:
            await asyncio.shield(asyncio.gather(*self._background, return_exceptions=True))

    async def _plan(self, raw: bytes, create: CreateRequest) -> TurnPlan:
        reservation, self._next = self._next, None  # this turn's, or nobody's
        last = self._last
        if last is None or create.previous_response_id != last.response_id:
            self._give_back(reservation)
            plan, _, _, _ = await plan_create(self._request, raw, create)
            return plan
        # An unknown X-Prompt-Pack is a 400 before anything is reserved, as plan_create has it.
        self._app[CONTEXT].choose(create.model, self._request.headers.get(PACK_HEADER))

        def continuing(reserved_id: str | None = None) -> TurnPlan:
            assert last is not None
            return plan_continuation(
                self._tenant,
                last.response_id,
                conversation_id=last.conversation_id,
                history=last.history,
                version=last.version,
                new_items=create.items,
                reserved_id=reserved_id,
            )

        if not create.store:
            self._give_back(reservation)
            return continuing()
        if not last.stored:
            self._give_back(reservation)
            raise InvalidRequest(
                f"Previous response '{last.response_id}' was not stored (store: false); on this socket only "
                "a store: false response can continue it.",
                param="previous_response_id",
            )
        try:
            begun = await _reserved(reservation)
        except asyncio.CancelledError:  # the client left while it was being made
            self._give_back(reservation)
            raise
        if begun is None or begun.history is None:
            # No reservation (the store failed, or the response is gone): resolve as a POST would.
            plan, _, _, _ = await plan_create(self._request, raw, create)
            return plan
        try:
            return continuing(begun.response_id)
        except BaseException:  # refused (an unknown item_reference): the reservation goes back
            self._spawn(self._abandon(begun))
            raise

    def _keep(self, plan: TurnPlan, final: dict[str, Any], result: TurnResult | None) -> None:
        """After each turn's store write (before its terminal event goes out): what the next one needs."""
        # A copy: stored_output canonicalises arguments in place, and an unstored answer must reach the
        # client as the engine gave it, as over SSE.
        output = stored_output([dict(item) for item in final.get("output") or []])
        self._last = LastTurn(
            response_id=plan.response_id,
            conversation_id=result.conversation_id if result is not None else plan.conversation_id,
            history=[*plan.history, *(b for _, b in plan.input_items), *(b for _, b in output)],
            version=result.version if result is not None else plan.version,
            stored=result is not None,
            in_conversation=plan.in_conversation,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "WebSocket response %s",
                final.get("status"),
                extra={
                    "tenant": plan.tenant,
                    "conversation_id": plan.conversation_id,
                    "response_id": plan.response_id,
                    "status": final.get("status"),
                },
            )

    def _reserve_next(self) -> None:
        last = self._last
        if last is None or not last.stored or last.in_conversation or self._ws.closed:
            return
        self._next = asyncio.create_task(
            self._app[STORE].begin_turn(self._tenant, previous_response_id=last.response_id)
        )

    def _give_back(self, reservation: asyncio.Task[Begun] | None) -> None:
        """An unused reservation goes back, without holding up the turn at hand."""
        if reservation is not None:
            self._spawn(self._abandon_when_made(reservation))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _abandon_when_made(self, reservation: asyncio.Task[Begun]) -> None:
        begun = await _reserved(reservation)
        if begun is not None:
            await self._abandon(begun)

    async def _abandon(self, begun: Begun) -> None:
        if begun.history is None or not begun.response_id:
            return
        try:
            await self._app[STORE].abandon_turn(
                self._tenant, begun.history.conversation_id, begun.response_id
            )
        except Exception:  # a reservation lapses by itself
            log.warning("could not give back a WebSocket turn's reservation")


async def _reserved(reservation: asyncio.Task[Begun] | None) -> Begun | None:
    if reservation is None:
        return None
    try:
        return await reservation
    except Exception:
        return None
