"""The quota operations of the Store, identical on every backend: a shared rate limit and usage counts."""

from __future__ import annotations

import asyncio
import os

from sidecar.store import Turn
from tests.store.conftest import Backend
from tests.store.test_store import TENANT, conv_id, item


async def test_a_rate_limit_lets_through_exactly_its_number_per_minute(backend: Backend) -> None:
    tenant = f"rate-{os.urandom(4).hex()}"
    decisions = await asyncio.gather(*(backend.store.take_request(tenant, 5) for _ in range(8)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 5
    assert sorted(d.remaining for d in allowed) == [0, 1, 2, 3, 4]
    refused = [d for d in decisions if not d.allowed]
    assert all(0 < d.reset_ms <= 12_000 for d in refused)  # the next one passes within one interval
    other = await backend.store.take_request(f"other-{tenant}", 5)
    assert other.allowed  # tenants do not share a limit


async def test_usage_counts_bytes_and_conversations_and_gives_them_back_once(backend: Backend) -> None:
    store, tenant = backend.store, f"usage-{os.urandom(4).hex()}"
    assert (await store.usage(tenant))[0].conversations == 0
    await store.account_usage(tenant, "a", "add", 100)
    await store.account_usage(tenant, "a", "add", 50)
    usage = await store.account_usage(tenant, "b", "add", 10)
    assert (usage.stored_bytes, usage.conversations) == (160, 2)
    usage = await store.account_usage(tenant, "a", "set", 40)
    assert (usage.stored_bytes, usage.conversations) == (50, 2)
    await store.account_usage(tenant, "a", "drop")
    usage = await store.account_usage(tenant, "a", "drop")  # a second drop gives back nothing more
    assert (usage.stored_bytes, usage.conversations) == (10, 1)
    total, counted = await store.usage(tenant)
    assert counted == ["b"] and total.stored_bytes == 10


async def test_conversation_exists_follows_the_conversation(backend: Backend) -> None:
    conv = conv_id()
    assert not await backend.store.conversation_exists(TENANT, conv)
    await backend.store.append_turn(Turn(TENANT, conv, [item(conv, "x")], 1))
    assert await backend.store.conversation_exists(TENANT, conv)
    assert await backend.store.delete_conversation(TENANT, conv)
    assert not await backend.store.conversation_exists(TENANT, conv)
