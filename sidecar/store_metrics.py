"""A Store that reports to Prometheus (resolve latency, conflicts, session sizes, unreachable store) and,
when OpenTelemetry is on, wraps resolves and writes in spans."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from .fingerprint import estimate_tokens
from .metrics import Metrics
from .store import History, MemoryStore, Store, Turn, TurnResult
from .store.base import (
    Begun,
    Claim,
    Conflict,
    Range,
    RateDecision,
    RunSignal,
    RunState,
    StoreDown,
    StoredSummary,
    Usage,
)
from .tracing import current_tracer, traced

T = TypeVar("T")


class MeteredStore:
    """Wraps any backend; the handlers never know metrics exist."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.inner = store
        self._metrics = metrics
        self._system = "memory" if isinstance(store, MemoryStore) else "redis"

    def _traced(self, operation: str, call: Awaitable[T]) -> Awaitable[T]:
        """`call` itself, or inside a span when the request is traced (no span object otherwise)."""
        tracer = current_tracer()
        if tracer is None:
            return call
        attributes = {"db.system.name": self._system, "db.operation.name": operation}
        return traced(tracer, f"store {operation}", call, attributes)

    async def _counted(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except StoreDown:
            self._metrics.store_errors.inc()
            raise

    async def _resolved(self, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        result = await self._counted(call)
        self._metrics.resolve_latency_ms.observe((time.perf_counter() - started) * 1000)
        return result

    async def append_turn(self, turn: Turn) -> TurnResult:
        try:
            result = await self._traced("append_turn", self._counted(self.inner.append_turn(turn)))
        except Conflict:
            self._metrics.append_conflicts.inc()
            raise
        self._metrics.session_size_bytes.observe(result.session_bytes)
        return result

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        begun = await self._traced(
            "begin_turn",
            self._resolved(
                self.inner.begin_turn(
                    tenant,
                    previous_response_id=previous_response_id,
                    conversation_id=conversation_id,
                    claim=claim,
                )
            ),
        )
        if begun.history is not None:
            self._metrics.estimated_input_tokens.observe(
                estimate_tokens(sum(len(i) for i in begun.history.items))
            )
        return begun

    async def abandon_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None = None
    ) -> None:
        await self._counted(self.inner.abandon_turn(tenant, conversation_id, response_id, claim))

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        return await self._traced(
            "resolve_response", self._resolved(self.inner.resolve_response(tenant, response_id, range_))
        )

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        return await self._traced(
            "resolve_conversation", self._resolved(self.inner.resolve_conversation(tenant, conversation_id))
        )

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._counted(self.inner.delete_response(tenant, response_id))

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        return await self._counted(self.inner.set_conversation_metadata(tenant, conversation_id, metadata))

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        return await self._counted(self.inner.remove_item(tenant, conversation_id, item_id))

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        return await self._counted(self.inner.delete_conversation(tenant, conversation_id))

    async def add_summary(
        self, tenant: str, conversation_id: str, block: str, text: bytes
    ) -> StoredSummary | None:
        return await self._counted(self.inner.add_summary(tenant, conversation_id, block, text))

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        return await self._counted(self.inner.read_summaries(tenant, conversation_id, keys))

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        return await self._counted(self.inner.conversation_exists(tenant, conversation_id))

    async def take_request(self, tenant: str, per_minute: int) -> RateDecision:
        return await self._counted(self.inner.take_request(tenant, per_minute))

    async def account_usage(self, tenant: str, conversation_id: str, op: str, stored_bytes: int = 0) -> Usage:
        return await self._counted(self.inner.account_usage(tenant, conversation_id, op, stored_bytes))

    async def usage(self, tenant: str) -> tuple[Usage, list[str]]:
        return await self._counted(self.inner.usage(tenant))

    async def claim_alias(self, tenant: str, alias: str, owner: str) -> tuple[str, str] | None:
        return await self.inner.claim_alias(tenant, alias, owner)

    async def settle_alias(self, tenant: str, alias: str, response_id: str | None, owner: str) -> None:
        await self.inner.settle_alias(tenant, alias, response_id, owner)

    async def resolve_alias(self, tenant: str, alias: str) -> str | None:
        return await self.inner.resolve_alias(tenant, alias)

    async def shared_secret(self, name: str) -> bytes:
        return await self.inner.shared_secret(name)

    async def ping(self) -> None:
        await self._counted(self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()

    # Background runs (sidecar/runs/).
    async def start_run(
        self, tenant: str, response_id: str, record: bytes, owner: str, lease_ms: int
    ) -> bool:
        return await self._counted(self.inner.start_run(tenant, response_id, record, owner, lease_ms))

    async def append_run_events(
        self, response_id: str, owner: str, events: list[tuple[int, bytes]], lease_ms: int
    ) -> RunSignal:
        return await self._counted(self.inner.append_run_events(response_id, owner, events, lease_ms))

    async def finish_run(
        self, response_id: str, owner: str, status: str, events: list[tuple[int, bytes]]
    ) -> bool:
        return await self._counted(self.inner.finish_run(response_id, owner, status, events))

    async def read_run(self, tenant: str, response_id: str, after: int | None = None) -> RunState | None:
        return await self._counted(self.inner.read_run(tenant, response_id, after))

    async def cancel_run(self, tenant: str, response_id: str) -> str | None:
        return await self._counted(self.inner.cancel_run(tenant, response_id))

    async def take_over_run(self, response_id: str, owner: str, lease_ms: int) -> tuple[str, str]:
        return await self._counted(self.inner.take_over_run(response_id, owner, lease_ms))

    async def track_run(self, response_id: str, check_at_ms: int | None) -> None:
        await self._counted(self.inner.track_run(response_id, check_at_ms))

    async def due_runs(self, now_ms: int, limit: int) -> list[str]:
        return await self._counted(self.inner.due_runs(now_ms, limit))

    async def renew_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
    ) -> bool:
        return await self._counted(self.inner.renew_turn(tenant, conversation_id, response_id, claim))

    async def hold_run_slot(
        self, tenant: str, response_id: str, limit: int, stale_ms: int
    ) -> tuple[bool, int]:
        return await self._counted(self.inner.hold_run_slot(tenant, response_id, limit, stale_ms))

    async def release_run_slot(self, tenant: str, response_id: str) -> int:
        return await self._counted(self.inner.release_run_slot(tenant, response_id))
