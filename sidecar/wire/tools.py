"""Tool definitions in their one encoding (docs/api.md §6): canonical JSON to the engine, and the Responses
form the prefix fingerprint hashes (pure)."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequest
from ..normalise import canonical_json

# What a chat function tool holds, in sorted order, so a chat tool built from a canonical one stays canonical.
_FUNCTION_FIELDS = ("description", "name", "parameters", "strict")


def canonical_tools(tools: Any) -> list[Any] | None:
    """A request's `tools` in their one encoding (sorted keys, NFC text): two spellings of one tool are the
    same bytes to the engine, as they are to the fingerprint. None when the request sends none."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", param="tools")
    return orjson.loads(canonical_json(tools)) if tools else []


def tools_bytes(tools: list[Any]) -> bytes:
    """The bytes of canonical tools: their text is normalised already, only keys built since need sorting."""
    return orjson.dumps(tools, option=orjson.OPT_SORT_KEYS)


def chat_tool(tool: Any) -> Any:
    """A Responses function tool as chat completions spells it, canonical if the tool was (keys sorted);
    a chat-style one and other tool types as given."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    if isinstance(tool.get("function"), dict):
        return {"function": tool["function"], "type": "function"}
    function = {key: tool[key] for key in _FUNCTION_FIELDS if tool.get(key) is not None}
    return {"function": function, "type": "function"}


def responses_tool(tool: Any) -> Any:
    """A chat-completions function tool (`{"type", "function": {...}}`) as Responses spells it (flat), so a
    tool hashes the same whichever route named it; every other tool as given."""
    if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return {"type": "function", **tool["function"]}
    return tool
