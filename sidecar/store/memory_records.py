"""The memory backend's records: a conversation's segments and responses, idempotency claims and the
response-id slots, and the walk that reads a branch of a conversation back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .base import TurnResult


@dataclass(slots=True)
class IdempotencyRecord:
    """A claimed key (`result` None, `response_id` the claimant's) or a stored result."""

    request_hash: str
    expires_at: float
    response_id: str = ""
    result: TurnResult | None = None


@dataclass(slots=True)
class Conversation:
    tag: str
    created_ms: int
    metadata: bytes
    expires_at: float
    version: int = 0
    head: tuple[int, int] = (0, 0)
    segments: list[list[tuple[str, bytes]]] = field(default_factory=lambda: [[]])  # (item id, item bytes)
    parents: dict[int, tuple[int, int]] = field(default_factory=dict)
    responses: dict[str, None] = field(default_factory=dict)  # stored response ids, oldest first
    session_bytes: int = 0
    turns: int = 0
    updated_ms: int = 0
    summaries: dict[str, bytes] = field(default_factory=dict)  # block key -> summary (add_summary)
    incarnation: str = field(default_factory=lambda: os.urandom(4).hex())  # History.incarnation


@dataclass(slots=True)
class StoredResponse:
    tenant: str
    conversation: Conversation  # the very object: a conversation made again under the same id is another
    conversation_id: str
    segment: int
    end: int
    input_end: int
    status: str
    body: bytes


@dataclass(slots=True)
class Slot:
    """Record indexes of one slot tag, as the Redis record list hands them out."""

    next_index: int = 0
    # response id -> when its reservation lapses: the id's, not its index's (an index given back when the
    # slot empties is handed out again, to another id), as lua/includes/history.lua reserves.
    reserved: dict[str, float] = field(default_factory=dict)
    records: int = 0


def walk_items(conv: Conversation, segment: int, stop: int) -> list[tuple[int, int, tuple[str, bytes]]]:
    """(segment, position, entry) of every item reaching `stop` of `segment`, oldest first."""
    slices: list[list[tuple[int, int, tuple[str, bytes]]]] = []
    while True:
        if stop > 0:
            slices.append([(segment, n, entry) for n, entry in enumerate(conv.segments[segment][:stop])])
        parent = conv.parents.get(segment)
        if parent is None:
            break
        segment, stop = parent
    return [entry for entries in reversed(slices) for entry in entries]
