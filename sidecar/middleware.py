"""Cross-cutting request concerns: id, trace, tenant, drain count, and one place that renders every error."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import errors
from .appkeys import AUTH, METRICS
from .drain import DRAIN
from .metrics import upstream_started
from .request_target import check_request_target
from .store.base import (
    Conflict,
    ConversationMissing,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
    ReservationLapsed,
    StoreDown,
)
from .tracing import close_request_trace, current_trace_id, open_request_trace

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
TENANT: web.RequestKey[str] = web.RequestKey("tenant")
# The sidecar's own unauthenticated endpoints, by resource: a route is exempt only when the router matched
# exactly it, never because its path looks like one (a prefix would let `/convostore/../v1/…` through).
PUBLIC_RESOURCES: web.AppKey[frozenset[web.AbstractResource]] = web.AppKey("public_resources")
# A client's X-Request-Id is echoed and logged: only a bounded, plain one is kept, else we mint our own.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger("convostore")
SLOW_REQUEST_MS = 1000.0  # slower requests are logged at info level even when they succeed


def store_error(exc: Exception) -> errors.ConvoStoreError:
    """Store outcomes as the OpenAI errors clients expect."""
    if isinstance(exc, Conflict):
        return errors.VersionConflict(
            f"The conversation moved to version {exc.current_version}; If-Match did not match.",
            param="If-Match",
        )
    if isinstance(exc, IdempotencyKeyReused):
        return errors.IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body.", param="Idempotency-Key"
        )
    if isinstance(exc, IdempotencyInFlight):
        return errors.IdempotencyConflict(
            "A request with this Idempotency-Key is still in progress; retry after it has finished.",
            param="Idempotency-Key",
            code="idempotency_key_in_use",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, ParentNotFound):
        return errors.previous_response_not_found(str(exc.args[0]))
    if isinstance(exc, ParentInOtherConversation):
        return errors.InvalidRequest(
            f"Previous response '{exc.args[0]}' belongs to another conversation.",
            param="previous_response_id",
        )
    if isinstance(exc, ConversationMissing):
        return errors.conversation_not_found(str(exc.args[0]))
    if isinstance(exc, StoreDown):
        return errors.StoreUnavailable("The conversation store is unavailable; retry later.")
    if isinstance(exc, ReservationLapsed):
        return errors.StoreUnavailable(
            "The response could not be stored: its reserved id lapsed while the conversation store was "
            "unreachable (or a retry with the same Idempotency-Key took it over); retry the request."
        )
    raise exc


def error_response(exc: errors.ConvoStoreError, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id, **exc.headers}
    return web.Response(
        status=exc.status, body=exc.body_bytes(), content_type="application/json", headers=headers
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, trace, tenant, the drain's count, error rendering, metrics and the request log; every
    route passes through here."""
    started = time.perf_counter()
    trace = open_request_trace(request.headers)
    try:
        upstream_started.set(None)
        request_id = _request_id(request.headers.get("X-Request-Id"))
        request[REQUEST_ID] = request_id
        response = await _handle(request, handler, request_id)
        _record(request, response, request_id, started)
        return response
    finally:
        close_request_trace(trace)


def _request_id(client_value: str | None) -> str:
    if client_value is not None and _CLIENT_REQUEST_ID.fullmatch(client_value):
        return client_value
    return f"req_{os.urandom(12).hex()}"


async def _handle(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        # Before anything reads the path: the router has matched it already, but nothing acts on that yet.
        check_request_target(request.raw_path)
        if request.match_info.route.resource not in request.app[PUBLIC_RESOURCES]:
            request[TENANT] = request.app[AUTH].tenant_for(request.headers)
        drain = request.app[DRAIN]
        drain.enter()  # in flight until the handler returns; refused once the drain has cut streams
        try:
            response = await handler(request)
        finally:
            drain.leave()
    except errors.ConvoStoreError as exc:
        return error_response(exc, request_id)
    except (
        Conflict,
        IdempotencyInFlight,
        IdempotencyKeyReused,
        ParentNotFound,
        ParentInOtherConversation,
        ConversationMissing,
        StoreDown,
        ReservationLapsed,
    ) as exc:
        return error_response(store_error(exc), request_id)
    except web.HTTPRequestEntityTooLarge:
        return error_response(errors.BodyTooLarge("Request body too large."), request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        err = errors.NotFound if exc.status == 404 else errors.InvalidRequest
        wrapped = err(exc.reason or "Invalid request.")
        wrapped.status = exc.status
        return error_response(wrapped, request_id)
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # Not our failure: counted as 499 and logged at info by _record, not as an error.
            return error_response(errors.ClientDisconnected("The client closed the connection."), request_id)
        log.exception("unhandled error", extra={"request_id": request_id})
        return error_response(errors.ConvoStoreError("Internal server error."), request_id)
    if not response.prepared:
        response.headers.setdefault("X-Request-Id", request_id)
    return response


def _client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed (its reads fail with ConnectionResetError)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _record(request: web.Request, response: web.StreamResponse, request_id: str, started: float) -> None:
    """Metrics for every request; a JSON log line for failures and slow ones (every one at debug level:
    formatting a line per request would cost more than the proxying itself)."""
    metrics = request.app[METRICS]
    route = _route_label(request)
    metrics.count_request(route, response.status)
    engine_started = upstream_started.get()
    if engine_started is not None:
        metrics.proxy_overhead_ms.observe((engine_started - started) * 1000)
    duration_ms = (time.perf_counter() - started) * 1000
    level = logging.DEBUG
    if response.status >= 500:
        level = logging.WARNING
    elif duration_ms >= SLOW_REQUEST_MS or response.status >= 400:
        level = logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s %s %d",
            request.method,
            route,
            response.status,
            extra={
                "request_id": request_id,
                "trace_id": current_trace_id(),
                "tenant": request.get(TENANT),
                "conversation_id": response.headers.get("X-Conversation-Id"),
                "response_id": response.headers.get("X-Response-Id"),
                "route": route,
                "status": response.status,
                "duration_ms": round(duration_ms, 3),
            },
        )


def _route_label(request: web.Request) -> str:
    """The route's pattern (bounded cardinality), never the raw path."""
    resource = request.match_info.route.resource
    pattern = resource.canonical if resource is not None else ""
    return "passthrough" if pattern == "/{tail}" else pattern or "unmatched"
