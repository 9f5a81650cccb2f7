"""Streams a background run's events to a client from the store's log: the live stream of a background
create call, and `GET /v1/responses/{id}?stream=true&starting_after=N` on any replica.

Each event is sent once, in sequence order, from the one after N to the terminal one; a client that
leaves only stops its own follower, never the run.
"""

from __future__ import annotations

import contextlib

import orjson
from aiohttp import web

from ..store import Store
from ..store.base import RunState
from ..wire.sse import encode_sse
from .capture import TERMINAL_EVENTS
from .lease import POLL_SECONDS
from .runner import Runner


async def follow_run(
    request: web.Request,
    store: Store,
    runner: Runner,
    tenant: str,
    response_id: str,
    after: int,
    headers: dict[str, str],
    first: RunState | None = None,
) -> web.StreamResponse:
    if first is not None:  # given the run's state: a GET ?stream=true, not the create call's own stream
        runner.metrics.background_resumed.inc()
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    state = first
    with contextlib.suppress(ConnectionResetError, RuntimeError):  # the client left: the run goes on
        while True:
            if state is None:
                state = await store.read_run(tenant, response_id, after)
                if state is None:  # expired or deleted meanwhile
                    break
            frames, ended = [], False
            for raw in state.events:
                event = orjson.loads(raw)
                after = max(after, int(event.get("sequence_number", after + 1)))
                frames.append(encode_sse(str(event.get("type")), raw))
                ended = ended or event.get("type") in TERMINAL_EVENTS
            if frames:
                await response.write(b"".join(frames))
            if ended or (state.finished and not state.events):
                break
            state = None
            await runner.wait_for_events(response_id, POLL_SECONDS)
        await response.write_eof()
    return response
