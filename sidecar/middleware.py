"""Cross-cutting request concerns: request ids, tenant, and one place that renders every error."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import errors
from .appkeys import AUTH, METRICS
from .metrics import upstream_started
from .store.base import (
    Conflict,
    ConversationMissing,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
    StoreDown,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
TENANT: web.RequestKey[str] = web.RequestKey("tenant")

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
    raise exc


def error_response(exc: errors.ConvoStoreError, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id, **exc.headers}
    return web.Response(
        status=exc.status, body=exc.body_bytes(), content_type="application/json", headers=headers
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, tenant, error rendering, metrics and the request log; every route passes through here."""
    started = time.perf_counter()
    upstream_started.set(None)
    request_id = request.headers.get("X-Request-Id") or f"req_{os.urandom(12).hex()}"
    request[REQUEST_ID] = request_id
    response = await _handle(request, handler, request_id)
    _record(request, response, request_id, started)
    return response


async def _handle(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        if not request.path.startswith("/convostore/"):
            request[TENANT] = request.app[AUTH].tenant_for(request.headers)
        response = await handler(request)
    except errors.ConvoStoreError as exc:
        return error_response(exc, request_id)
    except (
        Conflict,
        IdempotencyKeyReused,
        ParentNotFound,
        ParentInOtherConversation,
        ConversationMissing,
        StoreDown,
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
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        return error_response(errors.ConvoStoreError("Internal server error."), request_id)
    if not response.prepared:
        response.headers.setdefault("X-Request-Id", request_id)
    return response


def _record(request: web.Request, response: web.StreamResponse, request_id: str, started: float) -> None:
    """Metrics for every request; a JSON log line for failures and slow ones (every one at debug level:
    formatting a line per request would cost more than the proxying itself)."""
    metrics = request.app[METRICS]
    route = _route_label(request)
    metrics.requests.labels(route, str(response.status)).inc()
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
