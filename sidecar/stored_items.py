"""Items on their way into the store: sidecar ids and their one encoding."""

from __future__ import annotations

from typing import Any

import orjson

from .ids import derive_in_conversation, mint_in_conversation
from .normalise import encode_item

ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "compaction": "cmp",
}


def with_sidecar_ids(items: list[dict[str, Any]], tag: str, *, seed: str = "") -> list[tuple[str, bytes]]:
    """Each item gets an id the sidecar minted in the conversation's slot (derived from `seed`, when a
    keyed write's retry must answer with the same ids). A client's own id is replaced: stored history is
    keyed by id, and a reused id must never overwrite an earlier item."""
    stored: list[tuple[str, bytes]] = []
    for n, item in enumerate(items):
        prefix = ID_PREFIX.get(item.get("type", "message"), "item")
        item_id = derive_in_conversation(prefix, tag, seed, n) if seed else mint_in_conversation(prefix, tag)
        item["id"] = item_id
        stored.append((item_id, encode_item(item)))
    return stored


def decode_items(raw: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(item) for item in raw]
