"""Per-tenant quotas (policy file `tenants.<t>.quota`, `default` for the rest): requests per minute on every
route, stored bytes and conversations on the routes that store. The counts live in the store (shared by every
replica on Redis), are written beside each turn and each stored summary, and given back when conversations are
deleted or expire."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .appkeys import METRICS, STORE
from .errors import ConvoStoreError, RateLimited
from .middleware import PUBLIC_RESOURCES, TENANT
from .periodic import every
from .store import History, Store, Turn, TurnResult
from .store.base import (
    Begun,
    Claim,
    Range,
    RateDecision,
    RunSignal,
    RunState,
    StoreDown,
    StoredSummary,
    Usage,
)

log = logging.getLogger("convostore.quota")
RECONCILE_INTERVAL_SECONDS = 60.0
DEFAULT_TENANT_QUOTA = "default"
# Routes that store: a tenant over its stored quota may still read, delete and use the engine statelessly.
_STORING_PREFIXES = ("/v1/responses", "/v1/conversations", "/v1/sessions/")
# Background responses end at their own pace: a client refused a slot tries again soon.
BACKGROUND_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    stored_bytes: int | None = None
    conversations: int | None = None
    background_responses: int | None = None  # running at once, counted across replicas

    @property
    def counts_storage(self) -> bool:
        return self.stored_bytes is not None or self.conversations is not None


class InsufficientQuota(ConvoStoreError):
    status = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class Quotas:
    """The limits of each tenant, read once from the policy file."""

    def __init__(self, tenants: Mapping[str, Any]) -> None:
        self._limits = {name: _limits(spec) for name, spec in tenants.items() if isinstance(spec, Mapping)}
        self._default = self._limits.get(DEFAULT_TENANT_QUOTA, Limits())
        self.seen = set()

    @property
    def any(self) -> bool:
        return any(limits != Limits() for limits in self._limits.values())

    def of(self, tenant: str) -> Limits:
        return self._limits.get(tenant, self._default)

    def tenant_class(self, tenant: str) -> str:
        return "listed" if tenant in self._limits and tenant != DEFAULT_TENANT_QUOTA else "default"

    def counting_tenants(self) -> set[str]:
        """Listed tenants whose storage is limited, and others seen writing since start."""
        return {name for name, limits in self._limits.items() if limits.counts_storage} | self.seen

    seen: set[str]


QUOTAS: web.AppKey[Quotas] = web.AppKey("quotas")


def _limits(spec: Mapping[str, Any]) -> Limits:
    quota = spec.get("quota") or {}
    return Limits(
        requests_per_minute=quota.get("requests_per_minute"),
        stored_bytes=quota.get("stored_bytes"),
        conversations=quota.get("conversations"),
        background_responses=quota.get("background_responses"),
    )


@web.middleware
async def enforce_quotas(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse, before anything is read or written, a request over its tenant's rate or stored quota."""
    quotas = request.app[QUOTAS]
    if not quotas.any or request.match_info.route.resource in request.app[PUBLIC_RESOURCES]:
        return await handler(request)
    rate_headers = await admit(request.app, request[TENANT], stores=_stores(request))
    response = await handler(request)
    if rate_headers and not response.prepared:
        response.headers.update(rate_headers)
    return response


async def admit(app: web.Application, tenant: str, *, stores: bool) -> dict[str, str]:
    """One request against its tenant's rate quota and, when it `stores`, its stored quota (a WebSocket's
    `response.create` is checked here too): the rate headers to answer with, or RateLimited /
    InsufficientQuota."""
    quotas = app[QUOTAS]
    if not quotas.any:
        return {}
    limits = quotas.of(tenant)
    store = app[STORE]
    rate_headers: dict[str, str] = {}
    if limits.requests_per_minute is not None:
        decision = await store.take_request(tenant, limits.requests_per_minute)
        rate_headers = {
            "x-ratelimit-limit-requests": str(limits.requests_per_minute),
            "x-ratelimit-remaining-requests": str(decision.remaining),
            "x-ratelimit-reset-requests": f"{decision.reset_ms}ms",
        }
        if not decision.allowed:
            _count(app, tenant, "requests")
            raise RateLimited(
                f"Rate limit reached: {limits.requests_per_minute} requests per minute. "
                f"Retry in {math.ceil(decision.reset_ms / 1000)} s.",
                headers={"Retry-After": str(max(1, math.ceil(decision.reset_ms / 1000))), **rate_headers},
            )
    if limits.counts_storage and stores:
        usage, _ = await store.usage(tenant)
        over = _over(limits, usage.stored_bytes, usage.conversations)
        if over is not None:
            _count(app, tenant, over)
            raise InsufficientQuota(
                f"Quota exceeded: the tenant's {over.replace('_', ' ')} limit is reached; delete "
                "conversations to free it.",
                headers={"Retry-After": "60"},
            )
    return rate_headers


def _stores(request: web.Request) -> bool:
    if request.method != "POST":
        return False
    if request.path == "/v1/chat/completions":
        return "X-Conversation-Id" in request.headers or "X-Previous-Response-Id" in request.headers
    return request.path.startswith(_STORING_PREFIXES)


def _over(limits: Limits, stored_bytes: int, conversations: int) -> str | None:
    if limits.stored_bytes is not None and stored_bytes >= limits.stored_bytes:
        return "stored_bytes"
    if limits.conversations is not None and conversations >= limits.conversations:
        return "conversations"
    return None


def _count(app: web.Application, tenant: str, kind: str) -> None:
    app[METRICS].quota_rejections.labels(app[QUOTAS].tenant_class(tenant), kind).inc()


class CountingStore:
    """A Store that keeps each tenant's stored usage beside the writes and deletes that change it: a
    conversation counts its items and its stored summaries.

    The count is a second call after the turn's own script (on a Redis Cluster a tenant's conversations
    live in many slots, its count in one), so a crash between the two leaves that turn uncounted while its
    conversation lives (an undercount: deleting or expiring the conversation gives back what was counted).
    The reconciler gives back what expired conversations were counted for; it does not recount live ones."""

    def __init__(self, inner: Store, quotas: Quotas) -> None:
        self._inner = inner
        self._quotas = quotas

    # Everything else is the wrapped store's.
    async def resolve_response(self, tenant: str, response_id: str, range_: Range = "full") -> History | None:
        return await self._inner.resolve_response(tenant, response_id, range_)

    async def resolve_conversation(self, tenant: str, conversation_id: str) -> History | None:
        return await self._inner.resolve_conversation(tenant, conversation_id)

    async def begin_turn(
        self,
        tenant: str,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        claim: Claim | None = None,
    ) -> Begun:
        return await self._inner.begin_turn(
            tenant, previous_response_id=previous_response_id, conversation_id=conversation_id, claim=claim
        )

    async def abandon_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None = None
    ) -> None:
        return await self._inner.abandon_turn(tenant, conversation_id, response_id, claim)

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._inner.delete_response(tenant, response_id)

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        return await self._inner.set_conversation_metadata(tenant, conversation_id, metadata)

    async def conversation_exists(self, tenant: str, conversation_id: str) -> bool:
        return await self._inner.conversation_exists(tenant, conversation_id)

    async def read_summaries(self, tenant: str, conversation_id: str, keys: list[str]) -> list[bytes | None]:
        return await self._inner.read_summaries(tenant, conversation_id, keys)

    async def take_request(self, tenant: str, per_minute: int) -> RateDecision:
        return await self._inner.take_request(tenant, per_minute)

    async def account_usage(self, tenant: str, conversation_id: str, op: str, stored_bytes: int = 0) -> Usage:
        return await self._inner.account_usage(tenant, conversation_id, op, stored_bytes)

    async def usage(self, tenant: str) -> tuple[Usage, list[str]]:
        return await self._inner.usage(tenant)

    async def claim_alias(self, tenant: str, alias: str, owner: str) -> tuple[str, str] | None:
        return await self._inner.claim_alias(tenant, alias, owner)

    async def settle_alias(self, tenant: str, alias: str, response_id: str | None, owner: str) -> None:
        await self._inner.settle_alias(tenant, alias, response_id, owner)

    async def resolve_alias(self, tenant: str, alias: str) -> str | None:
        return await self._inner.resolve_alias(tenant, alias)

    async def shared_secret(self, name: str) -> bytes:
        return await self._inner.shared_secret(name)

    async def ping(self) -> None:
        return await self._inner.ping()

    async def close(self) -> None:
        return await self._inner.close()

    async def append_turn(self, turn: Turn) -> TurnResult:
        result = await self._inner.append_turn(turn)
        if not result.replayed and self._quotas.of(turn.tenant).counts_storage:
            self._quotas.seen.add(turn.tenant)
            added = sum(len(item) for _, item in turn.items)
            await self._inner.account_usage(turn.tenant, result.conversation_id, "add", added)
        return result

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        deleted = await self._inner.delete_conversation(tenant, conversation_id)
        if deleted and self._quotas.of(tenant).counts_storage:
            await self._inner.account_usage(tenant, conversation_id, "drop")
        return deleted

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        version = await self._inner.remove_item(tenant, conversation_id, item_id)
        if version is not None and self._quotas.of(tenant).counts_storage:
            history = await self._inner.resolve_conversation(tenant, conversation_id)
            if history is not None:  # its stored summaries stay, and stay counted
                await self._inner.account_usage(tenant, conversation_id, "set", history.stored_bytes)
        return version

    async def add_summary(
        self, tenant: str, conversation_id: str, block: str, text: bytes
    ) -> StoredSummary | None:
        stored = await self._inner.add_summary(tenant, conversation_id, block, text)
        # Only the write that stored it counts (append-only: a losing writer gets the first one back).
        if stored is not None and stored.written and self._quotas.of(tenant).counts_storage:
            self._quotas.seen.add(tenant)
            await self._inner.account_usage(tenant, conversation_id, "add", len(stored.text))
        return stored

    # Background runs (sidecar/runs/).
    async def start_run(
        self, tenant: str, response_id: str, record: bytes, owner: str, lease_ms: int
    ) -> bool:
        return await self._inner.start_run(tenant, response_id, record, owner, lease_ms)

    async def append_run_events(
        self, response_id: str, owner: str, events: list[tuple[int, bytes]], lease_ms: int
    ) -> RunSignal:
        return await self._inner.append_run_events(response_id, owner, events, lease_ms)

    async def finish_run(
        self, response_id: str, owner: str, status: str, events: list[tuple[int, bytes]]
    ) -> bool:
        return await self._inner.finish_run(response_id, owner, status, events)

    async def read_run(self, tenant: str, response_id: str, after: int | None = None) -> RunState | None:
        return await self._inner.read_run(tenant, response_id, after)

    async def cancel_run(self, tenant: str, response_id: str) -> str | None:
        return await self._inner.cancel_run(tenant, response_id)

    async def take_over_run(self, response_id: str, owner: str, lease_ms: int) -> tuple[str, str]:
        return await self._inner.take_over_run(response_id, owner, lease_ms)

    async def track_run(self, response_id: str, check_at_ms: int | None) -> None:
        await self._inner.track_run(response_id, check_at_ms)

    async def due_runs(self, now_ms: int, limit: int) -> list[str]:
        return await self._inner.due_runs(now_ms, limit)

    async def renew_turn(
        self, tenant: str, conversation_id: str, response_id: str, claim: Claim | None
    ) -> bool:
        return await self._inner.renew_turn(tenant, conversation_id, response_id, claim)

    async def hold_run_slot(
        self, tenant: str, response_id: str, limit: int, stale_ms: int
    ) -> tuple[bool, int]:
        return await self._inner.hold_run_slot(tenant, response_id, limit, stale_ms)

    async def release_run_slot(self, tenant: str, response_id: str) -> int:
        return await self._inner.release_run_slot(tenant, response_id)


async def take_background_slot(app: web.Application, tenant: str, response_id: str, stale_ms: int) -> bool:
    """One of the tenant's slots for background responses running at once (quota `background_responses`),
    held in the store so that every replica counts the same runs. True when taken (the run releases it when
    it ends), False when the tenant has no such limit; RateLimited when every slot is in use."""
    limit = app[QUOTAS].of(tenant).background_responses
    if limit is None:
        return False
    held, _ = await app[STORE].hold_run_slot(tenant, response_id, limit, stale_ms)
    if not held:
        _count(app, tenant, "background_responses")
        raise RateLimited(
            f"Rate limit reached: {limit} background responses running at once. Retry when one has finished.",
            headers={"Retry-After": str(BACKGROUND_RETRY_AFTER_SECONDS)},
        )
    return True


async def reconcile(store: Store, tenant: str) -> int:
    """Give back what the tenant's expired conversations were counted for; how many were dropped."""
    _, counted = await store.usage(tenant)
    dropped = 0
    for conversation_id in counted:
        if not await store.conversation_exists(tenant, conversation_id):
            await store.account_usage(tenant, conversation_id, "drop")
            dropped += 1
    return dropped


@contextlib.asynccontextmanager
async def reconciling(
    store: Store, quotas: Quotas, interval: float = RECONCILE_INTERVAL_SECONDS
) -> AsyncIterator[None]:
    """Recount, every `interval`, the tenants whose storage is limited (dropping twice is harmless: the
    per-conversation count goes once)."""

    async def tick() -> None:
        for tenant in quotas.counting_tenants():
            try:
                await reconcile(store, tenant)
            except StoreDown:
                log.warning("quota reconciliation skipped: the store is unavailable")

    if not quotas.any:
        yield
        return
    async with every(interval, tick):
        yield
