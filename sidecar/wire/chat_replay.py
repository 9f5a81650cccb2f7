"""A stored response as the chat completion (or chunks) a stateful chat client gets on a replay (pure)."""

from __future__ import annotations

from typing import Any

from .chat_messages import items_to_messages

JSONObject = dict[str, Any]


def chat_completion(resource: JSONObject) -> JSONObject:
    """The `chat.completion` object of a stored response: its output as one assistant message."""
    message = _assistant_message(resource)
    return {
        "id": _completion_id(resource),
        "object": "chat.completion",
        "created": resource.get("created_at") or 0,
        "model": resource.get("model") or "",
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(resource, message)}],
        "usage": _usage(resource),
    }


def chat_chunks(resource: JSONObject, *, include_usage: bool) -> list[JSONObject]:
    """The `chat.completion.chunk`s a client streaming the call would have received, without `[DONE]`."""
    message = _assistant_message(resource)
    head = {
        "id": _completion_id(resource),
        "object": "chat.completion.chunk",
        "created": resource.get("created_at") or 0,
        "model": resource.get("model") or "",
    }
    deltas: list[JSONObject] = [{"role": "assistant", "content": ""}]
    if message.get("content"):
        deltas.append({"content": message["content"]})
    for index, call in enumerate(message.get("tool_calls") or []):
        deltas.append({"tool_calls": [{"index": index, **call}]})
    chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    finish = _finish_reason(resource, message)
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": _usage(resource)})
    return chunks


def _assistant_message(resource: JSONObject) -> JSONObject:
    messages = items_to_messages(list(resource.get("output") or []))
    content = "".join(m["content"] for m in messages if isinstance(m.get("content"), str))
    calls = [call for m in messages for call in m.get("tool_calls") or []]
    message: JSONObject = {"role": "assistant", "content": content or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _finish_reason(resource: JSONObject, message: JSONObject) -> str:
    if resource.get("status") == "incomplete":
        return "length"
    return "tool_calls" if message.get("tool_calls") else "stop"


def _completion_id(resource: JSONObject) -> str:
    return "chatcmpl-" + str(resource.get("id", "")).removeprefix("resp_")


def _usage(resource: JSONObject) -> JSONObject:
    usage = resource.get("usage") or {}
    prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
