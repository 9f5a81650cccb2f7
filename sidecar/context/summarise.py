"""Summaries of folded turns. `template`: deterministic text, no model call, a pure function of the turns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..wire.items import Item

EXCERPT_CHARS = 200


def template_summary(first_turn: int, turns: list[list[Item]]) -> str:
    """'Summary of turns 3-6:' and one line per item: who said what, cut to its first 200 characters.
    `first_turn` is 1-based. Same turns, same text, on every replica."""
    last = first_turn + len(turns) - 1
    span = f"turn {first_turn}" if last == first_turn else f"turns {first_turn}-{last}"
    lines = [f"Summary of {span}:"]
    for turn in turns:
        for item in turn:
            line = _line(item)
            if line:
                lines.append(f"- {line}")
    return "\n".join(lines)


def transcript(items: Sequence[Item]) -> str:
    """The folded turns in full, one line per item, for a summariser that reads them (upstream, http)."""
    lines = (_line(item, cut=lambda text: text) for item in items)
    return "\n".join(line for line in lines if line)


def _line(item: Item, cut: Callable[[str], str] | None = None) -> str | None:
    cut = cut or _excerpt
    kind = item.get("type", "message")
    if kind == "message":
        return f"{item.get('role')}: {cut(message_text(item))}"
    if kind == "function_call":
        return f"assistant called {item.get('name')}({cut(str(item.get('arguments', '')))})"
    if kind == "function_call_output":
        output = item.get("output")
        return f"tool result: {cut(output if isinstance(output, str) else parts_text(output))}"
    return None  # reasoning and other opaque items leave no line


def message_text(item: Item) -> str:
    content = item.get("content")
    return content if isinstance(content, str) else parts_text(content)


def parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, dict):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                texts.append(text)
            elif part.get("type") in ("input_image", "input_file"):
                texts.append(f"[{str(part['type']).removeprefix('input_')}]")
    return " ".join(texts)


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…"
