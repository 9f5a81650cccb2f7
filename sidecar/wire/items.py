"""Validate Responses input items and bring them to their one canonical shape (pure, no I/O)."""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from ..errors import InvalidRequest
from ..normalise import canonical_json, canonical_json_text, normalise_text

Item = dict[str, Any]

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
INPUT_PART_TYPES = frozenset({"input_text", "input_image", "input_file", "input_audio"})
ASSISTANT_PART_TYPES = frozenset({"output_text", "refusal"})
ITEM_TYPES = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "item_reference", "compaction"}
)


# Items one request may carry: a turn is written in one script, which a huge list would hold up (and the
# event loop with it) for every other conversation.
MAX_ITEMS_PER_REQUEST = 10_000


def check_item_count(value: list[Any], param: str) -> None:
    if len(value) > MAX_ITEMS_PER_REQUEST:
        raise InvalidRequest(
            f"Invalid '{param}': at most {MAX_ITEMS_PER_REQUEST} items per request, got {len(value)}.",
            param=param,
            code="array_above_max_length",
        )


def is_one_of(value: Any, allowed: frozenset[str]) -> TypeGuard[str]:
    """Membership for a value from a request body: a list or an object is no member (and unhashable)."""
    return isinstance(value, str) and value in allowed


def parse_input(value: Any, param: str = "input") -> list[Item]:
    """A create body's `input`: a string is one user message; a list holds items."""
    if isinstance(value, str):
        return [_message("user", value, param)]
    if not isinstance(value, list):
        raise InvalidRequest(f"Invalid type for '{param}': expected a string or an array.", param=param)
    check_item_count(value, param)
    return [parse_item(item, f"{param}[{i}]") for i, item in enumerate(value)]


def parse_item(raw: Any, param: str) -> Item:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.", param=param)
    item_type = raw.get("type", "message" if "role" in raw else None)
    if not is_one_of(item_type, ITEM_TYPES):
        raise InvalidRequest(
            f"Invalid value for '{param}.type': {item_type!r} is not a supported item type.",
            param=f"{param}.type",
            code="invalid_value",
        )
    if item_type == "message":
        item = _parse_message(raw, param)
    elif item_type == "function_call":
        item = {
            "type": "function_call",
            "call_id": _string(raw, "call_id", param),
            "name": _string(raw, "name", param),
            "arguments": canonical_json_text(_string(raw, "arguments", param, allow_empty=True)),
        }
    elif item_type == "function_call_output":
        output = raw.get("output")
        if isinstance(output, str):
            normalised: Any = normalise_text(output)
        elif isinstance(output, list):
            normalised = [
                _parse_part(p, f"{param}.output[{i}]", INPUT_PART_TYPES) for i, p in enumerate(output)
            ]
        else:
            raise InvalidRequest(
                f"Invalid type for '{param}.output': expected a string or an array.", param=f"{param}.output"
            )
        item = {
            "type": "function_call_output",
            "call_id": _string(raw, "call_id", param),
            "output": normalised,
        }
    elif item_type == "item_reference":
        item = {"type": "item_reference", "id": _string(raw, "id", param)}
    elif item_type == "compaction":  # its token is checked where it is expanded (context/compaction.py)
        item = {"type": "compaction", "encrypted_content": _string(raw, "encrypted_content", param)}
    else:  # reasoning items are opaque: stored and re-sent as given
        item = dict(_canonical_value(raw))
    if "status" in raw and item_type in ("message", "function_call", "function_call_output"):
        item["status"] = _string(raw, "status", param)
    if isinstance(raw.get("id"), str) and raw["id"]:
        item["id"] = raw["id"]
    return item


def _parse_message(raw: Item, param: str) -> Item:
    role = raw.get("role")
    if not is_one_of(role, MESSAGE_ROLES):
        raise InvalidRequest(
            f"Invalid value for '{param}.role': {role!r}; expected one of "
            "'user', 'assistant', 'system' or 'developer'.",
            param=f"{param}.role",
            code="invalid_value",
        )
    return _message(role, raw.get("content"), f"{param}.content")


def _message(role: str, content: Any, content_param: str) -> Item:
    """Canonical content is always a list of parts: a plain string and a lone text part are the same."""
    allowed = ASSISTANT_PART_TYPES if role == "assistant" else INPUT_PART_TYPES
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        if content == "":
            raise InvalidRequest(f"Invalid '{content_param}': empty content.", param=content_param)
        parts = [_text_part(text_type, content)]
    elif isinstance(content, list):
        if not content:
            raise InvalidRequest(f"Invalid '{content_param}': empty content.", param=content_param)
        parts = [_parse_part(p, f"{content_param}[{i}]", allowed) for i, p in enumerate(content)]
    else:
        raise InvalidRequest(
            f"Invalid type for '{content_param}': expected a string or an array of content parts.",
            param=content_param,
        )
    return {"type": "message", "role": role, "content": parts}


def _text_part(part_type: str, text: str) -> Item:
    part: Item = {"type": part_type, "text": normalise_text(text)}
    if part_type == "output_text":
        part["annotations"] = []
    return part


def _parse_part(raw: Any, param: str, allowed: frozenset[str]) -> Item:
    if isinstance(raw, str):
        return _text_part("output_text" if "output_text" in allowed else "input_text", raw)
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.", param=param)
    part_type = raw.get("type")
    # Chat-style and assistant-echo parts are accepted and mapped onto the role's own text type.
    if part_type in ("text", "input_text", "output_text") and isinstance(raw.get("text"), str):
        text_type = "output_text" if "output_text" in allowed else "input_text"
        part = _text_part(text_type, raw["text"])
        if text_type == "output_text" and isinstance(raw.get("annotations"), list):
            part["annotations"] = _canonical_value(raw["annotations"])
        return part
    if not is_one_of(part_type, allowed):
        raise InvalidRequest(
            f"Invalid value for '{param}.type': {part_type!r} is not a supported content part here.",
            param=f"{param}.type",
            code="invalid_value",
        )
    if part_type == "refusal":
        return {"type": "refusal", "refusal": normalise_text(_string(raw, "refusal", param))}
    part = dict(_canonical_value(raw))
    return part


def _string(raw: Item, field: str, param: str, *, allow_empty: bool = False) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or (not allow_empty and value == ""):
        raise InvalidRequest(
            f"Missing or invalid '{param}.{field}': expected a non-empty string.", param=f"{param}.{field}"
        )
    return normalise_text(value)


def _canonical_value(value: Any) -> Any:
    return orjson.loads(canonical_json(value))
