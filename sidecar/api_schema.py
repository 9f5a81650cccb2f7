"""JSON Schema of the sidecar's own routes: request bodies, queries and answers, keyed by (method, path).

The shapes come from api_shapes.py and the bounds from api_limits.py, both taken from the parsers' own
constants; the table is pinned by tests/fuzz (every body a parser accepts validates here, every route is
documented, and schemathesis checks the live answers against these schemas).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .api_limits import CONVERSATION_ITEMS_PER_CALL, INCLUDABLE, PAGE_LIMIT_MAX, PAGE_LIMIT_MIN
from .api_shapes import (
    CHAT_MESSAGE,
    CHAT_MESSAGES,
    CLIENT_ID,
    CONVERSATION,
    COUNT,
    INTEGER,
    ITEM_LIST,
    ITEMS,
    METADATA,
    NULLABLE_COUNT,
    NULLABLE_STRING,
    RESPONSE_OBJECT,
    SSE_EVENT,
    STORED_ITEM,
    STRING,
    Schema,
    enum_schema,
    object_schema,
)


def _deleted(kind: str, id_field: str = "id") -> Schema:
    return object_schema({id_field: STRING, "object": {"const": kind}, "deleted": {"const": True}})


PREVIOUS_RESPONSE: Schema = {"previous_response_id": {"type": ["string", "null"], "minLength": 1}}
# store_response's optional id of the gateway's choosing (CONTRACT §2), besides previous_response_id.
STORE_RESPONSE_OPTIONS: Schema = {
    **PREVIOUS_RESPONSE,
    "response_id": {"anyOf": [CLIENT_ID, {"type": "null"}]},
}
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
                object_schema(
                    {"role": MESSAGE_FIELDS["role"]}, {**MESSAGE_FIELDS, **PREVIOUS_RESPONSE}, **CLOSED
                ),
                object_schema({"messages": CHAT_MESSAGES}, PREVIOUS_RESPONSE, **CLOSED),
                object_schema({"items": ITEMS}, PREVIOUS_RESPONSE, **CLOSED),
            ]
        },
        headers=WRITE_HEADERS,
        answer=object_schema(
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
        answer=object_schema(
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
                object_schema({"response": {"type": "object"}}, STORE_RESPONSE_OPTIONS, **CLOSED),
                object_schema({"output": ITEMS}, STORE_RESPONSE_OPTIONS, **CLOSED),
                object_schema({"message": CHAT_MESSAGE}, STORE_RESPONSE_OPTIONS, **CLOSED),
            ]
        },
        headers=WRITE_HEADERS,
        answer=object_schema({"conversation_id": STRING, "response_id": STRING, "version": COUNT}),
        tags=("sessions",),
    ),
    ("POST", "/v1/sessions/{conversation_id}/trim"): Operation(
        "Trim what is sent to the engine (never what is stored)",
        body=object_schema(
            {},
            {"keep_last_turns": NULLABLE_COUNT, "max_input_tokens": NULLABLE_COUNT, "model": NULLABLE_STRING},
        ),
        answer=object_schema(
            {"conversation_id": STRING, "version": COUNT, "summarised_turns": COUNT, **SESSION_COUNTERS}
        ),
        tags=("sessions",),
    ),
    ("GET", "/v1/sessions/{conversation_id}"): Operation(
        "A conversation's counters and every stored item, in order",
        query={"model": STRING},
        answer=object_schema(
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
        body=object_schema(
            {},
            {
                "model": STRING,
                "input": {"anyOf": [STRING, ITEMS]},
                "instructions": NULLABLE_STRING,
                "previous_response_id": NULLABLE_STRING,
                "conversation": {"anyOf": [CLIENT_ID, object_schema({"id": CLIENT_ID}), {"type": "null"}]},
                "store": {"type": ["boolean", "null"]},
                "stream": {"type": ["boolean", "null"]},
                "background": {"type": ["boolean", "null"]},
                "metadata": {"anyOf": [METADATA, {"type": "null"}]},
                "tools": {"type": ["array", "null"]},
                "include": {"type": ["array", "null"], "items": enum_schema(INCLUDABLE)},
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
        body=object_schema(
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
        body=object_schema({"metadata": {"anyOf": [METADATA, {"type": "null"}]}}),
        answer=CONVERSATION,
        tags=("conversations",),
    ),
    ("DELETE", "/v1/conversations/{conversation_id}"): Operation(
        "Delete a conversation", answer=_deleted("conversation.deleted"), tags=("conversations",)
    ),
    ("POST", "/v1/conversations/{conversation_id}/items"): Operation(
        "Add items to a conversation",
        body=object_schema({"items": {**ITEMS, "minItems": 1, "maxItems": CONVERSATION_ITEMS_PER_CALL}}),
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
        body=object_schema({"messages": CHAT_MESSAGES}),
        headers={
            "X-Conversation-Id": CLIENT_ID,
            "X-Previous-Response-Id": STRING,
            "Idempotency-Key": WRITE_HEADERS["Idempotency-Key"],
        },
        answer=object_schema(
            {"id": STRING, "object": {"const": "chat.completion"}, "choices": {"type": "array"}}
        ),
        other_answers={"200 text/event-stream": SSE_EVENT},
        tags=("chat",),
    ),
    # -- the sidecar's own endpoints ------------------------------------------------------------------
    ("GET", "/convostore/healthz"): Operation(
        "Alive", answer=object_schema({"status": {"const": "ok"}}), tags=("ops",)
    ),
    ("GET", "/convostore/readyz"): Operation(
        "Ready: the store and the engine are reachable",
        answer=object_schema({"status": {"const": "ready"}, "upstream_api": STRING}),
        other_answers={
            "503": object_schema({"status": STRING, "reasons": {"type": "array", "items": STRING}})
        },
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
    answer=object_schema({"object": {"const": "response.input_tokens"}, "input_tokens": COUNT}),
    tags=("responses",),
)
OPERATIONS[("POST", "/v1/responses/compact")] = Operation(
    "Compact a window: the last turns kept, the rest one compaction item (nothing is stored)",
    body=_CREATE_BODY,
    answer=object_schema(
        {
            "id": STRING,
            "object": {"const": "response.compaction"},
            "created_at": INTEGER,
            "output": {"type": "array", "items": STORED_ITEM},
            "usage": object_schema({"input_tokens": COUNT, "output_tokens": COUNT, "total_tokens": COUNT}),
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
