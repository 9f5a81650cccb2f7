"""How long the memory backend's conversations live: refreshed by use, dropped when deleted, when read
after they lapsed, or by the periodic sweep (which also drops lapsed claims, reservations, rate states
and runs), as Redis expires a conversation's keys together."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from ..periodic import every
from .memory_records import Conversation, IdempotencyRecord, Slot, StoredResponse
from .memory_runs import Run

SWEEP_INTERVAL_SECONDS = 60.0


class MemoryLifetime:
    """Mixed into MemoryStore, which holds the state below."""

    _ttl: float
    _conversations: dict[tuple[str, str], Conversation]
    _responses: dict[str, StoredResponse]
    _slots: dict[str, Slot]
    _idempotency: dict[tuple[str, str], dict[str, IdempotencyRecord]]
    _rate: dict[str, float]
    _runs: dict[str, Run]

    def _live_conversation(self, tenant: str, conversation_id: str) -> Conversation | None:
        conv = self._conversations.get((tenant, conversation_id))
        if conv is None:
            return None
        if conv.expires_at <= time.monotonic():
            self._drop_conversation(tenant, conversation_id)
            return None
        return conv

    def _live_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        resp = self._responses.get(response_id)
        if resp is None or resp.tenant != tenant:
            return None
        if self._live_conversation(tenant, resp.conversation_id) is not resp.conversation:
            return None
        return resp

    def _touch(self, conv: Conversation) -> None:
        conv.expires_at = time.monotonic() + self._ttl

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        conv = self._conversations.get((tenant, conversation_id))
        return conv is not None and conv.expires_at > time.monotonic()

    def _drop_conversation(self, tenant: str, conversation_id: str) -> None:
        conv = self._conversations.pop((tenant, conversation_id))
        for response_id in conv.responses:
            self._responses.pop(response_id, None)
            self._runs.pop(response_id, None)  # a background run's log holds its content too
        self._idempotency.pop((tenant, conversation_id), None)
        slot = self._slots.get(conv.tag)
        if slot is not None:
            slot.records -= len(conv.responses)
            if slot.records <= 0 and not slot.reserved:
                del self._slots[conv.tag]

    def sweep(self) -> int:
        """Drop everything expired; returns how many conversations went."""
        now = time.monotonic()
        expired = [key for key, conv in self._conversations.items() if conv.expires_at <= now]
        for key in expired:
            self._drop_conversation(*key)
        for key, records in list(self._idempotency.items()):
            for name in [k for k, record in records.items() if record.expires_at <= now]:
                del records[name]
            if not records:
                del self._idempotency[key]
        wall = now * 1000
        for tenant in [t for t, tat in self._rate.items() if tat <= wall]:
            del self._rate[tenant]
        for tag, slot in list(self._slots.items()):
            for response_id in [r for r, lapses_at in slot.reserved.items() if lapses_at <= now]:
                del slot.reserved[response_id]
            if slot.records <= 0 and not slot.reserved:
                del self._slots[tag]
        for response_id in [r for r, run in self._runs.items() if run.expires_at <= now]:
            del self._runs[response_id]
        return len(expired)

    @contextlib.asynccontextmanager
    async def sweeping(self, interval: float = SWEEP_INTERVAL_SECONDS) -> AsyncIterator[None]:
        async def tick() -> None:
            self.sweep()

        async with every(interval, tick):
            yield
