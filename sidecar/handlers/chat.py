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

from ..appkeys import CONTEXT, METRICS, STORE, UPSTREAM
from ..context.packs import PACK_HEADER
from ..context.prompt import pack_fingerprint
from ..drain import CUT_CODE, CUT_MESSAGE, DRAIN, StreamCut
from ..errors import InvalidRequest, UpstreamError
from ..fingerprint import estimate_tokens
from ..ids import validate_client_id
from ..middleware import REQUEST_ID, TENANT
from ..store import TurnResult
from ..turns import NOT_STORED, TurnPlan, plan_turn, record_response, save_quietly, turn_settled
from ..upstream import EngineAnswer, failure_reason
from ..wire.chat_chunks import DONE_FRAME, ChatClientStream, chat_error, with_sidecar_call_ids
from ..wire.chat_messages import messages_to_items
from ..wire.chat_translate import ChatStreamTranslator, chat_choice
from ..wire.resource import build_response_resource
from ..wire.sse import SSEDecoder, encode_sse
from ..wire.stream_state import MalformedEvent
from .common import engine_headers, idempotency_key, if_match, read_json, request_hash, stateful_headers
from .engine_answer import read_engine_json, require_event_stream, settle_departed_client
from .passthrough import passthrough
from .replay import replay_chat
from .sse_relay import ClientGone, EventStreamResponse

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
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    stream = body.get("stream") is True
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise InvalidRequest("Invalid type for 'stream_options': expected an object.", param="stream_options")
    model = body.get("model") if isinstance(body.get("model"), str) else None
    # An unknown X-Prompt-Pack is a 400 before anything is reserved.
    pack, _ = request.app[CONTEXT].choose(model, request.headers.get(PACK_HEADER))
    store = request.app[STORE]
    idem = idempotency_key(request)
    hashed = request_hash(raw, "chat")
    try:
        plan = await plan_turn(
            store,
            request[TENANT],
            previous_response_id=previous or None,
            conversation_id=None if previous else conversation_id,
            idempotency_key=idem,
            request_hash=hashed,
            new_items=new_items,
            create_conversation=True,
            if_match=if_match(request),
        )
    except InvalidRequest as exc:  # named as the client sent it: a header here, not a body field
        if exc.param == "previous_response_id":
            exc.param = "X-Previous-Response-Id"
        raise
    headers = stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=plan.conversation_id,
        version=plan.version + 1,
        # _answer sets the prompt's own, and a replay the one stored with its first call: this is only for a
        # first call stored before records kept theirs.
        fingerprint="" if plan.replay is None else pack_fingerprint(pack, body.get("tools"), chat_tools=True),
        estimated_tokens=estimate_tokens(plan.history_bytes),
        response_id=plan.response_id,
    )
    if plan.replay is not None:  # the key was used before with this body: its first answer, no engine call
        include_usage = bool(stream_options.get("include_usage"))
        return await replay_chat(
            request,
            store,
            plan.tenant,
            plan.replay,
            stream=stream,
            include_usage=include_usage,
            headers=headers,
        )
    # From here a refusal (of the request or by the engine) gives back the reserved id and the key.
    async with turn_settled(store, plan):
        if conversation_id and previous and plan.conversation_id != conversation_id:
            raise InvalidRequest(
                "X-Previous-Response-Id belongs to another conversation.", param="X-Previous-Response-Id"
            )
        return await _answer(request, body, plan, headers, stream_options, idem, hashed)


async def _answer(
    request: web.Request,
    body: dict[str, Any],
    plan: TurnPlan,
    headers: dict[str, str],
    stream_options: dict[str, Any],
    idem: str | None,
    hashed: str,
) -> web.StreamResponse:
    store = request.app[STORE]
    stream = body.get("stream") is True
    prompt = await request.app[CONTEXT].turn_prompt(
        plan.conversation_id,
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        pack_header=request.headers.get(PACK_HEADER),
        upstream=request.app[UPSTREAM],
        history=plan.history,
        new_input=[b for _, b in plan.input_items],
        request_tools=body.get("tools"),
        chat_tools=True,
        tenant=plan.tenant,
        store=store,  # stored summaries (upstream/http summarisers)
        summaries=plan.summaries,  # those the resolve brought
        history_param="X-Previous-Response-Id"
        if request.headers.get("X-Previous-Response-Id")
        else "X-Conversation-Id",
    )
    headers["X-Prefix-Fingerprint"] = plan.fingerprint = prompt.fingerprint
    headers["X-Estimated-Input-Tokens"] = str(prompt.input_tokens)
    engine_body: dict[str, Any] = {**body, "messages": prompt.chat_messages()}
    if prompt.tools is not None:
        engine_body["tools"] = prompt.tools
    if stream:
        # The stored turn needs usage; the client gets a usage chunk only if it asked (ChatClientStream).
        engine_body["stream_options"] = {**stream_options, "include_usage": True}
    engine = await request.app[UPSTREAM].post(
        "/v1/chat/completions", orjson.dumps(engine_body), engine_headers(request)
    )
    base = build_response_resource(
        response_id=plan.response_id,
        created_at=int(time.time()),
        status="in_progress",
        model=str(body.get("model") or ""),
        output=[],
        request={},
        previous_response_id=plan.previous_response_id,
        conversation_id=plan.conversation_id if plan.in_conversation else None,
    )
    translator = ChatStreamTranslator(base, plan.mint)

    async def save(final: dict[str, Any]) -> TurnResult:
        request.app[METRICS].observe_usage(final.get("usage"))
        return await record_response(store, plan, final, idempotency_key=idem, request_hash=hashed)

    if not stream:
        answer, result = await _complete(engine, translator, save)
        if result.replayed:  # a call with the same key was stored first (its claim had lapsed): its answer
            return await replay_chat(
                request, store, plan.tenant, result, stream=False, include_usage=False, headers=headers
            )
        return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=headers)
    client = ChatClientStream(translator, include_usage=bool(stream_options.get("include_usage")))
    return await _relay(request, engine, translator, client, headers, save)


async def _complete(
    engine: EngineAnswer, translator: ChatStreamTranslator, save: Any
) -> tuple[dict[str, Any], TurnResult]:
    """A whole answer, stored: the chat completion to send and what the store made of the turn."""
    answer = await read_engine_json(engine)
    try:
        choice, message = chat_choice(answer)
        # The translator's stream path captures a whole answer as well as deltas: one code path for both.
        delta = {"index": 0, "delta": message, "finish_reason": choice.get("finish_reason")}
        translator.feed({**answer, "choices": [delta]})
        translator.finish()
    except Exception as exc:  # whatever an answer of the wrong shape trips: the engine's fault, a 502
        reason = str(exc) if isinstance(exc, MalformedEvent) else exc.__class__.__name__
        raise UpstreamError(
            f"The engine answered something that is not a chat completion: {reason}."
        ) from None
    assert translator.final_response is not None
    with_sidecar_call_ids(message, translator)  # the client answers a call by the id that is stored
    return answer, await save(translator.final_response)


def not_stored_chunk(reason: str = NOT_STORED) -> bytes:
    return encode_sse(None, orjson.dumps(chat_error(reason)))


async def _relay(
    request: web.Request,
    engine: EngineAnswer,
    translator: ChatStreamTranslator,
    client: ChatClientStream,
    headers: dict[str, str],
    save: Any,
) -> web.StreamResponse:
    """Chunks go to the client as they come, one write per engine chunk; the translator captures the
    answer. However the engine's stream ends (whole, cut, an error chunk, a chunk of the wrong shape), the
    client's ends with `[DONE]` or an error chunk, and the stored turn says the same."""
    await require_event_stream(engine)
    response = EventStreamResponse(headers)
    await response.prepare(request)
    drain = request.app[DRAIN]
    drain.track(engine)
    decoder = SSEDecoder()
    saved = False

    async def send(frames: bytes) -> None:
        nonlocal saved
        if translator.final_response is not None and not saved:
            # Store before `[DONE]` reaches the client: SDKs stop reading there and may chain at once.
            saved = True
            unstored = await asyncio.shield(save_quietly(save, translator.final_response))
            if unstored is not None:
                frames = frames.removesuffix(DONE_FRAME) + not_stored_chunk(unstored)
        if frames:
            try:
                await response.write(frames)
            except (ConnectionResetError, RuntimeError) as exc:
                raise ClientGone from exc

    try:
        try:
            async for chunk in engine.content.iter_any():
                await send(client.feed(decoder.feed(chunk)))
                if client.ended:
                    break
            else:
                await send(client.feed(decoder.flush()) + client.end())
        except StreamCut:  # the drain deadline: what was streamed is stored incomplete, with an error chunk
            engine.close()
            translator.incomplete("max_output_tokens")
            await send(encode_sse(None, orjson.dumps(chat_error(CUT_MESSAGE, CUT_CODE))))
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("engine stream failed: %s", failure_reason(exc))
            await send(client.fail(f"The engine failed mid-stream: {failure_reason(exc)}."))
        except ClientGone:
            raise
        except Exception:
            # The headers are out: the client still gets a well-formed end, never a 500 inside the body.
            log.exception("relaying the engine's chat stream failed")
            await send(client.fail("The sidecar could not relay the engine's stream."))
    except (ClientGone, asyncio.CancelledError) as exc:
        await settle_departed_client(engine, translator, save, saved=saved)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return response
    finally:
        drain.untrack(engine)
        engine.release()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response
