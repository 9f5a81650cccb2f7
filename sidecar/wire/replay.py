"""The event stream of a response that is already finished: for idempotent replays of a streamed call."""

from __future__ import annotations

from typing import Any

from . import events as ev

JSONObject = dict[str, Any]


def replay_events(resource: JSONObject) -> list[JSONObject]:
    """created → in_progress → each output item with its parts and one delta each → the terminal event,
    numbered from 0; what a client would have seen had it streamed the call itself."""
    opening = {**resource, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
    out: list[JSONObject] = [
        ev.lifecycle("response.created", opening),
        ev.lifecycle("response.in_progress", opening),
    ]
    for index, item in enumerate(resource.get("output") or []):
        out.extend(_item_events(index, item))
    status = resource.get("status") or "completed"
    out.append(ev.lifecycle(ev.TERMINAL_BY_STATUS.get(status, "response.completed"), resource))
    for number, event in enumerate(out):
        event["sequence_number"] = number
    return out


def _item_events(index: int, item: JSONObject) -> list[JSONObject]:
    item_id = item.get("id", "")
    kind = item.get("type")
    if kind == "message":
        shell = {**item, "status": "in_progress", "content": []}
    elif kind == "function_call":
        shell = {**item, "status": "in_progress", "arguments": ""}
    else:
        shell = dict(item)
    out = [ev.output_item_added(index, shell)]
    if kind == "message":
        for part_index, part in enumerate(item.get("content") or []):
            text = part.get("text", "")
            empty = {**part, "text": ""} if part.get("type") == "output_text" else part
            out.append(ev.content_part_added(item_id, index, part_index, empty))
            if part.get("type") == "output_text":
                out.append(ev.output_text_delta(item_id, index, part_index, text))
                out.append(ev.output_text_done(item_id, index, part_index, text))
            out.append(ev.content_part_done(item_id, index, part_index, part))
    elif kind == "function_call":
        arguments = item.get("arguments", "")
        out.append(ev.function_call_arguments_delta(item_id, index, arguments))
        out.append(ev.function_call_arguments_done(item_id, index, arguments))
    out.append(ev.output_item_done(index, item))
    return out
