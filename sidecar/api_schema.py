"""JSON Schema of the sidecar's own routes: request bodies, queries and answers, keyed by (method, path).

The enums and bounds come from the parsers' own constants (roles, item and part types, `include` values, id
syntax, list and metadata limits), so the published document cannot disagree with what they check; the
shapes are pinned by tests/fuzz (every body a parser accepts validates here, every route is documented,
and schemathesis checks the live answers against these schemas).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ids import CLIENT_ID_PATTERN
from .wire.chat_messages import CHAT_ROLES
from .wire.items import (
    ASSISTANT_PART_TYPES,
    INPUT_PART_TYPES,
    ITEM_TYPES,
    MAX_ITEMS_PER_REQUEST,
    MESSAGE_ROLES,
)

Schema = dict[str, Any]

# Bounds the handlers check (handlers/pagination.py, conversations.py, responses_request.py) and publish.
PAGE_LIMIT_MIN, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT = 1, 100, 20
CONVERSATION_ITEMS_PER_CALL = 20
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
# The `include` values the Responses API defines (the openai SDK's ResponseIncludable).
INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)


def _enum(values: frozenset[str]) -> Schema:
    return {"type": "string", "enum": sorted(values)}


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        **extra,
    }


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
NULLABLE_COUNT: Schema = {"type": ["integer", "null"], "minimum": 0}
CLIENT_ID: Schema = {"type": "string", "pattern": CLIENT_ID_PATTERN}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}

ERROR: Schema = _object(
    {
        "error": _object(
            {"message": STRING, "type": STRING, "param": NULLABLE_STRING, "code": NULLABLE_STRING},
            additionalProperties=False,
        )
    },
    additionalProperties=False,
)

METADATA: Schema = {
    "type": "object",
    "maxProperties": METADATA_PAIRS,
    "propertyNames": {"maxLength": METADATA_KEY_CHARS},
    "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_CHARS},
}

# What the parsers check, no more: a field they ignore for this role or type is left unconstrained (the
# fuzz suite fails if a body they accept is refused here).
CONTENT_PART: Schema = {
    "anyOf": [STRING, _object({"type": _enum(INPUT_PART_TYPES | ASSISTANT_PART_TYPES | {"text"})})]
}
CONTENT: Schema = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": CONTENT_PART}]}
# A Responses input item: `type` (default "message" when a `role` is given) says which fields it needs.
ITEM: Schema = {
    "type": "object",
    "properties": {"type": _enum(ITEM_TYPES), "id": {"description": "ignored: the sidecar mints item ids"}},
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "message"}}},
            "then": _object({"role": _enum(MESSAGE_ROLES), "content": CONTENT}),
        },
        {
            "if": _object({"type": {"const": "function_call"}}),
            "then": _object({"call_id": {"type": "string", "minLength": 1}, "name": STRING}),
        },
        {
            "if": _object({"type": {"const": "function_call_output"}}),
            "then": _object(
                {"call_id": {"type": "string", "minLength": 1}, "output": {"type": ["string", "array"]}}
            ),
        },
        {
            "if": _object({"type": {"const": "compaction"}}),
            "then": _object({"encrypted_content": {"type": "string", "minLength": 1}}),
        },
    ],
}
ITEMS: Schema = {"type": "array", "items": ITEM, "maxItems": MAX_ITEMS_PER_REQUEST}
# A chat message: `content` a string or parts (null beside `tool_calls`); `tool_calls` on an assistant
# message, `tool_call_id` on a tool message; other roles' extra fields are ignored.
CHAT_MESSAGE: Schema = _object(
    {"role": _enum(CHAT_ROLES)},
    {"content": {}, "name": {}, "tool_calls": {}, "tool_call_id": {}, "refusal": {}},
)
CHAT_MESSAGES: Schema = {"type": "array", "items": CHAT_MESSAGE, "maxItems": MAX_ITEMS_PER_REQUEST}
STORED_ITEM: Schema = _object({"id": STRING, "type": STRING})
ITEM_LIST: Schema = _object(
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": STORED_ITEM},
        "first_id": NULLABLE_STRING,
        "last_id": NULLABLE_STRING,
        "has_more": {"type": "boolean"},
    }
)
# One server-sent event of a stream (`stream: true`): its `event` name and its JSON `data`.
SSE_EVENT: Schema = _object({"data": STRING}, {"event": STRING, "id": STRING})
RESPONSE_OBJECT: Schema = _object(
    {"id": STRING, "object": {"const": "response"}, "status": STRING, "output": {"type": "array"}}
)
CONVERSATION: Schema = _object(
    {"id": STRING, "object": {"const": "conversation"}, "created_at": INTEGER, "metadata": {"type": "object"}}
)


def _deleted(kind: str, id_field: str = "id") -> Schema:
    return _object({id_field: STRING, "object": {"const": kind}, "deleted": {"const": True}})


PREVIOUS_RESPONSE: Schema = {"previous_response_id": {"type": ["string", "null"], "minLength": 1}}
CLOSED = {"additionalProperties": False}  # the session API refuses fields it does not know
MESSAGE_FIELDS = CHAT_MESSAGE["properties"]


@dataclass(frozen=True)
class Operation:
    """One route's documentation: what it takes and what it answers (200 unless `status` says)."""

    summary: str
    answer: Schema | None = None  # None: not JSON (see `content_type`)
    body: Schema | None = None
    query: dict[str, Schema] = field(default_factory=dict)
    headers: dict[str, Schema] = field(default_factory=dict)
    content_type: str = "application/json"
    other_answers: dict[str, Schema] = field(default_factory=dict)  # status -> body, besides errors
    tags: tuple[str, ...] = ()


WRITE_HEADERS: dict[str, Schema] = {
    "Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 255},
    "If-Match": {"type": "string", "pattern": '^(W/)?"?[0-9]{1,15}"?$'},
}
PAGE_QUERY: dict[str, Schema] = {
    "limit": {"type": "integer", "minimum": PAGE_LIMIT_MIN, "maximum": PAGE_LIMIT_MAX},
    "order": {"type": "string", "enum": ["asc", "desc"]},
    "after": STRING,
}

SESSION_COUNTERS = {"prefix_fingerprint": STRING, "estimated_input_tokens": COUNT}

OPERATIONS: dict[tuple[str, str], Operation] = {
    # -- the session API --------------------------------------------------------------------------
    ("POST", "/v1/sessions/{conversation_id}/append"): Operation(
        "Append a message, chat messages or Responses items (optionally after an older response)",
        body={
            "anyOf": [
                _object({"role": MESSAGE_FIELDS["role"]}, {**MESSAGE_FIELDS, **PREVIOUS_RESPONSE}, **CLOSED),
                _object({"messages": CHAT_MESSAGES}, PREVIOUS_RESPONSE, **CLOSED),
                _object({"items": ITEMS}, PREVIOUS_RESPONSE, **CLOSED),
            ]
        },
        headers=WRITE_HEADERS,
        answer=_object(
            {
                "conversation_id": STRING,
                "version": COUNT,
                "appended": COUNT,
                "session_size_bytes": COUNT,
                **SESSION_COUNTERS,
            }
        ),
        tags=("sessions",),
    ),
    ("GET", "/v1/sessions/resolve"): Operation(
        "The chat history a response or a conversation resolves to, as the engine would get it",
        query={"previous_response_id": STRING, "conversation_id": CLIENT_ID, "model": STRING},
        answer=_object(
            {
                "conversation_id": STRING,
                "response_id": NULLABLE_STRING,
                "version": COUNT,
                "messages": {"type": "array", "items": {"type": "object"}},
                **SESSION_COUNTERS,
            }
        ),
        tags=("sessions",),
    ),
    ("POST", "/v1/sessions/{conversation_id}/store_response"): Operation(
        "Store a response a gateway got from the engine (Responses or chat.completion object, items, "
        "or a message)",
        body={
            "anyOf": [
                _object({"response": {"type": "object"}}, PREVIOUS_RESPONSE, **CLOSED),
                _object({"output": ITEMS}, PREVIOUS_RESPONSE, **CLOSED),
                _object({"message": CHAT_MESSAGE}, PREVIOUS_RESPONSE, **CLOSED),
            ]
        },
        headers=WRITE_HEADERS,
        answer=_object({"conversation_id": STRING, "response_id": STRING, "version": COUNT}),
        tags=("sessions",),
    ),
    ("POST", "/v1/sessions/{conversation_id}/trim"): Operation(
        "Trim what is sent to the engine (never what is stored)",
        body=_object(
            {},
            {"keep_last_turns": NULLABLE_COUNT, "max_input_tokens": NULLABLE_COUNT, "model": NULLABLE_STRING},
        ),
        answer=_object(
            {"conversation_id": STRING, "version": COUNT, "summarised_turns": COUNT, **SESSION_COUNTERS}
        ),
        tags=("sessions",),
    ),
    ("GET", "/v1/sessions/{conversation_id}"): Operation(
        "A conversation's counters and every stored item, in order",
        query={"model": STRING},
        answer=_object(
            {
                "conversation_id": STRING,
                "version": COUNT,
                "turns": COUNT,
                "session_size_bytes": COUNT,
                "created_at": INTEGER,
                "updated_at": INTEGER,
                "items": {"type": "array", "items": STORED_ITEM},
                **SESSION_COUNTERS,
            }
        ),
        tags=("sessions",),
    ),
    ("DELETE", "/v1/sessions/{conversation_id}"): Operation(
        "Delete a conversation and every response in it",
        answer=_deleted("session.deleted", "conversation_id"),
        tags=("sessions",),
    ),
    # -- the Responses API ----------------------------------------------------------------------------
    ("POST", "/v1/responses"): Operation(
        "Create a response: the stored history is resolved and sent to the engine in full",
        body=_object(
            {},
            {
                "model": STRING,
                "input": {"anyOf": [STRING, ITEMS]},
                "instructions": NULLABLE_STRING,
                "previous_response_id": NULLABLE_STRING,
                "conversation": {"anyOf": [CLIENT_ID, _object({"id": CLIENT_ID}), {"type": "null"}]},
                "store": {"type": ["boolean", "null"]},
                "stream": {"type": ["boolean", "null"]},
                "background": {"type": ["boolean", "null"]},
                "metadata": {"anyOf": [METADATA, {"type": "null"}]},
                "tools": {"type": ["array", "null"]},
                "include": {"type": ["array", "null"], "items": _enum(INCLUDABLE)},
            },
        ),
        headers={"Idempotency-Key": WRITE_HEADERS["Idempotency-Key"]},
        answer=RESPONSE_OBJECT,
        other_answers={"200 text/event-stream": SSE_EVENT},
        tags=("responses",),
    ),
    ("GET", "/v1/responses"): Operation(
        "WebSocket mode: with `Upgrade: websocket` the socket takes `response.create` messages (the create "
        "body) and sends each streaming event as one JSON text message, errors as `{type: error, status, "
        "error}` (docs/api.md); without the upgrade the request is the engine's",
        headers={"Upgrade": {"type": "string", "enum": ["websocket"]}},
        tags=("responses",),
    ),
    ("GET", "/v1/responses/{response_id}"): Operation(
        "A stored response (a background one's progress); with stream=true a background run's events "
        "again, after `starting_after`",
        query={"stream": {"type": "string", "enum": ["true", "false"]}, "starting_after": INTEGER},
        answer=RESPONSE_OBJECT,
        other_answers={"200 text/event-stream": SSE_EVENT},
        tags=("responses",),
    ),
    ("DELETE", "/v1/responses/{response_id}"): Operation(
        "Delete a stored response", answer=_deleted("response"), tags=("responses",)
    ),
    ("POST", "/v1/responses/{response_id}/cancel"): Operation(
        "Cancel a background response still running", answer=RESPONSE_OBJECT, tags=("responses",)
    ),
    ("GET", "/v1/responses/{response_id}/input_items"): Operation(
        "The items that formed a response's input, paginated",
        query=PAGE_QUERY,
        answer=ITEM_LIST,
        tags=("responses",),
    ),
    # -- the Conversations API ------------------------------------------------------------------------
    ("POST", "/v1/conversations"): Operation(
        "Create a conversation",
        body=_object(
            {},
            {
                "metadata": {"anyOf": [METADATA, {"type": "null"}]},
                "items": {"anyOf": [{**ITEMS, "maxItems": CONVERSATION_ITEMS_PER_CALL}, {"type": "null"}]},
            },
        ),
        answer=CONVERSATION,
        tags=("conversations",),
    ),
    ("GET", "/v1/conversations/{conversation_id}"): Operation(
        "A conversation", answer=CONVERSATION, tags=("conversations",)
    ),
    ("POST", "/v1/conversations/{conversation_id}"): Operation(
        "Replace a conversation's metadata",
        body=_object({"metadata": {"anyOf": [METADATA, {"type": "null"}]}}),
        answer=CONVERSATION,
        tags=("conversations",),
    ),
    ("DELETE", "/v1/conversations/{conversation_id}"): Operation(
        "Delete a conversation", answer=_deleted("conversation.deleted"), tags=("conversations",)
    ),
    ("POST", "/v1/conversations/{conversation_id}/items"): Operation(
        "Add items to a conversation",
        body=_object({"items": {**ITEMS, "minItems": 1, "maxItems": CONVERSATION_ITEMS_PER_CALL}}),
        answer=ITEM_LIST,
        tags=("conversations",),
    ),
    ("GET", "/v1/conversations/{conversation_id}/items"): Operation(
        "A conversation's items, paginated", query=PAGE_QUERY, answer=ITEM_LIST, tags=("conversations",)
    ),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): Operation(
        "One item of a conversation", answer=STORED_ITEM, tags=("conversations",)
    ),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): Operation(
        "Delete an item from a conversation's current history",
        answer=CONVERSATION,
        tags=("conversations",),
    ),
    # -- stateful chat completions ----------------------------------------------------------------------
    ("POST", "/v1/chat/completions"): Operation(
        "Chat completions; with X-Conversation-Id or X-Previous-Response-Id the stored history is "
        "prepended and the turn stored (without either, the engine's own route, passed through)",
        body=_object({"messages": CHAT_MESSAGES}),
        headers={
            "X-Conversation-Id": CLIENT_ID,
            "X-Previous-Response-Id": STRING,
            "Idempotency-Key": WRITE_HEADERS["Idempotency-Key"],
        },
        answer=_object({"id": STRING, "object": {"const": "chat.completion"}, "choices": {"type": "array"}}),
        other_answers={"200 text/event-stream": SSE_EVENT},
        tags=("chat",),
    ),
    # -- the sidecar's own endpoints ------------------------------------------------------------------
    ("GET", "/convostore/healthz"): Operation(
        "Alive", answer=_object({"status": {"const": "ok"}}), tags=("ops",)
    ),
    ("GET", "/convostore/readyz"): Operation(
        "Ready: the store and the engine are reachable",
        answer=_object({"status": {"const": "ready"}, "upstream_api": STRING}),
        other_answers={"503": _object({"status": STRING, "reasons": {"type": "array", "items": STRING}})},
        tags=("ops",),
    ),
    ("GET", "/convostore/metrics"): Operation("Prometheus metrics", content_type="text/plain", tags=("ops",)),
    ("GET", "/convostore/openapi.json"): Operation(
        "This document", answer={"type": "object", "required": ["openapi", "paths"]}, tags=("ops",)
    ),
}

# Counting and compaction take the create body (the same parser) and answer without a turn.
_CREATE_BODY = OPERATIONS[("POST", "/v1/responses")].body
OPERATIONS[("POST", "/v1/responses/input_tokens")] = Operation(
    "Count the input tokens of the prompt a create call with this body would send (nothing is stored)",
    body=_CREATE_BODY,
    answer=_object({"object": {"const": "response.input_tokens"}, "input_tokens": COUNT}),
    tags=("responses",),
)
OPERATIONS[("POST", "/v1/responses/compact")] = Operation(
    "Compact a window: the last turns kept, the rest one compaction item (nothing is stored)",
    body=_CREATE_BODY,
    answer=_object(
        {
            "id": STRING,
            "object": {"const": "response.compaction"},
            "created_at": INTEGER,
            "output": {"type": "array", "items": STORED_ITEM},
            "usage": _object({"input_tokens": COUNT, "output_tokens": COUNT, "total_tokens": COUNT}),
        }
    ),
    tags=("responses",),
)

# Path parameters by name: conversation ids become part of Redis keys, so their syntax is checked.
PATH_PARAMETERS: dict[str, Schema] = {
    "conversation_id": CLIENT_ID,
    "response_id": {"type": "string", "minLength": 1},
    "item_id": {"type": "string", "minLength": 1},
}
