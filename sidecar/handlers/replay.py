"""Idempotent replays: a retried call gets the first call's stored answer, never a second engine call."""

from __future__ import annotations

import orjson
from aiohttp import web

from ..errors import response_not_found
from ..response_record import resource_from_record
from ..store import Store, TurnResult
from ..stored_items import decode_items
from ..wire.replay import replay_events
from ..wire.sse import encode_sse


async def replay_stored(
    request: web.Request,
    store: Store,
    tenant: str,
    first: TurnResult,
    *,
    stream: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    """The stored response of the first call with this idempotency key, as JSON or as a finished stream."""
    if first.response_id is None:
        raise response_not_found("")
    history = await store.resolve_response(tenant, first.response_id, "output")
    if history is None:  # deleted since, or expired
        raise response_not_found(first.response_id)
    resource = resource_from_record(first.response_id, history.body, decode_items(history.items))
    headers = {
        **headers,
        "X-Response-Id": first.response_id,
        "X-Conversation-Id": first.conversation_id,
        "X-Conversation-Version": str(first.version),
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
