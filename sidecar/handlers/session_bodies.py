"""What the session API's write bodies hold (docs/api.md §2): the items an append brings, the output a
`store_response` hands over and the record kept of it, and the response to branch after."""

from __future__ import annotations

import time
from typing import Any

from ..errors import InvalidRequest
from ..response_record import compact_record
from ..wire.chat_messages import message_to_items, messages_to_items
from ..wire.items import check_item_count, parse_input, parse_item
from ..wire.resource import build_response_resource

# The fields each body may hold (docs/api.md §2): one of the forms, optionally `previous_response_id`. An
# unknown field is refused, not ignored: a gateway that misspells one must not branch or store silently wrong.
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})
_APPEND_FORMS = ("items", "messages", "role")
_STORE_FORMS = ("response", "output", "message")


def _check_fields(body: dict[str, Any], forms: tuple[str, ...], allowed: frozenset[str]) -> None:
    given = [form for form in forms if form in body]
    if len(given) > 1:
        raise InvalidRequest(f"Send only one of {', '.join(map(repr, given))}.", param=given[1])
    for name in body:
        if name not in allowed:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=str(name))


def previous_response_id_of(body: dict[str, Any]) -> str | None:
    """The response to branch after (the conversation's head when absent)."""
    previous = body.get("previous_response_id")
    if previous is None:
        return None
    if not isinstance(previous, str) or not previous:
        raise InvalidRequest(
            "Invalid type for 'previous_response_id': expected a non-empty string.",
            param="previous_response_id",
        )
    return previous


def items_to_append(body: dict[str, Any]) -> list[dict[str, Any]]:
    allowed = {"items", "messages", "previous_response_id"}
    if "role" in body:
        allowed |= _MESSAGE_FIELDS
    _check_fields(body, _APPEND_FORMS, frozenset(allowed))
    if "items" in body:
        if not isinstance(body["items"], list):
            raise InvalidRequest("Invalid type for 'items': expected an array.", param="items")
        items = parse_input(body["items"], "items")
    elif "messages" in body:
        items = messages_to_items(body["messages"])
    elif "role" in body:
        message = {k: v for k, v in body.items() if k != "previous_response_id"}
        items = message_to_items(message, "message")
    else:
        raise InvalidRequest("Send a message {role, content}, or 'messages', or 'items'.", param="messages")
    if not items:
        raise InvalidRequest(
            "Nothing to append: the list is empty.", param="items" if "items" in body else "messages"
        )
    return items


def output_of(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Output items and the response fields worth keeping, from any of the accepted shapes."""
    _check_fields(body, _STORE_FORMS, frozenset({*_STORE_FORMS, "response_id", "previous_response_id"}))
    if "response" in body:
        response = body["response"]
        if not isinstance(response, dict):
            raise InvalidRequest("Invalid type for 'response': expected an object.", param="response")
        if response.get("object") == "chat.completion" or "choices" in response:
            choices = response.get("choices")
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                raise InvalidRequest("'response.choices' must hold a message.", param="response.choices")
            items = message_to_items(choices[0].get("message"), "response.choices[0].message")
        else:
            output = response.get("output")
            if not isinstance(output, list):
                raise InvalidRequest(
                    "Invalid type for 'response.output': expected an array.", param="response.output"
                )
            check_item_count(output, "response.output")
            items = [parse_item(o, f"response.output[{i}]") for i, o in enumerate(output)]
        kept = {k: response[k] for k in ("model", "usage", "created_at", "created") if k in response}
        return items, kept
    if "output" in body:
        if not isinstance(body["output"], list):
            raise InvalidRequest("Invalid type for 'output': expected an array.", param="output")
        check_item_count(body["output"], "output")
        return [parse_item(o, f"output[{i}]") for i, o in enumerate(body["output"])], {}
    if "message" in body:
        return message_to_items(body["message"], "message"), {}
    raise InvalidRequest("Send 'response', 'output' or 'message'.", param="response")


def record_of(kept: dict[str, Any]) -> bytes:
    """The stored record of a response a gateway hands over, so GET /v1/responses/{id} serves a complete
    response object (chat usage becomes Responses usage)."""
    created = kept.get("created_at") or kept.get("created")
    created = created if isinstance(created, int) else int(time.time())
    usage = kept.get("usage")
    resource = build_response_resource(
        response_id="",
        created_at=created,
        status="completed",
        model=str(kept.get("model") or ""),
        output=[],
        request={},
        usage=usage if isinstance(usage, dict) else None,
        completed_at=created,
    )
    return compact_record(resource)
