"""Request-body reading and the stateful response headers shared by every stateful route."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import orjson
from aiohttp import web

from ..appkeys import CONFIG, STORE, UPSTREAM
from ..errors import BodyTooLarge, InvalidRequest, RequestTimeout, conversation_not_found
from ..ids import validate_client_id
from ..middleware import TENANT
from ..store import History

# Deeper JSON than this is refused: stored items are nested a few levels further inside records, and orjson
# refuses to write more than 254 levels (it reads up to 1024), which would surface later as a 500.
MAX_JSON_DEPTH = 128
_VERSION = re.compile(r"[0-9]{1,15}")


async def read_body(request: web.Request) -> bytes:
    config = request.app[CONFIG]
    limit = config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"Request body of {request.content_length} bytes exceeds the limit of {limit}.")
    if request.content.is_eof():  # the whole body came with the headers: nothing to wait for, no timer
        body = await request.read()
    else:
        try:
            async with asyncio.timeout(config.client_timeout_seconds):
                body = await request.read()
        except TimeoutError:
            raise RequestTimeout("The request body was not received in time.") from None
    if len(body) > limit:
        raise BodyTooLarge(f"Request body exceeds the limit of {limit} bytes.")
    return body


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    # Counting brackets runs at C speed and clears almost every body without walking it.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _nesting_exceeds(data, MAX_JSON_DEPTH):
        raise InvalidRequest(
            f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.", code="invalid_json"
        )
    return data


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: a deep body must not exhaust our stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def read_json(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    """The raw body (for idempotency hashing) and its parsed object."""
    body = await read_body(request)
    return body, parse_json_object(body)


def request_hash(body: bytes, *extra: str) -> str:
    digest = hashlib.blake2b(body, digest_size=16)
    for part in extra:
        digest.update(b"\x00" + part.encode())
    return digest.hexdigest()


def if_match(request: web.Request) -> int | None:
    value = request.headers.get("If-Match")
    if value is None:
        return None
    value = value.strip().strip('"').removeprefix("W/").strip('"')
    # ASCII digits only (str.isdigit also takes '²', which int() refuses), and few enough that the version
    # is exact in a Lua number.
    if not _VERSION.fullmatch(value):
        raise InvalidRequest("If-Match must be a conversation version (an integer).", param="If-Match")
    return int(value)


def idempotency_key(request: web.Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    # Printable only: no control characters, and none of the surrogate escapes that stand for bytes that were
    # not UTF-8 (the key is hashed and stored as text).
    if not 0 < len(value) <= 255 or not value.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters.", param="Idempotency-Key")
    return value


def engine_headers(request: web.Request) -> dict[str, str]:
    """The headers a turn's engine call carries: the client's key only when the sidecar checks none itself."""
    return request.app[UPSTREAM].headers(
        request.headers, forward_client_key=request.app[CONFIG].auth == "none"
    )


def stateful_headers(
    *,
    request_id: str,
    conversation_id: str,
    version: int,
    fingerprint: str,
    estimated_tokens: int,
    response_id: str | None = None,
) -> dict[str, str]:
    headers = {
        "X-Request-Id": request_id,
        "X-Conversation-Id": conversation_id,
        "X-Conversation-Version": str(version),
        "X-Prefix-Fingerprint": fingerprint,
        "X-Estimated-Input-Tokens": str(estimated_tokens),
    }
    if response_id:
        headers["X-Response-Id"] = response_id
    return headers


def json_response(
    body: bytes | dict[str, Any], headers: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def path_conversation_id(request: web.Request) -> str:
    """The `{conversation_id}` of the route, checked: it becomes part of Redis keys."""
    return validate_client_id(request.match_info["conversation_id"], "conversation_id")


async def load_conversation(request: web.Request, conversation_id: str | None = None) -> tuple[str, History]:
    """The route's conversation (or the one named) and its history, or 404."""
    conversation_id = conversation_id or path_conversation_id(request)
    history = await request.app[STORE].resolve_conversation(request[TENANT], conversation_id)
    if history is None:
        raise conversation_not_found(conversation_id)
    return conversation_id, history
