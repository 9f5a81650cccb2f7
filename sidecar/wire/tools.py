"""Tool definitions in their one form (docs/api.md §6): what the prefix fingerprint hashes (pure)."""

from __future__ import annotations

from typing import Any


def responses_tool(tool: Any) -> Any:
    """A chat-completions function tool (`{"type", "function": {...}}`) as Responses spells it (flat), so a
    tool hashes the same whichever route named it; every other tool as given."""
    if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return {"type": "function", **tool["function"]}
    return tool
