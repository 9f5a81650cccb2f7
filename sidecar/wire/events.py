"""Builders for Responses streaming events; `sequence_number` is stamped later by the stream state."""

from __future__ import annotations

from typing import Any

JSONObject = dict[str, Any]

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
LIFECYCLE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
TERMINAL_BY_STATUS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}


def lifecycle(event_type: str, response: JSONObject) -> JSONObject:
    return {"type": event_type, "response": response}


def unstored(terminal: JSONObject, message: str) -> JSONObject:
    """A stream's terminal event for an answer the store could not keep: `response.failed`, saying why, so
    no client chains from an id that was never stored."""
    response = {
        **terminal["response"],
        "status": "failed",
        "completed_at": None,
        "incomplete_details": None,
        "error": {"code": "server_error", "message": message},
    }
    return {**terminal, "type": "response.failed", "response": response}


def output_item_added(output_index: int, item: JSONObject) -> JSONObject:
    return {"type": "response.output_item.added", "output_index": output_index, "item": item}


def output_item_done(output_index: int, item: JSONObject) -> JSONObject:
    return {"type": "response.output_item.done", "output_index": output_index, "item": item}


def content_part_added(item_id: str, output_index: int, content_index: int, part: JSONObject) -> JSONObject:
    return {
        "type": "response.content_part.added",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "part": part,
    }


def content_part_done(item_id: str, output_index: int, content_index: int, part: JSONObject) -> JSONObject:
    return {
        "type": "response.content_part.done",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "part": part,
    }


def output_text_delta(item_id: str, output_index: int, content_index: int, delta: str) -> JSONObject:
    return {
        "type": "response.output_text.delta",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "delta": delta,
        "logprobs": [],
    }


def output_text_done(item_id: str, output_index: int, content_index: int, text: str) -> JSONObject:
    return {
        "type": "response.output_text.done",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "text": text,
        "logprobs": [],
    }


def refusal_delta(item_id: str, output_index: int, content_index: int, delta: str) -> JSONObject:
    return {
        "type": "response.refusal.delta",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "delta": delta,
    }


def refusal_done(item_id: str, output_index: int, content_index: int, refusal: str) -> JSONObject:
    return {
        "type": "response.refusal.done",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "refusal": refusal,
    }


def refusal_part(refusal: str = "") -> JSONObject:
    return {"type": "refusal", "refusal": refusal}


def reasoning_text_delta(item_id: str, output_index: int, content_index: int, delta: str) -> JSONObject:
    return {
        "type": "response.reasoning_text.delta",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "delta": delta,
    }


def reasoning_text_done(item_id: str, output_index: int, content_index: int, text: str) -> JSONObject:
    return {
        "type": "response.reasoning_text.done",
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
        "text": text,
    }


def function_call_arguments_delta(item_id: str, output_index: int, delta: str) -> JSONObject:
    return {
        "type": "response.function_call_arguments.delta",
        "item_id": item_id,
        "output_index": output_index,
        "delta": delta,
    }


def function_call_arguments_done(item_id: str, output_index: int, arguments: str) -> JSONObject:
    return {
        "type": "response.function_call_arguments.done",
        "item_id": item_id,
        "output_index": output_index,
        "arguments": arguments,
    }


def error_event(message: str, code: str | None, param: str | None = None) -> JSONObject:
    """The stream-level `error` event; the Open Responses spec nests the payload, OpenAI's SDK reads
    `code`/`message`/`param` at the top level, so both are present."""
    return {
        "type": "error",
        "code": code,
        "message": message,
        "param": param,
        "error": {"type": "server_error", "code": code, "message": message, "param": param},
    }


def output_text_part(text: str = "") -> JSONObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_text_part(text: str = "") -> JSONObject:
    return {"type": "reasoning_text", "text": text}
