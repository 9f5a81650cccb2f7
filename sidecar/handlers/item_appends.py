"""Appends of items a client may have named (the session API's append, conversation items): an id the
history already holds is refused as OpenAI refuses it, and no concurrent write can slip one past the check.

Items are found by id (item_reference, GET/DELETE of an item), so two with one id would make those answers
depend on which comes first. The history is read only when the client named an item; the append then
carries the version that read saw (compare-and-set), and a write landing in between makes it read again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InvalidRequest
from ..store.base import Conflict, History, Store, Turn, TurnResult
from ..stored_items import with_sidecar_ids

# Reads and appends before a conversation this busy is answered 409 version_conflict (the client's retry).
CHECK_ATTEMPTS = 5
# An If-Match no conversation has: a keyed append sent with it replays its first call's result if there is
# one, and otherwise writes nothing (the store checks the key before the version).
NO_VERSION = -1


async def append_items(
    store: Store, turn: Turn, items: list[dict[str, Any]], *, tag: str, seed: str = "", param: str = "items"
) -> tuple[TurnResult, list[tuple[str, bytes]]]:
    """Store `items` as `turn` says (its items and n_input are filled in here); the stored (id, bytes)."""
    if not any("id" in item for item in items):
        stored = with_sidecar_ids(items, tag, seed=seed, param=param)
        return await store.append_turn(_with_items(turn, stored)), stored
    for attempt in range(CHECK_ATTEMPTS):
        history = await _history_continued(store, turn)
        try:
            # Copies: ids minted into the items on one attempt must not read as the client's on the next.
            stored = with_sidecar_ids(
                [dict(item) for item in items], tag, seed=seed, param=param, history=_items_of(history)
            )
        except InvalidRequest:
            if turn.idempotency_key and history is not None:
                # Perhaps the ids are this very call's, stored by its first run: then this is its replay.
                stored = with_sidecar_ids([dict(item) for item in items], tag, seed=seed, param=param)
                try:
                    return await store.append_turn(_with_items(turn, stored, NO_VERSION)), stored
                except Conflict:
                    pass  # not a replay: the duplicate stands
            raise
        guard = turn.if_match if turn.if_match is not None else (history.version if history else 0)
        try:
            return await store.append_turn(_with_items(turn, stored, guard)), stored
        except Conflict:
            if turn.if_match is not None or attempt == CHECK_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def _history_continued(store: Store, turn: Turn) -> History | None:
    """The history the append extends: the parent response's for a branch, else the conversation's head."""
    if turn.parent_response_id is not None:
        return await store.resolve_response(turn.tenant, turn.parent_response_id)
    return await store.resolve_conversation(turn.tenant, turn.conversation_id)


def _items_of(history: History | None) -> list[bytes]:
    return history.items if history is not None else []


def _with_items(turn: Turn, stored: list[tuple[str, bytes]], if_match: int | None = None) -> Turn:
    return dataclasses.replace(
        turn, items=stored, n_input=len(stored), if_match=turn.if_match if if_match is None else if_match
    )
