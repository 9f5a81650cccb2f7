"""JSON Schema building blocks for the sidecar's routes: items, chat messages, metadata, stored items and
lists, errors, and the answers several routes share.

The enums and bounds come from the parsers' own constants (roles, item and part types, id syntax, list and
metadata limits), so the published document cannot disagree with what they check.
"""

from __future__ import annotations

from typing import Any

from .api_limits import METADATA_KEY_CHARS, METADATA_PAIRS, METADATA_VALUE_CHARS
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


def enum_schema(values: frozenset[str]) -> Schema:
    return {"type": "string", "enum": sorted(values)}


def object_schema(
    required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any
) -> Schema:
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

ERROR: Schema = object_schema(
    {
        "error": object_schema(
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
    "anyOf": [
        STRING,
        object_schema({"type": enum_schema(INPUT_PART_TYPES | ASSISTANT_PART_TYPES | {"text"})}),
    ]
}
CONTENT: Schema = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": CONTENT_PART}]}
# A Responses input item: `type` (default "message" when a `role` is given) says which fields it needs.
ITEM: Schema = {
    "type": "object",
    "properties": {
        "type": enum_schema(ITEM_TYPES),
        "id": {"description": "ignored: the sidecar mints item ids"},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "message"}}},
            "then": object_schema({"role": enum_schema(MESSAGE_ROLES), "content": CONTENT}),
        },
        {
            "if": object_schema({"type": {"const": "function_call"}}),
            "then": object_schema({"call_id": {"type": "string", "minLength": 1}, "name": STRING}),
        },
        {
            "if": object_schema({"type": {"const": "function_call_output"}}),
            "then": object_schema(
                {"call_id": {"type": "string", "minLength": 1}, "output": {"type": ["string", "array"]}}
            ),
        },
        {
            "if": object_schema({"type": {"const": "compaction"}}),
            "then": object_schema({"encrypted_content": {"type": "string", "minLength": 1}}),
        },
    ],
}
ITEMS: Schema = {"type": "array", "items": ITEM, "maxItems": MAX_ITEMS_PER_REQUEST}
# A chat message: `content` a string or parts (null beside `tool_calls`); `tool_calls` on an assistant
# message, `tool_call_id` on a tool message; other roles' extra fields are ignored.
CHAT_MESSAGE: Schema = object_schema(
    {"role": enum_schema(CHAT_ROLES)},
    {"content": {}, "name": {}, "tool_calls": {}, "tool_call_id": {}, "refusal": {}},
)
CHAT_MESSAGES: Schema = {"type": "array", "items": CHAT_MESSAGE, "maxItems": MAX_ITEMS_PER_REQUEST}
STORED_ITEM: Schema = object_schema({"id": STRING, "type": STRING})
ITEM_LIST: Schema = object_schema(
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": STORED_ITEM},
        "first_id": NULLABLE_STRING,
        "last_id": NULLABLE_STRING,
        "has_more": {"type": "boolean"},
    }
)
# One server-sent event of a stream (`stream: true`): its `event` name and its JSON `data`.
SSE_EVENT: Schema = object_schema({"data": STRING}, {"event": STRING, "id": STRING})
RESPONSE_OBJECT: Schema = object_schema(
    {"id": STRING, "object": {"const": "response"}, "status": STRING, "output": {"type": "array"}}
)
CONVERSATION: Schema = object_schema(
    {"id": STRING, "object": {"const": "conversation"}, "created_at": INTEGER, "metadata": {"type": "object"}}
)
