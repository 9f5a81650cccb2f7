"""`POST /v1/responses`: resolve the history, send the engine all of it, stream or return, store the turn."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..appkeys import CONTEXT, METRICS, STORE, UPSTREAM
from ..context.packs import PACK_HEADER
from ..context.prompt import Prompt, pack_fingerprint
from ..errors import InvalidRequest, UpstreamError
from ..fingerprint import estimate_tokens
from ..middleware import REQUEST_ID, TENANT
from ..quota import take_background_slot
from ..runs.context import RUNS
from ..runs.follow import follow_run
from ..runs.lease import SLOT_STALE_MS
from ..runs.record import RunRecord
from ..store import TurnResult
from ..stored_items import decode_items
from ..turns import TurnPlan, plan_turn, record_response, turn_settled
from ..upstream import EngineAnswer
from ..wire.chat_messages import items_to_messages
from ..wire.chat_translate import ChatStreamTranslator, chat_completion_to_output, responses_to_chat_request
from ..wire.resource import build_response_resource
from ..wire.stream_repair import ResponsesStreamRewriter, rewrite_response
from ..wire.stream_state import MalformedEvent
from ..wire.translator import StreamTranslator
from .common import engine_headers, idempotency_key, if_match, read_json, request_hash, stateful_headers
from .engine_answer import read_engine_json
from .replay import replay_stored
from .responses_request import CreateRequest, parse_create, prompt_inputs, responses_engine_body
from .sse_relay import EventSink, SSESink, relay_stream

routes = web.RouteTableDef()


@routes.post("/v1/responses")
async def create_response(request: web.Request) -> web.StreamResponse:
    raw, body = await read_json(request)
    if body.get("background") is True:
        return await _create_background(request, raw, body)
    create = parse_create(body)
    plan, headers, idem, hashed = await plan_create(request, raw, create)
    store = request.app[STORE]
    if plan.replay is not None:  # the key was used before with this body: its first answer, no engine call
        return await replay_stored(
            request, store, plan.tenant, plan.replay, stream=create.stream, headers=headers
        )
    # From here a refusal (of the request or by the engine) gives back the reserved id and the key.
    async with turn_settled(store, plan):
        return await _answer(request, create, plan, headers, idem, hashed)


async def plan_create(
    request: web.Request, raw: bytes, create: CreateRequest
) -> tuple[TurnPlan, dict[str, str], str | None, str]:
    """What every create call does before the engine (foreground or background): an unknown X-Prompt-Pack
    refused before anything is reserved, the turn planned (history resolved, id reserved, key claimed),
    its stateful headers; with the idempotency key and the request hash the turn is stored under."""
    pack, _ = request.app[CONTEXT].choose(create.model, request.headers.get(PACK_HEADER))
    idem = idempotency_key(request)
    hashed = request_hash(raw, "responses")
    plan = await plan_turn(
        request.app[STORE],
        request[TENANT],
        previous_response_id=create.previous_response_id,
        conversation_id=create.conversation_id,
        idempotency_key=idem,
        request_hash=hashed,
        new_items=create.items,
        will_store=create.store,
        if_match=if_match(request),
    )
    headers = stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=plan.conversation_id,
        # Streams send headers before the write: the version the write makes, unless another lands first.
        version=plan.version + 1 if create.store else plan.version,
        # Every other path sets the prompt's own (turn_prompt) before answering, and a replay the one stored
        # with its first call: this is only for a first call stored before records kept theirs.
        fingerprint=""
        if plan.replay is None
        else pack_fingerprint(pack, create.body.get("tools"), chat_tools=False),
        estimated_tokens=estimate_tokens(plan.history_bytes),
        response_id=plan.response_id,
    )
    return plan, headers, idem, hashed


# What a session (WebSocket mode) keeps of each turn: its plan, its final response, what was stored.
KeepTurn = Callable[[TurnPlan, dict[str, Any], TurnResult | None], None]


async def answer_in_session(
    request: web.Request, create: CreateRequest, plan: TurnPlan, hashed: str, sink: EventSink, keep: KeepTurn
) -> None:
    """WebSocket mode (ws_session.py): a planned turn streamed to `sink` as POST streams it (no idempotency
    key: a message has no headers), given back if it ends unstored; `keep` sees how each turn ended."""
    async with turn_settled(request.app[STORE], plan):
        await _answer(request, create, plan, {}, None, hashed, sink, keep)


async def _answer(
    request: web.Request,
    create: CreateRequest,
    plan: TurnPlan,
    headers: dict[str, str],
    idem: str | None,
    hashed: str,
    sink: EventSink | None = None,
    keep: KeepTurn | None = None,
) -> web.StreamResponse:
    base = _response_base(create, plan, "in_progress")
    store, upstream = request.app[STORE], request.app[UPSTREAM]
    api = await upstream.ensure_api()
    prompt = await turn_prompt(request, create, plan)
    headers["X-Prefix-Fingerprint"] = plan.fingerprint = prompt.fingerprint
    headers["X-Estimated-Input-Tokens"] = str(prompt.input_tokens)
    path, engine_body = _engine_request(api, create, plan, prompt)
    engine_response = await upstream.post(path, engine_body, engine_headers(request))

    async def save(final: dict[str, Any]) -> TurnResult | None:
        request.app[METRICS].observe_usage(final.get("usage"))
        result = None
        if create.store:
            result = await record_response(store, plan, final, idempotency_key=idem, request_hash=hashed)
        if keep is not None:
            keep(plan, final, result)
        return result

    if not create.stream:
        final = await _complete(engine_response, api, base, plan)
        result = await save(final)
        if result is not None and result.replayed:
            # A call with the same key was stored first (its claim had lapsed): answer with its response.
            return await replay_stored(request, store, plan.tenant, result, stream=False, headers=headers)
        if result is not None:
            headers["X-Conversation-Version"] = str(result.version)  # non-stream: the version after the write
        return web.Response(body=orjson.dumps(final), content_type="application/json", headers=headers)

    translator = _translator(api, base, plan)
    sink = sink or SSESink(request, headers)
    await relay_stream(request, engine_response, translator, sink, save)
    return sink.response


def _response_base(create: CreateRequest, plan: TurnPlan, status: str) -> dict[str, Any]:
    """The response object the turn starts from (`in_progress`, or `queued` for a background run)."""
    return build_response_resource(
        response_id=plan.response_id,
        created_at=int(time.time()),
        status=status,
        model=create.model,
        output=[],
        request=create.body,
        previous_response_id=create.previous_response_id,
        conversation_id=plan.conversation_id if plan.in_conversation else None,
    )


def _translator(api: str, base: dict[str, Any], plan: TurnPlan) -> StreamTranslator:
    """The engine's events as the client's: repaired Responses events, or translated chat chunks."""
    if api == "responses":
        return ResponsesStreamRewriter(base, plan.mint)
    return ChatStreamTranslator(base, plan.mint)


async def turn_prompt(request: web.Request, create: CreateRequest, plan: TurnPlan) -> Prompt:
    """The turn's prompt (docs/api.md §7): pack first, the history folded per the model's policy, then the
    new input. Raises context_length_exceeded: call it where a refusal gives the reserved turn back."""
    return await request.app[CONTEXT].turn_prompt(
        plan.conversation_id,
        stores_turn=create.store,  # store: false writes nothing, summaries included
        **prompt_inputs(request, create, plan),
    )


def _engine_request(api: str, create: CreateRequest, plan: TurnPlan, prompt: Prompt) -> tuple[str, bytes]:
    """The engine's path and body, from the turn's prompt (turn_prompt)."""
    items, instructions = prompt.items, prompt.system
    body, first_input = prompt.engine_fields(create.body), prompt.first_input
    if api == "responses":
        return "/v1/responses", responses_engine_body(body, items, stream=create.stream)
    messages = items_to_messages(decode_items(items), instructions, first_input=first_input)
    chat = responses_to_chat_request({**body, "stream": create.stream}, messages)
    return "/v1/chat/completions", orjson.dumps(chat)


async def _complete(
    engine_response: EngineAnswer, api: str, base: dict[str, Any], plan: TurnPlan
) -> dict[str, Any]:
    """A non-streamed answer as the sidecar's response object; nothing is stored on failure."""
    answer = await read_engine_json(engine_response)
    try:
        if api == "responses":
            return rewrite_response(answer, base, plan.mint)
        output, usage, status, details = chat_completion_to_output(answer, plan.mint)
    except Exception as exc:  # whatever an answer of the wrong shape trips: the engine's fault, a 502
        raise UpstreamError(f"The engine's answer is not a valid {api} answer: {_reason(exc)}.") from None
    now = int(time.time())
    final = {**base, "status": status, "output": output, "usage": usage}
    final["completed_at"] = now if status == "completed" else None
    final["incomplete_details"] = details
    return final


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, MalformedEvent) else exc.__class__.__name__


async def _create_background(request: web.Request, raw: bytes, body: dict[str, Any]) -> web.StreamResponse:
    """`background: true`: the run starts on this replica and the call returns at once, queued (or, with
    `stream`, follows the run's event log, which a client may drop and resume anywhere)."""
    create = parse_create(body)
    if not create.store:
        raise InvalidRequest("Background mode requires 'store' to be true.", param="background")
    plan, headers, idem, hashed = await plan_create(request, raw, create)
    store, upstream = request.app[STORE], request.app[UPSTREAM]
    if plan.replay is not None:
        return await replay_stored(
            request, store, plan.tenant, plan.replay, stream=create.stream, headers=headers
        )
    async with turn_settled(store, plan):
        api = await upstream.ensure_api()
        prompt = await turn_prompt(request, create, plan)  # context_length_exceeded: a 400, nothing kept
        headers["X-Prefix-Fingerprint"] = plan.fingerprint = prompt.fingerprint
        headers["X-Estimated-Input-Tokens"] = str(prompt.input_tokens)
        path, engine_body = _engine_request(api, dataclasses.replace(create, stream=True), plan, prompt)
        headers_for_engine = engine_headers(request)
        base = _response_base(create, plan, "queued")
        translator = _translator(api, base, plan)
        # Over the tenant's background quota: a 429, and the turn given back (nothing stored).
        holds_slot = await take_background_slot(request.app, plan.tenant, plan.response_id, SLOT_STALE_MS)
        record = RunRecord.of(plan, base, idem, hashed, holds_slot=holds_slot)
        try:
            await request.app[RUNS].start(
                dataclasses.replace(plan),
                record,
                translator,
                lambda: upstream.post(path, engine_body, headers_for_engine),
            )
        except BaseException:
            if holds_slot:
                await store.release_run_slot(plan.tenant, plan.response_id)
            raise
        plan.reserved = False  # the run holds the reservation now: it stores the turn or gives it back
    if create.stream:
        runner = request.app[RUNS]
        return await follow_run(request, store, runner, plan.tenant, plan.response_id, -1, headers)
    return web.Response(body=orjson.dumps(base), content_type="application/json", headers=headers)
