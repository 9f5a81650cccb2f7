"""In-process backend (`memory://`) with the Redis backend's semantics, for one process.

Every operation below runs without awaiting, so on one event loop each is atomic by construction:
that is the per-conversation lock the Redis scripts get from Lua's atomicity. As on Redis, a
conversation and everything in it (responses, idempotency records) share one expiry, refreshed by use.
This module resolves, begins and appends turns (and keeps summaries); the records are in memory_records.py,
their expiry in memory_lifetime.py, edits and deletions in memory_edits.py, quotas and background runs in
memory_quota.py and memory_runs.py.
"""

from __future__ import annotations

import os
import time

from ..ids import conversation_tag, mint_response_id, parse_response_id, response_random
from .base import (
    CLAIM_SECONDS,
    IDEMPOTENCY_TTL_SECONDS,
    Begun,
    Claim,
    Conflict,
    ConversationMissing,
    History,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    ParentInOtherConversation,
    ParentNotFound,
    Range,
    ReservationLapsed,
    StoredSummary,
    Turn,
    TurnResult,
)
from .memory_edits import MemoryEdits
from .memory_quota import MemoryQuotas
from .memory_records import Conversation, IdempotencyRecord, Slot, StoredResponse, walk_items
from .memory_runs import MemoryRuns, Run

_FOREVER = float("inf")


class MemoryStore(MemoryEdits, MemoryQuotas, MemoryRuns):
    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._conversations: dict[tuple[str, str], Conversation] = {}
        self._responses: dict[str, StoredResponse] = {}
        self._slots: dict[str, Slot] = {}
        # Claims exist before their conversation does, so they are kept beside it, by conversation.
        self._idempotency: dict[tuple[str, str], dict[str, IdempotencyRecord]] = {}
        # Quotas: per tenant the GCRA arrival time (monotonic ms), and bytes counted per conversation.
        self._rate: dict[str, float] = {}
        self._usage: dict[str, dict[str, int]] = {}
        # Background runs by response id, and the reapers' index (response id -> check time, unix ms).
        self._runs: dict[str, Run] = {}
        self._run_index: dict[str, int] = {}
        # Per tenant, its background responses holding a quota slot (response id -> stale at, monotonic).
        self._run_slots: dict[str, dict[str, float]] = {}
        self._secrets: dict[str, bytes] = {}  # shared_secret
        # store_response's chosen ids: (tenant, alias) -> (the minted id or "?" while claimed, owner, until)
        self._aliases: dict[tuple[str, str], tuple[str, str, float]] = {}

    # -- reads ---------------------------------------------------------------------------------
    @staticmethod
    def _collect_entries(conv: Conversation, segment: int, stop: int) -> list[tuple[str, bytes]]:
        return [entry for _, _, entry in walk_items(conv, segment, stop)]

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        resp = self._live_response(tenant, response_id)
        if resp is None:
            return None
        conv = resp.conversation
        self._touch(conv)
        if range_ == "output":
            items = [item for _, item in conv.segments[resp.segment][resp.input_end : resp.end]]
        else:
            stop = resp.input_end if range_ == "input" else resp.end
            items = [item for _, item in self._collect_entries(conv, resp.segment, stop)]
        summaries = dict(conv.summaries) if range_ == "full" else None  # as the Redis resolve has it
        return self._history(
            resp.conversation_id, response_id, conv, resp.status, resp.body, items, summaries
        )

    def _reserve(self, tag: str, lapses_at: float) -> str:
        slot = self._slots.setdefault(tag, Slot())
        index = slot.next_index
        slot.next_index += 1
        response_id = mint_response_id(tag, index, response_random())
        slot.reserved[response_id] = lapses_at
        return response_id

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        now = time.monotonic()
        if previous_response_id is not None:
            parsed = parse_response_id(previous_response_id)
            resp = self._live_response(tenant, previous_response_id) if parsed is not None else None
            if parsed is None or resp is None:
                return Begun(None, "")
            tag, conversation_id = parsed[0], resp.conversation_id
        else:
            assert conversation_id is not None
            tag = conversation_tag(tenant, conversation_id)
        conv = self._live_conversation(tenant, conversation_id)
        if claim is not None:
            verdict = self._idempotency_verdict(tenant, conversation_id, claim.key, claim.request_hash, "")
            if verdict is not None:
                if conv is not None:
                    self._touch(conv)
                return Begun(None, verdict.response_id or "", replay=verdict)
            if claim.fresh and conv is not None:
                raise IdempotencyKeyReused(claim.key)
        lapses_at = now + (self._ttl if conv is not None else CLAIM_SECONDS)
        response_id = self._reserve(tag, lapses_at)
        if claim is not None:
            records = self._idempotency.setdefault((tenant, conversation_id), {})
            records[claim.key] = IdempotencyRecord(claim.request_hash, now + CLAIM_SECONDS, response_id)
        if conv is None:
            return Begun(None, response_id)
        if previous_response_id is not None:
            history = await self.resolve_response(tenant, previous_response_id)
        else:
            history = await self.resolve_conversation(tenant, conversation_id)
        return Begun(history, response_id)

    def _idempotency_verdict(
        self, tenant: str, conversation_id: str, key: str, request_hash: str, response_id: str
    ) -> TurnResult | None:
        """None = go ahead (no record, or the caller's own claim); the first result to replay; or raises."""
        record = self._idempotency.get((tenant, conversation_id), {}).get(key)
        if record is None or record.expires_at <= time.monotonic():
            return None
        if record.request_hash != request_hash:
            raise IdempotencyKeyReused(key)
        if record.result is None:
            if record.response_id == response_id:
                return None
            raise IdempotencyInFlight(key)
        r = record.result
        return TurnResult(
            r.conversation_id, r.version, r.appended, r.session_bytes, r.turns, r.response_id, replayed=True
        )

    async def abandon_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None = None
    ) -> None:
        parsed = parse_response_id(response_id)
        slot = self._slots.get(parsed[0]) if parsed is not None else None
        if parsed is not None and slot is not None:
            slot.reserved.pop(response_id, None)
            if slot.records <= 0 and not slot.reserved:
                del self._slots[parsed[0]]
        records = self._idempotency.get((tenant, conversation_id), {})
        record = records.get(claim.key) if claim is not None else None
        if (
            claim is not None
            and record is not None
            and record.result is None
            and record.response_id == response_id
        ):
            del records[claim.key]
            if not records:
                del self._idempotency[(tenant, conversation_id)]

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return None
        self._touch(conv)
        items = [item for _, item in self._collect_entries(conv, *conv.head)]
        newest = next(reversed(conv.responses), None)
        return self._history(conversation_id, newest, conv, "", conv.metadata, items, dict(conv.summaries))

    @staticmethod
    def _history(
        conversation_id: str,
        response_id: str | None,
        conv: Conversation,
        status: str,
        body: bytes,
        items: list[bytes],
        summaries: dict[str, bytes] | None,
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
            summary_bytes=sum(len(text) for text in conv.summaries.values()),
            summaries=summaries,
            incarnation=conv.incarnation,
        )

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
        if turn.idempotency_key:
            replay = self._idempotency_verdict(
                tenant, conversation_id, turn.idempotency_key, turn.request_hash, turn.response_id or ""
            )
            if replay is not None:
                return replay

        reserved = turn.response_id is not None and self._is_reservable(turn.response_id)
        if turn.response_id is not None and not reserved:
            raise ReservationLapsed(f"response {turn.response_id} was not reserved before it was stored")
        now_ms = int(time.time() * 1000)
        conv = self._live_conversation(tenant, conversation_id)
        created = conv is None
        planned = turn.planned_incarnation
        if (conv is None and not turn.create) or (
            planned and attach is None and (conv is None or conv.incarnation != planned)
        ):
            raise ConversationMissing(conversation_id)
        current_version = conv.version if conv is not None else 0
        if turn.if_match is not None and turn.if_match != current_version:
            raise Conflict(current_version)
        # Writes from here on: every check above left the store untouched.
        tag = conversation_tag(tenant, conversation_id)
        if conv is None:
            conv = Conversation(tag, created_ms=now_ms, metadata=turn.conversation_metadata, expires_at=0.0)
            conv.updated_ms = now_ms
            self._conversations[(tenant, conversation_id)] = conv
        response_id = turn.response_id
        if turn.mint_response:
            response_id = self._reserve(tag, _FOREVER)
        if response_id is not None:
            self._take(response_id)

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
        self._touch(conv)
        if response_id is not None:
            conv.turns += 1
            conv.responses[response_id] = None
            self._responses[response_id] = StoredResponse(
                tenant,
                conv,
                conversation_id,
                segment,
                end,
                stop + turn.n_input,
                turn.response_status,
                turn.response_body,
            )
        result = TurnResult(conversation_id, conv.version, n, conv.session_bytes, conv.turns, response_id)
        if turn.idempotency_key:
            # The key that created the conversation replays its first turn as long as the conversation lives.
            idem_ttl = _FOREVER if created else min(IDEMPOTENCY_TTL_SECONDS, self._ttl)
            records = self._idempotency.setdefault((tenant, conversation_id), {})
            records[turn.idempotency_key] = IdempotencyRecord(
                turn.request_hash, now + idem_ttl, result=result
            )
        return result

    def _is_reservable(self, response_id: str) -> bool:
        """Reserved by begin_turn and not lapsed, or (a new conversation's first turn) the next free index."""
        parsed = parse_response_id(response_id)
        if parsed is None:
            return False
        slot = self._slots.get(parsed[0], Slot())
        lapses_at = slot.reserved.get(response_id)
        if lapses_at is not None:
            return lapses_at > time.monotonic()
        return slot.next_index == parsed[1]

    def _take(self, response_id: str) -> None:
        parsed = parse_response_id(response_id)
        assert parsed is not None
        tag, index = parsed[0], parsed[1]
        slot = self._slots.setdefault(tag, Slot())
        if slot.reserved.pop(response_id, None) is None:
            slot.next_index = index + 1  # a first turn's id: its index is taken now
        slot.records += 1

    async def add_summary(
        self, tenant: str, conversation_id: str, block: str, text: bytes
    ) -> StoredSummary | None:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return None
        written = block not in conv.summaries
        return StoredSummary(conv.summaries.setdefault(block, text), written)

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        conv = self._live_conversation(tenant, conversation_id)
        stored = conv.summaries if conv is not None else {}
        return [stored.get(key) for key in keys]

    async def ping(self) -> None:
        return None

    async def claim_alias(self, tenant: str, alias: str, owner: str) -> tuple[str, str] | None:
        held = self._alias(tenant, alias)
        if held is not None:
            return held
        self._aliases[(tenant, alias)] = ("?", owner, time.monotonic() + CLAIM_SECONDS)
        return None

    async def settle_alias(self, tenant: str, alias: str, response_id: str | None, owner: str) -> None:
        if response_id:
            self._aliases[(tenant, alias)] = (response_id, owner, time.monotonic() + self._ttl)
        elif (self._alias(tenant, alias) or ("",))[0] == "?":
            del self._aliases[(tenant, alias)]

    async def resolve_alias(self, tenant: str, alias: str) -> str | None:
        held = self._alias(tenant, alias)
        if held is None or held[0] == "?":
            return None
        self._aliases[(tenant, alias)] = (*held, time.monotonic() + self._ttl)
        return held[0]

    def _alias(self, tenant: str, alias: str) -> tuple[str, str] | None:
        found = self._aliases.get((tenant, alias))
        if found is None or found[2] <= time.monotonic():
            self._aliases.pop((tenant, alias), None)
            return None
        return found[0], found[1]

    async def shared_secret(self, name: str) -> bytes:
        return self._secrets.setdefault(name, os.urandom(32))  # this process's: memory:// is one process

    async def close(self) -> None:
        return None

    async def renew_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
    ) -> bool:
        now = time.monotonic()
        parsed = parse_response_id(response_id)
        slot = self._slots.get(parsed[0]) if parsed is not None else None
        held = False
        if parsed is not None and slot is not None:
            lapses_at = slot.reserved.get(response_id)
            if lapses_at is not None and lapses_at > now:
                slot.reserved[response_id] = max(lapses_at, now + CLAIM_SECONDS)
                held = True
        record = self._idempotency.get((tenant, conversation_id), {}).get(claim.key) if claim else None
        if (
            claim is not None
            and record is not None
            and record.result is None
            and record.response_id == response_id
            and record.request_hash == claim.request_hash
            and record.expires_at > now
        ):
            record.expires_at = max(record.expires_at, now + CLAIM_SECONDS)
        conv = self._live_conversation(tenant, conversation_id)
        if conv is not None:  # the conversation the turn continues lives on while it runs, as a use does
            self._touch(conv)
        return held
