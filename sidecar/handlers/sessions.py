"""The session API (/v1/sessions/...): state without the proxy, for gateways (docs/api.md §2)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from aiohttp import web

from ..appkeys import CONTEXT, STORE
from ..context.compaction import check_compaction_items
from ..context.packs import PACK_HEADER
from ..errors import (
    ContextLengthExceeded,
    InvalidRequest,
    NotFound,
    conversation_not_found,
    response_not_found,
)
from ..ids import conversation_tag, parse_response_id, validate_client_id
from ..middleware import REQUEST_ID, TENANT
from ..store.base import History, IdempotencyInFlight, IdempotencyKeyReused, Store, Turn
from ..stored_items import with_minted_ids
from ..wire.chat_messages import json_array
from ..wire.resource import complete_output_item
from .common import (
    idempotency_key,
    if_match,
    json_response,
    load_conversation,
    path_conversation_id,
    read_json,
    request_hash,
    stateful_headers,
)
from .item_appends import append_items
from .session_bodies import items_to_append, output_of, previous_response_id_of, record_of
from .session_prompt import check_pack, counters_after_write, history_prompt, model_query, read_headers

routes = web.RouteTableDef()


@routes.post("/v1/sessions/{conversation_id}/append")
async def append(request: web.Request) -> web.Response:
    conversation_id = path_conversation_id(request)
    raw, body = await read_json(request)
    items = items_to_append(body)
    previous = previous_response_id_of(body)
    check_pack(request)
    tenant = request[TENANT]
    await check_compaction_items(request.app[CONTEXT].compaction, tenant, items, "items")
    result, stored = await append_items(
        request.app[STORE],
        Turn(
            tenant=tenant,
            conversation_id=conversation_id,
            items=[],
            n_input=0,
            parent_response_id=previous,  # a branch after an older response; it becomes the head
            if_match=if_match(request),
            idempotency_key=idempotency_key(request),
            request_hash=request_hash(raw, "append"),
        ),
        items,
        tag=conversation_tag(tenant, conversation_id),
    )
    fingerprint, tokens = await counters_after_write(
        request, conversation_id, result.session_bytes, len(stored)
    )
    answer = {
        "conversation_id": conversation_id,
        "version": result.version,
        "appended": result.appended,
        "prefix_fingerprint": fingerprint,
        "estimated_input_tokens": tokens,
        "session_size_bytes": result.session_bytes,
    }
    headers = stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=conversation_id,
        version=result.version,
        fingerprint=fingerprint,
        estimated_tokens=tokens,
    )
    return json_response(answer, headers)


@routes.get("/v1/sessions/resolve")
async def resolve(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    store = request.app[STORE]
    previous = request.query.get("previous_response_id")
    conversation = request.query.get("conversation_id")
    if bool(previous) == bool(conversation):
        raise InvalidRequest(
            "Give exactly one of 'previous_response_id' or 'conversation_id'.", param="previous_response_id"
        )
    history: History | None
    if previous:
        history = await store.resolve_response(tenant, previous)
        if history is None:
            raise response_not_found(previous)
    else:
        assert conversation is not None
        history = await store.resolve_conversation(
            tenant, validate_client_id(conversation, "conversation_id")
        )
        if history is None:
            raise conversation_not_found(conversation)
    prompt = await history_prompt(
        request,
        history.items,
        model=model_query(request),
        conversation_id=history.conversation_id,
        summaries=history.summaries,
        history_param="previous_response_id" if previous else "conversation_id",
    )
    fingerprint, tokens = prompt.fingerprint, prompt.input_tokens
    answer = {
        "conversation_id": history.conversation_id,
        "response_id": history.response_id,
        "version": history.version,
        "messages": prompt.chat_messages(),
        "prefix_fingerprint": fingerprint,
        "estimated_input_tokens": tokens,
    }
    headers = stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=history.conversation_id,
        version=history.version,
        fingerprint=fingerprint,
        estimated_tokens=tokens,
        response_id=history.response_id,
    )
    return json_response(answer, headers)


@routes.post("/v1/sessions/{conversation_id}/store_response")
async def store_response(request: web.Request) -> web.Response:
    conversation_id = path_conversation_id(request)
    raw, body = await read_json(request)
    items, kept = output_of(body)
    previous = previous_response_id_of(body)
    if not items:
        raise InvalidRequest("The response has no output to store.", param="output")
    check_pack(request)
    tenant = request[TENANT]
    await check_compaction_items(request.app[CONTEXT].compaction, tenant, items, "output")
    tag = conversation_tag(tenant, conversation_id)
    store = request.app[STORE]
    alias, key, hashed = (
        _chosen_response_id(body),
        idempotency_key(request),
        request_hash(raw, "store_response"),
    )
    owner = f"{key}\x00{hashed}" if key else ""  # a retry of this very request may find the id taken by it
    if alias is not None:
        await _claim_alias(store, tenant, alias, owner)
    try:
        result = await store.append_turn(
            Turn(
                tenant=tenant,
                conversation_id=conversation_id,
                items=with_minted_ids([complete_output_item(item) for item in items], tag),
                n_input=0,
                parent_response_id=previous,
                mint_response=True,
                response_body=record_of(kept),
                if_match=if_match(request),
                idempotency_key=key,
                request_hash=hashed,
            )
        )
    except BaseException:
        if alias is not None:
            await store.settle_alias(tenant, alias, None, owner)
        raise
    assert result.response_id is not None
    if alias is not None:
        await store.settle_alias(tenant, alias, result.response_id, owner)
    # The gateway's id, when it chose one: every route that takes a response id finds the response by it.
    stored_id = alias or result.response_id
    answer = {"conversation_id": conversation_id, "response_id": stored_id, "version": result.version}
    fingerprint, tokens = await counters_after_write(request, conversation_id, result.session_bytes, 0)
    headers = stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=conversation_id,
        version=result.version,
        fingerprint=fingerprint,
        estimated_tokens=tokens,
        response_id=stored_id,
    )
    return json_response(answer, headers)


async def _claim_alias(store: Store, tenant: str, alias: str, owner: str) -> None:
    """Take the chosen id for this write. Taken already: a retry of the request that took it (same
    Idempotency-Key and body) goes on, and its write replays; anyone else is refused."""
    held = await store.claim_alias(tenant, alias, owner)
    if held is None:
        return
    minted, holder = held
    if owner and holder != owner and holder.partition("\x00")[0] == owner.partition("\x00")[0]:
        raise IdempotencyKeyReused(alias)  # this key, with another body: 409 as on every keyed write
    if not owner or holder != owner:
        raise InvalidRequest(f"A response with id '{alias}' already exists.", param="response_id")
    if minted == "?":
        raise IdempotencyInFlight(alias)


def _chosen_response_id(body: dict[str, Any]) -> str | None:
    """store_response's optional "response_id" (CONTRACT §2): a gateway's own id for the response, kept as
    an alias of the one the store mints. Not one shaped like those: it would name another slot's record."""
    chosen = body.get("response_id")
    if chosen is None:
        return None
    validate_client_id(chosen, "response_id")
    if parse_response_id(chosen) is not None:
        raise InvalidRequest(
            "Invalid 'response_id': ids of this shape are the store's own; choose another or omit it.",
            param="response_id",
            code="invalid_id",
        )
    return str(chosen)


@routes.post("/v1/sessions/{conversation_id}/trim")
async def trim(request: web.Request) -> web.Response:
    """What the engine would get with these limits (over the model's policy), folded as the proxy folds
    it: `truncation` "auto", so it fits or answers context_length_exceeded. Nothing is stored: the folds
    are a pure function of the history, so the next turn under the same policy sends the same bytes."""
    _, body = await read_json(request)
    for name in body:
        if name not in _TRIM_FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=str(name))
    for name in ("keep_last_turns", "max_input_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise InvalidRequest(f"Invalid '{name}': expected a non-negative integer.", param=name)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("Invalid type for 'model': expected a string.", param="model")
    context = request.app[CONTEXT]
    _, policy = context.choose(model, request.headers.get(PACK_HEADER))
    override = dataclasses.replace(
        policy,
        keep_last_turns=body.get("keep_last_turns", policy.keep_last_turns),
        max_input_tokens=body.get("max_input_tokens", policy.max_input_tokens),
    )
    conversation_id, history = await load_conversation(request)
    try:
        prompt = await history_prompt(
            request,
            history.items,
            model=model,
            override=override,
            truncation="auto",
            conversation_id=conversation_id,
            summaries=history.summaries,
        )
    except ContextLengthExceeded as exc:
        exc.param = "max_input_tokens" if body.get("max_input_tokens") is not None else None
        raise
    answer = {
        "conversation_id": conversation_id,
        "version": history.version,
        "summarised_turns": prompt.summarised_turns,
        "estimated_input_tokens": prompt.input_tokens,
        "prefix_fingerprint": prompt.fingerprint,
    }
    return json_response(answer, read_headers(request, conversation_id, history, prompt))


@routes.get("/v1/sessions/{conversation_id}")
async def get_session(request: web.Request) -> web.Response:
    conversation_id, history = await load_conversation(request)
    prompt = await history_prompt(
        request,
        history.items,
        model=model_query(request),
        conversation_id=conversation_id,
        summaries=history.summaries,
    )
    head = orjson.dumps(
        {
            "conversation_id": conversation_id,
            "version": history.version,
            "turns": history.turns,
            "session_size_bytes": history.session_bytes,
            "estimated_input_tokens": prompt.input_tokens,
            "prefix_fingerprint": prompt.fingerprint,
            "created_at": history.created_ms // 1000,
            "updated_at": history.updated_ms // 1000,
        }
    )
    # Stored item bytes are spliced in as they are (never decoded and re-encoded), in one allocation.
    body = json_array(history.items, head[:-1] + b',"items":', b"}")
    return json_response(body, read_headers(request, conversation_id, history, prompt))


@routes.delete("/v1/sessions/{conversation_id}")
async def delete_session(request: web.Request) -> web.Response:
    conversation_id = path_conversation_id(request)
    if not await request.app[STORE].delete_conversation(request[TENANT], conversation_id):
        raise NotFound(f"Conversation with id '{conversation_id}' not found.")
    return json_response({"conversation_id": conversation_id, "object": "session.deleted", "deleted": True})


# -- the prompt the engine would get (docs/api.md §7) ---------------------------------------------------

_TRIM_FIELDS = frozenset({"keep_last_turns", "max_input_tokens", "model"})
