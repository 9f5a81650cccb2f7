"""`POST /v1/chat/completions`: a pass-through, or with X-Conversation-Id / X-Previous-Response-Id a
stateful turn whose history is prepended and whose answer (stream or not) is stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ..appkeys import CONFIG, METRICS, STORE, UPSTREAM
from ..errors import InvalidRequest, UpstreamError, engine_rejected
from ..fingerprint import estimate_tokens, prefix_fingerprint
from ..ids import validate_client_id
from ..middleware import REQUEST_ID, TENANT
from ..stored_items import decode_items
from ..turns import plan_turn, record_response
from ..wire.chat_messages import items_to_messages, messages_to_items
from ..wire.chat_translate import ChatStreamTranslator
from ..wire.items import canonical_tools
from ..wire.resource import build_response_resource
from ..wire.sse import DONE, SSEDecoder
from .common import idempotency_key, read_json, request_hash, stateful_headers
from .engine_answer import read_engine_json, save_quietly, settle_departed_client
from .passthrough import passthrough
from .sse_relay import EventStreamResponse

routes = web.RouteTableDef()
log = logging.getLogger("convostore.chat")


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    conversation_id = request.headers.get("X-Conversation-Id")
    previous = request.headers.get("X-Previous-Response-Id")
    if not conversation_id and not previous:
        return await passthrough(request)
    if conversation_id:
        validate_client_id(conversation_id, "X-Conversation-Id")
    raw, body = await read_json(request)
    new_items = messages_to_items(body.get("messages"))
    if not new_items:
        raise InvalidRequest("'messages' must hold at least one message.", param="messages")
    store = request.app[STORE]
    idem = idempotency_key(request)
    plan = await plan_turn(
        store,
        request[TENANT],
        previous_response_id=previous or None,
        conversation_id=None if previous else conversation_id,
        idempotency_key=idem,
        new_items=new_items,
        create_conversation=True,
    )
    if conversation_id and previous and plan.conversation_id != conversation_id:
        raise InvalidRequest(
            "X-Previous-Response-Id belongs to another conversation.", param="X-Previous-Response-Id"
        )
    stream = bool(body.get("stream"))
    messages = items_to_messages(decode_items([*plan.history, *(b for _, b in plan.input_items)]))
    engine_body: dict[str, Any] = {**body, "messages": messages}
    if stream:
        engine_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    headers = stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=plan.conversation_id,
        version=plan.version + 1,
        fingerprint=prefix_fingerprint(tools=canonical_tools(body.get("tools"))),
        estimated_tokens=estimate_tokens(plan.history_bytes),
        response_id=plan.response_id,
    )
    upstream = request.app[UPSTREAM]
    engine_headers = upstream.headers(request.headers, forward_client_key=request.app[CONFIG].auth == "none")
    engine = await upstream.post("/v1/chat/completions", orjson.dumps(engine_body), engine_headers)
    base = build_response_resource(
        response_id=plan.response_id,
        created_at=int(time.time()),
        status="in_progress",
        model=str(body.get("model") or ""),
        output=[],
        request={},
        previous_response_id=previous or None,
    )
    translator = ChatStreamTranslator(base, plan.mint)
    hashed = request_hash(raw, "chat")

    async def save(final: dict[str, Any]) -> None:
        request.app[METRICS].observe_usage(final.get("usage"))
        await record_response(store, plan, final, idempotency_key=idem, request_hash=hashed)

    if not stream:
        return await _complete(engine, translator, headers, save)
    return await _relay(request, engine, translator, headers, save)


async def _complete(
    engine: aiohttp.ClientResponse, translator: ChatStreamTranslator, headers: dict[str, str], save: Any
) -> web.Response:
    answer = await read_engine_json(engine)
    try:
        choice = answer["choices"][0]
        # The translator's stream path captures a whole answer as well as deltas: one code path for both.
        translator.feed(
            {
                **answer,
                "choices": [
                    {"index": 0, "delta": choice["message"], "finish_reason": choice.get("finish_reason")}
                ],
            }
        )
        translator.finish()
    except (KeyError, IndexError, TypeError):
        raise UpstreamError("The engine answered something that is not a chat completion.") from None
    assert translator.final_response is not None
    await save(translator.final_response)
    return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=headers)


async def _relay(
    request: web.Request,
    engine: aiohttp.ClientResponse,
    translator: ChatStreamTranslator,
    headers: dict[str, str],
    save: Any,
) -> web.StreamResponse:
    """Chunks go to the client byte for byte, one write each, as they come; a copy is decoded to capture
    the answer."""
    if engine.status >= 400:
        async with engine:
            raise engine_rejected(engine.status, await engine.read())
    response = EventStreamResponse(headers)
    await response.prepare(request)
    decoder = SSEDecoder()
    saved = False
    try:
        try:
            async for chunk in engine.content.iter_any():
                done = False
                for message in decoder.feed(chunk):
                    if message.data == DONE:
                        done = True
                    elif message.data.strip():
                        translator.feed(orjson.loads(message.data))
                if done and not saved:
                    # Store before `[DONE]` reaches the client: SDKs stop reading there and may chain at
                    # once. The chunk still goes out whole, in one write, right after.
                    if translator.status is None:
                        translator.finish()
                    if translator.final_response is not None:
                        await asyncio.shield(save_quietly(save, translator.final_response))
                        saved = True
                await response.write(chunk)
            if translator.status is None:
                translator.finish()
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            translator.fail(f"The engine failed mid-stream: {exc.__class__.__name__}.", "server_error")
            error = {
                "error": {
                    "message": "The engine failed mid-stream.",
                    "type": "server_error",
                    "param": None,
                    "code": "server_error",
                }
            }
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
    except (ConnectionResetError, RuntimeError, asyncio.CancelledError) as exc:
        await settle_departed_client(engine, translator, save, saved=saved)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return response
    finally:
        engine.release()
    if translator.final_response is not None and not saved:
        await asyncio.shield(save_quietly(save, translator.final_response))
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response
