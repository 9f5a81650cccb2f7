"""In-process backend (`memory://`) with the Redis backend's semantics, for one process.

Every operation below runs without awaiting, so on one event loop each is atomic by construction:
that is the per-conversation lock the Redis scripts get from Lua's atomicity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..ids import conversation_tag, mint_response_id, parse_response_id
from .base import (
    IDEMPOTENCY_TTL_SECONDS,
    Conflict,
    ConversationMissing,
    History,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
    Range,
    Turn,
    TurnResult,
)

SWEEP_INTERVAL_SECONDS = 60.0


@dataclass(slots=True)
class _Conversation:
    created_ms: int
    metadata: bytes
    expires_at: float
    version: int = 0
    head: tuple[int, int] = (0, 0)
    segments: list[list[tuple[str, bytes]]] = field(default_factory=lambda: [[]])  # (item id, item bytes)
    parents: dict[int, tuple[int, int]] = field(default_factory=dict)
    responses: set[str] = field(default_factory=set)
    session_bytes: int = 0
    turns: int = 0
    updated_ms: int = 0


@dataclass(slots=True)
class _Response:
    tenant: str
    conversation_id: str
    segment: int
    end: int
    input_end: int
    status: str
    body: bytes
    expires_at: float


class MemoryStore:
    def __init__(self, ttl_seconds: int) -> None:
        self._ttl = ttl_seconds
        self._conversations: dict[tuple[str, str], _Conversation] = {}
        self._responses: dict[str, _Response] = {}
        # Response ids handed out by begin_turn and not stored yet (-> when the reservation lapses), and
        # the next record index per slot tag: the same id scheme as the Redis backend.
        self._reserved: dict[str, float] = {}
        self._next_index: dict[str, int] = {}
        self._idempotency: dict[tuple[str, str, str], tuple[str, TurnResult, float]] = {}

    # -- reads ---------------------------------------------------------------------------------
    def _live_conversation(self, tenant: str, conversation_id: str) -> _Conversation | None:
        conv = self._conversations.get((tenant, conversation_id))
        if conv is None:
            return None
        if conv.expires_at <= time.monotonic():
            self._drop_conversation(tenant, conversation_id)
            return None
        return conv

    def _live_response(self, tenant: str, response_id: str) -> _Response | None:
        resp = self._responses.get(response_id)
        if resp is None or resp.tenant != tenant:
            return None
        if resp.expires_at <= time.monotonic():
            del self._responses[response_id]
            return None
        if self._live_conversation(tenant, resp.conversation_id) is None:
            return None
        return resp

    def _collect(self, conv: _Conversation, segment: int, stop: int) -> list[bytes]:
        return [item for _, item in self._collect_entries(conv, segment, stop)]

    @staticmethod
    def _collect_entries(conv: _Conversation, segment: int, stop: int) -> list[tuple[str, bytes]]:
        slices: list[list[tuple[str, bytes]]] = []
        while True:
            if stop > 0:
                slices.append(conv.segments[segment][:stop])
            parent = conv.parents.get(segment)
            if parent is None:
                break
            segment, stop = parent
        return [entry for entries in reversed(slices) for entry in entries]

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        resp = self._live_response(tenant, response_id)
        if resp is None:
            return None
        conv = self._conversations[(tenant, resp.conversation_id)]
        self._touch(conv, resp)
        if range_ == "output":
            items = [item for _, item in conv.segments[resp.segment][resp.input_end : resp.end]]
        else:
            items = self._collect(conv, resp.segment, resp.input_end if range_ == "input" else resp.end)
        return self._history(resp.conversation_id, response_id, conv, resp.status, resp.body, items)

    def _reserve(self, tag: str) -> str:
        index = self._next_index.get(tag, 0)
        self._next_index[tag] = index + 1
        response_id = mint_response_id(tag, index)
        self._reserved[response_id] = time.monotonic() + self._ttl
        return response_id

    def _is_reserved(self, response_id: str) -> bool:
        parsed = parse_response_id(response_id)
        if parsed is None:
            return False
        return response_id in self._reserved or self._next_index.get(parsed[0], 0) == parsed[1]

    async def begin_turn(
        self, tenant: str, *, previous_response_id: str | None = None, conversation_id: str | None = None
    ) -> tuple[History | None, str]:
        if previous_response_id is not None:
            parsed = parse_response_id(previous_response_id)
            if parsed is None:
                return None, ""
            reserved = self._reserve(parsed[0])
            return await self.resolve_response(tenant, previous_response_id), reserved
        assert conversation_id is not None
        tag = conversation_tag(tenant, conversation_id)
        history = await self.resolve_conversation(tenant, conversation_id)
        if history is None:  # a first turn takes the next free index when stored: nothing is kept now
            return None, mint_response_id(tag, self._next_index.get(tag, 0))
        return history, self._reserve(tag)

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return None
        self._touch(conv, None)
        items = self._collect(conv, *conv.head)
        return self._history(conversation_id, None, conv, "", conv.metadata, items)

    @staticmethod
    def _history(
        conversation_id: str,
        response_id: str | None,
        conv: _Conversation,
        status: str,
        body: bytes,
        items: list[bytes],
    ) -> History:
        return History(
            conversation_id=conversation_id,
            response_id=response_id,
            version=conv.version,
            session_bytes=conv.session_bytes,
            turns=conv.turns,
            created_ms=conv.created_ms,
            updated_ms=conv.updated_ms,
            status=status,
            body=body,
            items=items,
        )

    def _touch(self, conv: _Conversation, resp: _Response | None) -> None:
        expires_at = time.monotonic() + self._ttl
        conv.expires_at = expires_at
        if resp is not None:
            resp.expires_at = expires_at

    # -- writes --------------------------------------------------------------------------------
    async def append_turn(self, turn: Turn) -> TurnResult:
        tenant, conversation_id = turn.tenant, turn.conversation_id
        attach: tuple[int, int] | None = None
        if turn.parent_response_id is not None:
            parent = self._live_response(tenant, turn.parent_response_id)
            if parent is None:
                raise ParentNotFound(turn.parent_response_id)
            if conversation_id and conversation_id != parent.conversation_id:
                raise ParentInOtherConversation(turn.parent_response_id)
            conversation_id = parent.conversation_id
            attach = (parent.segment, parent.end)

        now = time.monotonic()
        idem_key = (tenant, conversation_id, turn.idempotency_key) if turn.idempotency_key else None
        if idem_key is not None:
            first = self._idempotency.get(idem_key)
            if first is not None and first[2] > now:
                if first[0] != turn.request_hash:
                    raise IdempotencyKeyReused(turn.idempotency_key)
                r = first[1]
                return TurnResult(
                    r.conversation_id,
                    r.version,
                    r.appended,
                    r.session_bytes,
                    r.turns,
                    r.response_id,
                    replayed=True,
                )

        if turn.response_id is not None and not self._is_reserved(turn.response_id):
            raise RuntimeError(f"response {turn.response_id} was not reserved before it was stored")
        now_ms = int(time.time() * 1000)
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            if turn.parent_response_id is not None:
                raise ParentNotFound(turn.parent_response_id)
            if not turn.create:
                raise ConversationMissing(conversation_id)
        current_version = conv.version if conv is not None else 0
        if turn.if_match is not None and turn.if_match != current_version:
            raise Conflict(current_version)
        # Writes from here on: every check above left the store untouched.
        if conv is None:
            conv = _Conversation(created_ms=now_ms, metadata=turn.conversation_metadata, expires_at=0.0)
            conv.updated_ms = now_ms
            self._conversations[(tenant, conversation_id)] = conv
        response_id = turn.response_id
        if turn.mint_response:
            response_id = self._reserve(conversation_tag(tenant, conversation_id))
        if response_id is not None and self._reserved.pop(response_id, None) is None:
            parsed = parse_response_id(response_id)
            assert parsed is not None
            self._next_index[parsed[0]] = parsed[1] + 1  # a first turn's id: its index is taken now

        segment, stop = attach if attach is not None else conv.head
        n = len(turn.items)
        if n and len(conv.segments[segment]) != stop:
            # Something was written after the attach point: branch without copying.
            conv.segments.append([])
            conv.parents[len(conv.segments) - 1] = (segment, stop)
            segment, stop = len(conv.segments) - 1, 0
        conv.segments[segment].extend(turn.items)
        conv.session_bytes += sum(len(item) for _, item in turn.items)
        end = stop + n
        conv.version += 1
        conv.head = (segment, end)
        conv.updated_ms = now_ms
        conv.expires_at = now + self._ttl
        if response_id is not None:
            conv.turns += 1
            conv.responses.add(response_id)
            self._responses[response_id] = _Response(
                tenant,
                conversation_id,
                segment,
                end,
                stop + turn.n_input,
                turn.response_status,
                turn.response_body,
                now + self._ttl,
            )
        result = TurnResult(conversation_id, conv.version, n, conv.session_bytes, conv.turns, response_id)
        if idem_key is not None:
            ttl = min(IDEMPOTENCY_TTL_SECONDS, self._ttl)
            self._idempotency[idem_key] = (turn.request_hash, result, now + ttl)
        return result

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        resp = self._live_response(tenant, response_id)
        if resp is None:
            return False
        del self._responses[response_id]
        conv = self._conversations.get((tenant, resp.conversation_id))
        if conv is not None:
            conv.responses.discard(response_id)
        return True

    async def find_idempotent(
        self, tenant: str, conversation_id: str, key: str
    ) -> tuple[str, TurnResult] | None:
        first = self._idempotency.get((tenant, conversation_id, key))
        if first is None or first[2] <= time.monotonic():
            return None
        r = first[1]
        return first[0], TurnResult(
            r.conversation_id, r.version, r.appended, r.session_bytes, r.turns, r.response_id, replayed=True
        )

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return False
        conv.metadata = metadata
        conv.updated_ms = int(time.time() * 1000)
        self._touch(conv, None)
        return True

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return None
        entries = self._collect_entries(conv, *conv.head)
        kept = [entry for entry in entries if entry[0] != item_id]
        if len(kept) == len(entries):
            return None
        conv.segments.append(kept)  # a new root segment: no parent, so stored responses are untouched
        conv.head = (len(conv.segments) - 1, len(kept))
        conv.version += 1
        conv.updated_ms = int(time.time() * 1000)
        self._touch(conv, None)
        return conv.version

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        if self._live_conversation(tenant, conversation_id) is None:
            return False
        self._drop_conversation(tenant, conversation_id)
        return True

    def _drop_conversation(self, tenant: str, conversation_id: str) -> None:
        conv = self._conversations.pop((tenant, conversation_id))
        for response_id in conv.responses:
            self._responses.pop(response_id, None)

    # -- lifecycle -----------------------------------------------------------------------------
    def sweep(self) -> int:
        """Drop everything expired; returns how many conversations and responses went."""
        now = time.monotonic()
        dropped = 0
        for key in [k for k, c in self._conversations.items() if c.expires_at <= now]:
            self._drop_conversation(*key)
            dropped += 1
        for rid in [r for r, resp in self._responses.items() if resp.expires_at <= now]:
            del self._responses[rid]
            dropped += 1
        for idem in [k for k, v in self._idempotency.items() if v[2] <= now]:
            del self._idempotency[idem]
        for rid in [r for r, expires_at in self._reserved.items() if expires_at <= now]:
            del self._reserved[rid]
        return dropped

    @contextlib.asynccontextmanager
    async def sweeping(self, interval: float = SWEEP_INTERVAL_SECONDS) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self.sweep()

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
