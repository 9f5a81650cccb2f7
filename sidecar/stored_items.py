"""Items on their way into the store: sidecar ids and their one encoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .errors import InvalidRequest
from .ids import derive_in_conversation, mint_in_conversation, validate_client_id
from .normalise import encode_item

ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "compaction": "cmp",
}


def with_sidecar_ids(
    items: list[dict[str, Any]],
    tag: str,
    *,
    seed: str = "",
    param: str = "input",
    history: Sequence[bytes] = (),
) -> list[tuple[str, bytes]]:
    """Each item keeps the id its client gave it (RESPONSES_API.md) or gets one the sidecar mints in the
    conversation's slot (derived from `seed` when a keyed write's retry must answer with the same ids). An
    id given twice, in the call or already in `history`, is refused as OpenAI refuses it: items are found by
    id (item_reference, the items routes)."""
    # The history is read only when a client gave ids: most calls give none, and pay nothing for it.
    taken = _ids_in(history) if history and any("id" in item for item in items) else set()
    stored: list[tuple[str, bytes]] = []
    for n, item in enumerate(items):
        item_id = item.get("id")
        if item_id is None:
            prefix = ID_PREFIX.get(item.get("type", "message"), "item")
            item_id = (
                derive_in_conversation(prefix, tag, seed, n) if seed else mint_in_conversation(prefix, tag)
            )
            item["id"] = item_id
        else:
            validate_client_id(item_id, f"{param}[{n}].id")
            if item_id in taken:
                raise InvalidRequest(
                    f"Duplicate item found with id {item_id}. Remove duplicate items from your input and try "
                    "again.",
                    param=f"{param}[{n}].id",
                )
            taken.add(item_id)
        stored.append((item_id, encode_item(item)))
    return stored


def with_minted_ids(items: list[dict[str, Any]], tag: str) -> list[tuple[str, bytes]]:
    """Output items (a response a gateway stores): ids the sidecar mints, whatever the engine gave them,
    as the proxy replaces an engine's ids in what it relays."""
    for item in items:
        item.pop("id", None)
    return with_sidecar_ids(items, tag)


def _ids_in(history: Sequence[bytes]) -> set[str]:
    return {str(item["id"]) for item in map(orjson.loads, history) if isinstance(item, dict) and "id" in item}


def decode_items(raw: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(item) for item in raw]


# Items are stored as the engine is sent them (no status on input items, an image's detail only when the
# client gave one); the routes that list them show them as the spec's item models require.
_HAS_STATUS = frozenset({"message", "function_call", "function_call_output"})


def listed(item: dict[str, Any]) -> dict[str, Any]:
    """A decoded stored item as the items routes show it: its status, and every input image's detail."""
    if item.get("type") in _HAS_STATUS and "status" not in item:
        item["status"] = "completed"
    content = item.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "input_image" and "detail" not in part:
                part["detail"] = "auto"  # what an engine assumes without one
    return item
