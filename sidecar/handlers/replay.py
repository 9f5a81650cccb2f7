"""Idempotent replays: a retried call gets the first call's stored answer, never a second engine call."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..errors import response_not_found
from ..response_record import resource_from_record, stored_fingerprint
from ..store import Store, TurnResult
from ..stored_items import decode_items
from ..wire.chat_chunks import DONE_FRAME
from ..wire.chat_replay import chat_chunks, chat_completion
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
    resource, fingerprint = await _stored_resource(store, tenant, first)
    headers = _replay_headers(headers, first, fingerprint)
    if not stream:
        return web.Response(body=orjson.dumps(resource), content_type="application/json", headers=headers)
    return await stream_events(request, headers, replay_events(resource))


async def replay_chat(
    request: web.Request,
    store: Store,
    tenant: str,
    first: TurnResult,
    *,
    stream: bool,
    include_usage: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    """The same for stateful chat: the stored answer as a chat completion, or its chunks and `[DONE]`."""
    resource, fingerprint = await _stored_resource(store, tenant, first)
    headers = _replay_headers(headers, first, fingerprint)
    if not stream:
        body = orjson.dumps(chat_completion(resource))
        return web.Response(body=body, content_type="application/json", headers=headers)
    chunks = chat_chunks(resource, include_usage=include_usage)
    return await _stream(
        request, headers, b"".join(encode_sse(None, orjson.dumps(c)) for c in chunks) + DONE_FRAME
    )


async def _stored_resource(store: Store, tenant: str, first: TurnResult) -> tuple[dict[str, Any], str | None]:
    """The first call's response object and the prefix fingerprint its prompt had (None if not kept)."""
    if first.response_id is None:
        raise response_not_found("")
    history = await store.resolve_response(tenant, first.response_id, "output")
    if history is None:  # deleted since, or expired
        raise response_not_found(first.response_id)
    resource = resource_from_record(first.response_id, history.body, decode_items(history.items))
    return resource, stored_fingerprint(history.body)


def _replay_headers(headers: dict[str, str], first: TurnResult, fingerprint: str | None) -> dict[str, str]:
    replayed = {
        **headers,
        "X-Response-Id": first.response_id or "",
        "X-Conversation-Id": first.conversation_id,
        "X-Conversation-Version": str(first.version),
        "Idempotent-Replayed": "true",
    }
    # The first call's own, summary block included; a record stored before records kept it leaves the
    # caller's (the pack's and tools' prefix, computed as build_prompt computes it).
    if fingerprint is not None:
        replayed["X-Prefix-Fingerprint"] = fingerprint
    return replayed


async def stream_events(
    request: web.Request, headers: dict[str, str], events: list[dict[str, Any]]
) -> web.StreamResponse:
    """Responses events, all known already, as one finished event stream."""
    frames = b"".join(encode_sse(e["type"], orjson.dumps(e)) for e in events)
    return await _stream(request, headers, frames)


async def _stream(request: web.Request, headers: dict[str, str], frames: bytes) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await response.write(frames)
    await response.write_eof()
    return response
