"""Idempotent replays of `POST /v1/responses`: a retried call gets the first call's stored answer."""

from __future__ import annotations

import orjson
from aiohttp import web

from ..errors import IdempotencyConflict, response_not_found
from ..response_record import resource_from_record
from ..store import Store
from ..stored_items import decode_items
from ..turns import TurnPlan
from ..wire.replay import replay_events
from ..wire.sse import encode_sse


async def replay_if_seen(
    request: web.Request,
    store: Store,
    plan: TurnPlan,
    key: str,
    request_hash: str,
    *,
    stream: bool,
    headers: dict[str, str],
) -> web.StreamResponse | None:
    """The first answer when this key was used before (never calling the engine again), else None.
    A concurrent first call still in flight is settled by the store: only one of them is written."""
    found = await store.find_idempotent(plan.tenant, plan.conversation_id, key)
    if found is None:
        return None
    first_hash, result = found
    if first_hash != request_hash:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body.", param="Idempotency-Key"
        )
    if result.response_id is None:
        return None
    history = await store.resolve_response(plan.tenant, result.response_id, "output")
    if history is None:
        raise response_not_found(result.response_id)
    resource = resource_from_record(result.response_id, history.body, decode_items(history.items))
    headers = {
        **headers,
        "X-Response-Id": result.response_id,
        "X-Conversation-Version": str(result.version),
        "Idempotent-Replayed": "true",
    }
    if not stream:
        return web.Response(body=orjson.dumps(resource), content_type="application/json", headers=headers)
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await response.write(b"".join(encode_sse(e["type"], orjson.dumps(e)) for e in replay_events(resource)))
    await response.write_eof()
    return response
