"""Stored responses: `GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, and for
background responses their progress, `?stream=true&starting_after=N` and `POST /v1/responses/{id}/cancel`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from ..appkeys import STORE
from ..errors import InvalidRequest, response_not_found
from ..middleware import TENANT
from ..response_record import resource_from_record
from ..runs.capture import progress
from ..runs.context import RUNS
from ..runs.follow import follow_run
from ..runs.lease import LEASE_MS, POLL_SECONDS, REAP_INTERVAL_SECONDS
from ..runs.record import RunRecord
from ..store import Store
from ..stored_items import decode_items, listed
from ..wire.replay import replay_events
from .common import json_response
from .pagination import page_items
from .replay import stream_events

routes = web.RouteTableDef()

# How long a cancel waits for the run to stop: its runner hears of it within a renewal, a dead runner's
# run is settled by a reaper within a lease and a pass.
CANCEL_WAIT_SECONDS = LEASE_MS / 1000 + 2 * REAP_INTERVAL_SECONDS + 2.0


@routes.get("/v1/responses/{response_id}")
async def get_response(request: web.Request) -> web.StreamResponse:
    response_id = request.match_info["response_id"]
    store, tenant = request.app[STORE], request[TENANT]
    if request.query.get("stream") == "true":
        return await _resume(request, store, tenant, response_id)
    resource = await _current(store, tenant, response_id)
    if resource is None:
        raise response_not_found(response_id)
    return json_response(orjson.dumps(resource))


async def _current(store: Store, tenant: str, response_id: str) -> dict[str, Any] | None:
    """The stored response, else (a background run not stored yet) its progress."""
    history = await store.resolve_response(tenant, response_id, "output")
    if history is not None:
        return resource_from_record(response_id, history.body, decode_items(history.items))
    run = await store.read_run(tenant, response_id, -1)
    if run is None:
        return None
    if run.finished:  # stored since the first look, or deleted (or never stored): the record decides
        history = await store.resolve_response(tenant, response_id, "output")
        if history is None:
            return None
        return resource_from_record(response_id, history.body, decode_items(history.items))
    return progress(RunRecord.decode(run.record).base, run.status, run.events)


async def _resume(request: web.Request, store: Store, tenant: str, response_id: str) -> web.StreamResponse:
    after = _starting_after(request.query.get("starting_after"))
    run = await store.read_run(tenant, response_id, after)
    headers = {"X-Response-Id": response_id}
    if run is not None:
        return await follow_run(request, store, request.app[RUNS], tenant, response_id, after, headers, run)
    history = await store.resolve_response(tenant, response_id, "output")
    if history is None:
        raise response_not_found(response_id)
    resource = resource_from_record(response_id, history.body, decode_items(history.items))
    if resource.get("background") is not True:
        raise InvalidRequest(
            "Only responses created with background=true can be streamed again.", param="stream"
        )
    return await stream_events(request, headers, _replayed_log(resource, after))


def _replayed_log(resource: dict[str, Any], after: int) -> list[dict[str, Any]]:
    """A finished background response whose event log expired before it (the log lives a TTL from the
    run's end, the response a TTL from its conversation's last use): from the start, its events rebuilt
    from what is stored; after a number, which the rebuilt events would not match, its terminal event,
    which carries the whole response."""
    events = replay_events(resource)
    if after < 0:
        return events
    terminal = events[-1]
    terminal["sequence_number"] = after + 1
    return [terminal]


def _starting_after(value: str | None) -> int:
    if value is None:
        return -1
    if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 12 or int(value) < -1:
        raise InvalidRequest(
            "Invalid 'starting_after': expected a sequence number (an integer ≥ 0).", param="starting_after"
        )
    return int(value)


@routes.post("/v1/responses/{response_id}/cancel")
async def cancel_response(request: web.Request) -> web.Response:
    """A background response still running stops (on whichever replica runs it) and is stored cancelled
    with its output so far; a finished one is returned as it is; one not created in background is a 400."""
    response_id = request.match_info["response_id"]
    store, tenant = request.app[STORE], request[TENANT]
    status = await store.cancel_run(tenant, response_id)
    if status is None:
        resource = await _current(store, tenant, response_id)
        if resource is None:
            raise response_not_found(response_id)
        if resource.get("background") is True:  # finished, its run's log expired since: as it is
            return json_response(orjson.dumps(resource))
        raise InvalidRequest(
            "Only responses created with background=true can be cancelled.", param="response_id"
        )
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while True:
        run = await store.read_run(tenant, response_id)
        if run is None or run.finished or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    resource = await _current(store, tenant, response_id)
    if resource is None:
        raise response_not_found(response_id)
    return json_response(orjson.dumps(resource))


@routes.delete("/v1/responses/{response_id}")
async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not await request.app[STORE].delete_response(request[TENANT], response_id):
        raise response_not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


@routes.get("/v1/responses/{response_id}/input_items")
async def input_items(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    history = await request.app[STORE].resolve_response(request[TENANT], response_id, "input")
    if history is None:
        raise response_not_found(response_id)
    return json_response(page_items([listed(item) for item in decode_items(history.items)], request.query))
