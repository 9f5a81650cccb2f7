"""Responses items <-> chat-completions messages (pure): what a chat-only engine and the session API see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import InvalidRequest
from .items import Item, check_item_count, is_one_of, parse_item

Message = dict[str, Any]

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def stored_items_to_messages(
    stored: Sequence[bytes], instructions: str | None = None, *, first_input: int = 0
) -> list[Message]:
    """`items_to_messages` of stored item bytes, decoded in one orjson call for the whole history: per item
    the call overhead was a third of the decoding (the session API's resolve converts ~100 per call)."""
    items = orjson.loads(json_array(stored))
    return items_to_messages(items, instructions, first_input=first_input)


def json_array(stored: Sequence[bytes], prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """`prefix[item,item,...]suffix` in one allocation: `b"[" + b",".join(...) + b"]"` copies the whole
    history twice more, and past malloc's mmap threshold (128 KB) each copy pays fresh page faults
    (a ~400 KB history: ~600 us against ~8)."""
    if not stored:
        return prefix + b"[]" + suffix
    if len(stored) == 1:
        return b"".join((prefix, b"[", stored[0], b"]", suffix))
    return b",".join([prefix + b"[" + stored[0], *stored[1:-1], stored[-1] + b"]" + suffix])


def items_to_messages(
    items: list[Item], instructions: str | None = None, *, first_input: int = 0
) -> list[Message]:
    """History as chat messages: a lone text part becomes a plain string, function calls become
    `tool_calls` on an assistant message, their outputs `tool` messages; reasoning is not re-sent.

    A part chat cannot express is a 400: `items[first_input:]` are the request's `input`, so the error
    names `input[i]…`; one from the stored history names the earlier turn."""
    messages: list[Message] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    source: Item | None = None  # the item that started the last assistant message
    for n, item in enumerate(items):
        item_type = item.get("type", "message")
        if item_type == "message":
            source = item
            # Many chat templates know no "developer" role; it means system to them.
            role = "system" if item["role"] == "developer" else item["role"]
            content = item["content"]
            # The common case first, with no error name built for it: one text part, as every plain string
            # is stored (docs/api.md §6); the session API's resolve converts ~100 of these per call.
            if type(content) is list and len(content) == 1:
                part_type = content[0].get("type")
                if part_type == "input_text" or part_type == "output_text":
                    messages.append({"role": role, "content": content[0].get("text")})
                    continue
            param = f"input[{n - first_input}].content" if n >= first_input else "previous_response_id"
            messages.append({"role": role, "content": _chat_content(content, param)})
        elif item_type == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and _open_for_tool_calls(last)
                and source is not None
                and _same_answer(source, item)
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                source = item
        elif item_type == "function_call_output":
            output = item["output"]
            param = f"input[{n - first_input}].output" if n >= first_input else "previous_response_id"
            content = output if isinstance(output, str) else _chat_content(output, param)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
    return messages


def _open_for_tool_calls(message: Message) -> bool:
    return True if "tool_calls" in message else message.get("content") is not None


def _same_answer(first: Item, call: Item) -> bool:
    """Whether a call joins the assistant message `first` started: only when both came from an engine's
    answer (output items carry a status) or both from the client (its items carry none). A prompt ends
    after its input, so the engine's call after the client's last assistant message (a prefill, an item
    added through the Conversations API) is a later prompt's: merged, it would change a message an
    earlier prompt sent, and the engine's prefix cache with it (docs/api.md §6)."""
    return ("status" in first) == ("status" in call)


def _chat_content(parts: list[Item] | str, param: str) -> Any:
    if isinstance(parts, str):
        return parts
    texts = [p.get("text") for p in parts if p.get("type") in ("input_text", "output_text")]
    if len(parts) == 1 and len(texts) == 1:
        return texts[0]
    if len(texts) == len(parts):
        return [{"type": "text", "text": t} for t in texts]
    return [_chat_part(p, f"{param}[{j}]") for j, p in enumerate(parts)]


def _chat_part(part: Item, param: str) -> Item:
    part_type = part.get("type")
    if part_type in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if part_type == "input_image":
        if not part.get("image_url"):
            raise _inexpressible(
                "an image given by 'file_id' (chat images are URLs); send its 'image_url' instead",
                f"{param}.file_id",
            )
        image: Item = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if part_type == "input_file":
        if part.get("file_url"):
            raise _inexpressible(
                "a file given by 'file_url' (chat files are file_data or file_id)", f"{param}.file_url"
            )
        file = {key: part[key] for key in ("file_data", "file_id", "filename") if part.get(key)}
        return {"type": "file", "file": file}
    if part_type == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    return dict(part)


def _inexpressible(what: str, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"The engine speaks chat completions, which cannot carry {what}.", param=param, code="invalid_value"
    )


def messages_to_items(messages: Any, param: str = "messages") -> list[Item]:
    """Chat messages (session API, stateful chat) as canonical Responses items."""
    if not isinstance(messages, list):
        raise InvalidRequest(f"Invalid type for '{param}': expected an array.", param=param)
    check_item_count(messages, param)
    items: list[Item] = []
    for i, message in enumerate(messages):
        items.extend(message_to_items(message, f"{param}[{i}]"))
    return items


def message_to_items(message: Any, param: str) -> list[Item]:
    if not isinstance(message, dict):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.", param=param)
    role = message.get("role")
    if not is_one_of(role, CHAT_ROLES):
        raise InvalidRequest(
            f"Invalid value for '{param}.role': {role!r}; expected one of "
            "'system', 'developer', 'user', 'assistant' or 'tool'.",
            param=f"{param}.role",
            code="invalid_value",
        )
    if role == "tool":
        return [
            parse_item(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": _tool_output(message.get("content"), param),
                },
                param,
            )
        ]
    tool_calls = message.get("tool_calls") if role == "assistant" else None
    items: list[Item] = []
    content = message.get("content")
    if content not in (None, "", []) or not tool_calls:
        items.append(parse_item({"type": "message", "role": role, "content": _parts(content)}, param))
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise InvalidRequest(f"Invalid type for '{param}.tool_calls'.", param=f"{param}.tool_calls")
        for j, call in enumerate(tool_calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise InvalidRequest(f"Invalid '{param}.tool_calls[{j}]'.", param=f"{param}.tool_calls[{j}]")
            items.append(
                parse_item(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments", ""),
                    },
                    f"{param}.tool_calls[{j}]",
                )
            )
    return items


def _parts(content: Any) -> Any:
    if isinstance(content, list):
        return [_from_chat_part(p) for p in content]
    return content


def _from_chat_part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail") if isinstance(image, dict) else None
        return {"type": "input_image", "image_url": url, "detail": detail or "auto"}
    if isinstance(part, dict) and part.get("type") == "file" and isinstance(part.get("file"), dict):
        file = part["file"]
        return {
            "type": "input_file",
            **{k: file[k] for k in ("file_data", "file_id", "filename") if k in file},
        }
    return part


def _tool_output(content: Any, param: str) -> Any:
    if isinstance(content, list):
        # Text parts only (a string part is text too, as in message content); `text` may be anything.
        texts = (p if isinstance(p, str) else p.get("text") if isinstance(p, dict) else None for p in content)
        return "".join(text for text in texts if isinstance(text, str))
    if not isinstance(content, str):
        raise InvalidRequest(f"Invalid type for '{param}.content'.", param=f"{param}.content")
    return content
