"""The Responses `response` object: every field present, request settings echoed, items and usage complete."""

from __future__ import annotations

from typing import Any

import orjson

JSONObject = dict[str, Any]

# Item id prefixes the sidecar mints, by output item type (as OpenAI spells them).
ITEM_ID_PREFIXES: dict[str, str] = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "compaction": "cmp",
}


def item_id_prefix(item_type: str | None) -> str:
    return ITEM_ID_PREFIXES.get(item_type or "message", "item")


def build_response_resource(
    *,
    response_id: str,
    created_at: int,
    status: str,
    model: str,
    output: list[JSONObject],
    request: JSONObject,
    usage: JSONObject | None = None,
    previous_response_id: str | None = None,
    conversation_id: str | None = None,
    error: JSONObject | None = None,
    incomplete_details: JSONObject | None = None,
    completed_at: int | None = None,
) -> JSONObject:
    """A complete ResponseResource; settings the request left out get the API's defaults."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(request.get("background") or False),
        "completed_at": completed_at,
        "conversation": {"id": conversation_id} if conversation_id else None,
        "error": error,
        "frequency_penalty": _number(request.get("frequency_penalty"), 0.0),
        "incomplete_details": incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "metadata": request.get("metadata") or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": _flag(request.get("parallel_tool_calls"), True),
        "presence_penalty": _number(request.get("presence_penalty"), 0.0),
        "previous_response_id": previous_response_id,
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": _reasoning(request.get("reasoning")),
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": _service_tier(request.get("service_tier")),
        "store": _flag(request.get("store"), True),
        "temperature": _number(request.get("temperature"), 1.0),
        "text": _text(request.get("text")),
        "tool_choice": _tool_choice(request.get("tool_choice")),
        "tools": [_tool(tool) for tool in request.get("tools") or []],
        "top_logprobs": int(request.get("top_logprobs") or 0),
        "top_p": _number(request.get("top_p"), 1.0),
        "truncation": request.get("truncation") or "disabled",
        "usage": normalise_usage(usage) if usage is not None else None,
        "user": request.get("user"),
    }


def normalise_usage(usage: JSONObject | None) -> JSONObject:
    """Responses usage from Responses or chat usage; the detail objects the SDK reads are always there."""
    usage = usage or {}
    if "input_tokens" in usage or "output_tokens" in usage:
        input_tokens = _count(usage.get("input_tokens"))
        output_tokens = _count(usage.get("output_tokens"))
        input_details = usage.get("input_tokens_details") or {}
        output_details = usage.get("output_tokens_details") or {}
    else:
        input_tokens = _count(usage.get("prompt_tokens"))
        output_tokens = _count(usage.get("completion_tokens"))
        input_details = usage.get("prompt_tokens_details") or {}
        output_details = usage.get("completion_tokens_details") or {}
    total = usage.get("total_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": _count(input_details.get("cached_tokens")),
            # Required by the openai SDK's model since 2.x; engines that cache say nothing of writes.
            "cache_write_tokens": _count(input_details.get("cache_write_tokens")),
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": _count(output_details.get("reasoning_tokens"))},
        "total_tokens": _count(total) if total is not None else input_tokens + output_tokens,
    }


ITEM_STATUSES = frozenset({"in_progress", "completed", "incomplete"})


def _status_of(item: JSONObject, default: str) -> str:
    """The item's own status when the spec knows it (an engine may say "done"), else `default`."""
    status = item.get("status")
    return status if status in ITEM_STATUSES else default


def complete_output_item(item: JSONObject, *, status: str = "completed") -> JSONObject:
    """A copy of an output item with every field the spec requires; `status` fills a missing status.

    Ids are not minted here: the caller owns id policy (engine ids are replaced, client ids kept).
    """
    item_type = item.get("type") or "message"
    done: JSONObject = dict(item)
    done["type"] = item_type
    if item_type == "message":
        done.setdefault("role", "assistant")
        done["status"] = _status_of(item, status)
        done["content"] = complete_content(item.get("content"))
    elif item_type == "function_call":
        done["status"] = _status_of(item, status)
        arguments = item.get("arguments")
        if not isinstance(arguments, str):
            # Some engines hand arguments over parsed; the API carries them as a JSON string.
            arguments = "" if arguments is None else orjson.dumps(arguments).decode()
        done["arguments"] = arguments
        done.setdefault("name", "")
    elif item_type == "function_call_output":
        done["status"] = _status_of(item, status)
    elif item_type == "reasoning":
        done["summary"] = list(item.get("summary") or [])
    return done


def complete_content(content: Any) -> list[JSONObject]:
    """Assistant content as a list of complete parts (a plain string is one output_text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [complete_part({"type": "output_text", "text": content})]
    return [complete_part(part) for part in content]


def complete_part(part: JSONObject) -> JSONObject:
    if part.get("type") == "output_text":
        done = dict(part)
        done.setdefault("text", "")
        done["annotations"] = list(part.get("annotations") or [])
        done["logprobs"] = list(part.get("logprobs") or [])
        return done
    if part.get("type") == "refusal":
        return {**part, "refusal": part.get("refusal") or ""}
    return dict(part)


def _number(value: Any, default: float) -> float:
    return default if value is None else float(value)


def _flag(value: Any, default: bool) -> bool:
    return default if value is None else bool(value)


# A token count past this is garbage (and 2**64 would not even serialise): read as 0, like a missing one.
_MAX_COUNT = 2**53


def _count(value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < _MAX_COUNT:
        return int(value)
    return 0


def _service_tier(value: Any) -> str:
    # "auto" is a request, not a tier: the answer names the tier that served it.
    return value if isinstance(value, str) and value != "auto" else "default"


def _reasoning(value: Any) -> JSONObject:
    value = value if isinstance(value, dict) else {}
    return {**value, "effort": value.get("effort"), "summary": value.get("summary")}


def _text(value: Any) -> JSONObject:
    text: JSONObject = dict(value) if isinstance(value, dict) else {}
    fmt = text.get("format")
    fmt = dict(fmt) if isinstance(fmt, dict) and fmt.get("type") else {"type": "text"}
    if fmt["type"] == "json_schema":
        fmt.setdefault("name", "response")
        fmt.setdefault("description", None)
        fmt["strict"] = bool(fmt.get("strict") or False)
    text["format"] = fmt
    text.setdefault("verbosity", "medium")
    return text


def _tool_choice(value: Any) -> Any:
    if value is None:
        return "auto"
    if isinstance(value, dict) and value.get("type") == "function" and "function" in value:
        # The chat shape {type, function: {name}} sometimes arrives here; echo the Responses one.
        return {"type": "function", "name": (value.get("function") or {}).get("name")}
    return value


def _tool(tool: Any) -> Any:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    done = dict(tool)
    if "function" in tool and "name" not in tool:
        done = {"type": "function", **(tool.get("function") or {})}
    done.setdefault("description", None)
    done.setdefault("parameters", None)
    done.setdefault("strict", None)
    return done
