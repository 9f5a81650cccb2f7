"""The Conversations API: create, get, update, delete, and the items of a conversation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..api_limits import CONVERSATION_ITEMS_PER_CALL
from ..appkeys import CONTEXT, STORE
from ..context.compaction import check_compaction_items
from ..errors import ConvoStoreError, InvalidRequest, NotFound, conversation_not_found
from ..fingerprint import estimate_tokens, prefix_fingerprint
from ..ids import conversation_id_for_idempotency_key, conversation_tag, mint_conversation_id
from ..middleware import REQUEST_ID, TENANT
from ..store.base import History, Turn
from ..stored_items import decode_items, listed, with_sidecar_ids
from ..wire.items import parse_input
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
from .pagination import page_items
from .responses_request import check_metadata
from .session_prompt import check_pack, counters_after_write, history_prompt, read_headers

routes = web.RouteTableDef()

MAX_ITEMS_PER_CALL = CONVERSATION_ITEMS_PER_CALL


def _conversation_object(conversation_id: str, history: History) -> dict[str, Any]:
    metadata = orjson.loads(history.body) if history.body else {}
    return {
        "id": conversation_id,
        "object": "conversation",
        "created_at": history.created_ms // 1000,
        "metadata": metadata,
    }


async def _read_headers(request: web.Request, conversation_id: str, history: History) -> dict[str, str]:
    """The stateful headers (CONTRACT §3) of a route that has the conversation in hand: its version for
    If-Match, and the prompt it would give the engine next. The Conversations API's own answer never
    depends on them: a prompt that cannot be built (a pack header naming no pack, a stored compaction item
    that no longer verifies) leaves them estimated."""
    try:
        prompt = await history_prompt(
            request, history.items, model=None, conversation_id=conversation_id, summaries=history.summaries
        )
    except ConvoStoreError:
        return stateful_headers(
            request_id=request[REQUEST_ID],
            conversation_id=conversation_id,
            version=history.version,
            fingerprint=prefix_fingerprint(),
            estimated_tokens=estimate_tokens(history.session_bytes),
            response_id=history.response_id,
        )
    return read_headers(request, conversation_id, history, prompt)


async def _write_headers(
    request: web.Request, conversation_id: str, version: int, session_bytes: int, appended: int
) -> dict[str, str]:
    """The stateful headers after an append: the new version, and the prompt it leaves."""
    fingerprint, tokens = await counters_after_write(request, conversation_id, session_bytes, appended)
    return stateful_headers(
        request_id=request[REQUEST_ID],
        conversation_id=conversation_id,
        version=version,
        fingerprint=fingerprint,
        estimated_tokens=tokens,
    )


def _items_param(body: dict[str, Any], *, required: bool) -> list[dict[str, Any]]:
    raw = body.get("items")
    if raw is None and not required:
        return []
    if not isinstance(raw, list) or (required and not raw):
        raise InvalidRequest("Invalid 'items': expected a non-empty array.", param="items")
    if len(raw) > MAX_ITEMS_PER_CALL:
        raise InvalidRequest(f"Invalid 'items': at most {MAX_ITEMS_PER_CALL} items per call.", param="items")
    return parse_input(raw, "items")


@dataclass(frozen=True, slots=True)
class _Keyed:
    conversation_id: str
    key: str | None
    hashed: str
    seed: str


def _keyed(request: web.Request, raw: bytes, route: str, conversation_id: str | None) -> _Keyed:
    """A write's Idempotency-Key, its request hash and the seed of its item ids; a keyed new conversation's
    id derives from the key, so a retry lands in the conversation the first call made."""
    key = idempotency_key(request)
    tenant = request[TENANT]
    if conversation_id is None:
        conversation_id = conversation_id_for_idempotency_key(tenant, key) if key else mint_conversation_id()
    seed = f"{tenant}\x00{conversation_id}\x00{key}" if key else ""
    return _Keyed(conversation_id, key, request_hash(raw, route), seed)


@routes.post("/v1/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    raw, body = await read_json(request)
    check_pack(request)
    metadata = body.get("metadata")
    check_metadata(metadata)  # before `or {}`: a metadata of [] or 0 is refused, not read as none
    metadata = metadata or {}
    items = _items_param(body, required=False)
    tenant = request[TENANT]
    await check_compaction_items(request.app[CONTEXT].compaction, tenant, items, "items")
    keyed = _keyed(request, raw, "conversations", None)
    conversation_id = keyed.conversation_id
    stored = with_sidecar_ids(
        items, conversation_tag(tenant, conversation_id), seed=keyed.seed, param="items"
    )
    result = await request.app[STORE].append_turn(
        Turn(
            tenant,
            conversation_id,
            stored,
            n_input=len(stored),
            conversation_metadata=orjson.dumps(metadata),
            idempotency_key=keyed.key,
            request_hash=keyed.hashed,
        )
    )
    if result.replayed:  # the key's first call made it: answered as it was, its creation time included
        _, history = await load_conversation(request, conversation_id)
        headers = await _read_headers(request, conversation_id, history)
        return json_response(_conversation_object(conversation_id, history), headers)
    headers = await _write_headers(
        request, conversation_id, result.version, result.session_bytes, len(stored)
    )
    return json_response(
        {
            "id": conversation_id,
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": metadata,
        },
        headers,
    )


@routes.get("/v1/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    conversation_id, history = await load_conversation(request)
    headers = await _read_headers(request, conversation_id, history)
    return json_response(_conversation_object(conversation_id, history), headers)


@routes.post("/v1/conversations/{conversation_id}")
async def update_conversation(request: web.Request) -> web.Response:
    _, body = await read_json(request)
    if "metadata" not in body:
        raise InvalidRequest("Missing required parameter: 'metadata'.", param="metadata")
    check_metadata(body["metadata"])
    check_pack(request)
    conversation_id = path_conversation_id(request)
    store = request.app[STORE]
    if not await store.set_conversation_metadata(
        request[TENANT], conversation_id, orjson.dumps(body["metadata"] or {})
    ):
        raise conversation_not_found(conversation_id)
    _, history = await load_conversation(request)
    headers = await _read_headers(request, conversation_id, history)
    return json_response(_conversation_object(conversation_id, history), headers)


@routes.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(request: web.Request) -> web.Response:
    conversation_id = path_conversation_id(request)
    if not await request.app[STORE].delete_conversation(request[TENANT], conversation_id):
        raise conversation_not_found(conversation_id)
    return json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


@routes.post("/v1/conversations/{conversation_id}/items")
async def add_items(request: web.Request) -> web.Response:
    conversation_id = path_conversation_id(request)
    raw, body = await read_json(request)
    items = _items_param(body, required=True)
    check_pack(request)
    tenant = request[TENANT]
    await check_compaction_items(request.app[CONTEXT].compaction, tenant, items, "items")
    keyed = _keyed(request, raw, "items", conversation_id)
    # A retry with the key stores nothing and answers with the same items (their ids derive from it).
    result, stored = await append_items(
        request.app[STORE],
        Turn(
            tenant,
            conversation_id,
            [],
            n_input=0,
            create=False,
            if_match=if_match(request),
            idempotency_key=keyed.key,
            request_hash=keyed.hashed,
        ),
        items,
        tag=conversation_tag(tenant, conversation_id),
        seed=keyed.seed,
    )
    data = [listed(orjson.loads(b)) for _, b in stored]
    headers = await _write_headers(
        request, conversation_id, result.version, result.session_bytes, len(stored)
    )
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
            "has_more": False,
        },
        headers,
    )


@routes.get("/v1/conversations/{conversation_id}/items")
async def list_items(request: web.Request) -> web.Response:
    conversation_id, history = await load_conversation(request)
    page = page_items([listed(item) for item in decode_items(history.items)], request.query)
    return json_response(page, await _read_headers(request, conversation_id, history))


def _find(history: History, item_id: str) -> dict[str, Any]:
    for item in decode_items(history.items):
        if item.get("id") == item_id:
            return item
    raise NotFound(f"Item with id '{item_id}' not found.")


@routes.get("/v1/conversations/{conversation_id}/items/{item_id}")
async def get_item(request: web.Request) -> web.Response:
    conversation_id, history = await load_conversation(request)
    item = listed(_find(history, request.match_info["item_id"]))
    return json_response(item, await _read_headers(request, conversation_id, history))


@routes.delete("/v1/conversations/{conversation_id}/items/{item_id}")
async def delete_item(request: web.Request) -> web.Response:
    conversation_id = path_conversation_id(request)
    item_id = request.match_info["item_id"]
    check_pack(request)
    store = request.app[STORE]
    if await store.remove_item(request[TENANT], conversation_id, item_id) is None:
        if await store.resolve_conversation(request[TENANT], conversation_id) is None:
            raise conversation_not_found(conversation_id)
        raise NotFound(f"Item with id '{item_id}' not found.")
    _, history = await load_conversation(request)
    headers = await _read_headers(request, conversation_id, history)
    return json_response(_conversation_object(conversation_id, history), headers)
