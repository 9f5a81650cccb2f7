"""A store that comes up without its Redis: StoreDown until connected, connecting in the background.

A pod must not crash-loop because its Redis restarts: the sidecar starts anyway (liveness passes,
readiness says why not, stateful routes answer 503 `store_unavailable`, pass-through works) and uses
Redis as soon as it answers. Once connected, the backend's own reconnects take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..redact import mask_userinfo
from .base import (
    Begun,
    Claim,
    History,
    Range,
    RateDecision,
    RunSignal,
    RunState,
    Store,
    StoreDown,
    StoredSummary,
    Turn,
    TurnResult,
    Usage,
)

log = logging.getLogger("convostore.store")

FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0


class LazyStore:
    """Delegates every call to the backend `connect` gives, once it has given one."""

    def __init__(self, connect: Callable[[], Awaitable[Store]]) -> None:
        self._connect = connect
        self._inner: Store | None = None
        self._reason = "not connected yet"
        self._connecting: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, connect: Callable[[], Awaitable[Store]]) -> LazyStore:
        """Connect now if the store answers, else keep trying in the background (one warning line)."""
        store = cls(connect)
        if not await store._try_connect():
            log.warning(
                "store unreachable at start-up; serving without it until it answers: %s", store._reason
            )
            store._connecting = asyncio.create_task(store._keep_connecting())
        return store

    @property
    def connected(self) -> bool:
        return self._inner is not None

    async def _try_connect(self) -> bool:
        try:
            self._inner = await self._connect()
        except Exception as exc:  # whatever connecting trips (refused, TLS, auth, a cluster mid-failover)
            self._reason = mask_userinfo(str(exc) or exc.__class__.__name__)
            return False
        return True

    async def _keep_connecting(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while not await self._try_connect():
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        log.info("store reachable: connected")

    def _store(self) -> Store:
        if self._inner is None:
            raise StoreDown(self._reason)
        return self._inner

    async def append_turn(self, turn: Turn) -> TurnResult:
        return await self._store().append_turn(turn)

    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        return await self._store().resolve_response(tenant, response_id, range_)

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        return await self._store().resolve_conversation(tenant, conversation_id)

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        return await self._store().begin_turn(
            tenant, previous_response_id=previous_response_id, conversation_id=conversation_id, claim=claim
        )

    async def abandon_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None = None
    ) -> None:
        await self._store().abandon_turn(tenant, conversation_id, response_id, claim)

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._store().delete_response(tenant, response_id)

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        return await self._store().set_conversation_metadata(tenant, conversation_id, metadata)

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        return await self._store().remove_item(tenant, conversation_id, item_id)

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        return await self._store().delete_conversation(tenant, conversation_id)

    async def add_summary(
        self, tenant: str, conversation_id: str, block: str, text: bytes
    ) -> StoredSummary | None:
        return await self._store().add_summary(tenant, conversation_id, block, text)

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        return await self._store().read_summaries(tenant, conversation_id, keys)

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        return await self._store().conversation_exists(tenant, conversation_id)

    async def take_request(self, tenant: str, per_minute: int) -> RateDecision:
        return await self._store().take_request(tenant, per_minute)

    async def account_usage(self, tenant: str, conversation_id: str, op: str, stored_bytes: int = 0) -> Usage:
        return await self._store().account_usage(tenant, conversation_id, op, stored_bytes)

    async def usage(self, tenant: str) -> tuple[Usage, list[str]]:
        return await self._store().usage(tenant)

    async def claim_alias(self, tenant: str, alias: str, owner: str) -> tuple[str, str] | None:
        return await self._store().claim_alias(tenant, alias, owner)

    async def settle_alias(self, tenant: str, alias: str, response_id: str | None, owner: str) -> None:
        await self._store().settle_alias(tenant, alias, response_id, owner)

    async def resolve_alias(self, tenant: str, alias: str) -> str | None:
        return await self._store().resolve_alias(tenant, alias)

    async def shared_secret(self, name: str) -> bytes:
        return await self._store().shared_secret(name)

    async def ping(self) -> None:
        await self._store().ping()

    def __getattr__(self, name: str) -> object:
        # Operations added to the backends later reach them too (and are StoreDown until connected).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._store(), name)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._inner is not None:
            await self._inner.close()

    # Background runs (sidecar/runs/).
    async def start_run(
        self, tenant: str, response_id: str, record: bytes, owner: str, lease_ms: int
    ) -> bool:
        return await self._store().start_run(tenant, response_id, record, owner, lease_ms)

    async def append_run_events(
        self, response_id: str, owner: str, events: list[tuple[int, bytes]], lease_ms: int
    ) -> RunSignal:
        return await self._store().append_run_events(response_id, owner, events, lease_ms)

    async def finish_run(
        self, response_id: str, owner: str, status: str, events: list[tuple[int, bytes]]
    ) -> bool:
        return await self._store().finish_run(response_id, owner, status, events)

    async def read_run(self, tenant: str, response_id: str, after: int | None = None) -> RunState | None:
        return await self._store().read_run(tenant, response_id, after)

    async def cancel_run(self, tenant: str, response_id: str) -> str | None:
        return await self._store().cancel_run(tenant, response_id)

    async def take_over_run(self, response_id: str, owner: str, lease_ms: int) -> tuple[str, str]:
        return await self._store().take_over_run(response_id, owner, lease_ms)

    async def track_run(self, response_id: str, check_at_ms: int | None) -> None:
        await self._store().track_run(response_id, check_at_ms)

    async def due_runs(self, now_ms: int, limit: int) -> list[str]:
        return await self._store().due_runs(now_ms, limit)

    async def renew_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
    ) -> bool:
        return await self._store().renew_turn(tenant, conversation_id, response_id, claim)

    async def hold_run_slot(
        self, tenant: str, response_id: str, limit: int, stale_ms: int
    ) -> tuple[bool, int]:
        return await self._store().hold_run_slot(tenant, response_id, limit, stale_ms)

    async def release_run_slot(self, tenant: str, response_id: str) -> int:
        return await self._store().release_run_slot(tenant, response_id)
