"""Stored summaries count in their tenant's `stored_bytes` quota (quota.CountingStore over each backend): the
write that stores a summary adds its bytes, a losing writer adds nothing, deleting the conversation gives them
back, the recount keeps them, and the quota refuses the next turn once summaries push usage over it."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

from sidecar.appkeys import METRICS, STORE
from sidecar.metrics import Metrics
from sidecar.quota import QUOTAS, CountingStore, InsufficientQuota, Quotas, admit, reconcile
from sidecar.store import Turn
from tests.store.conftest import Backend
from tests.store.test_store import conv_id, item

LIMIT = 10_000


def counting(backend: Backend) -> tuple[CountingStore, str]:
    tenant = f"sum-{os.urandom(4).hex()}"
    return CountingStore(backend.store, Quotas({tenant: {"quota": {"stored_bytes": LIMIT}}})), tenant


async def turns(store: CountingStore, tenant: str, conv: str, n: int) -> list[str]:
    """`n` turns at the conversation's head; the ids of their items."""
    ids = []
    for k in range(n):
        entries = [item(conv, f"in{k}", tenant), item(conv, f"out{k}", tenant)]
        await store.append_turn(Turn(tenant, conv, entries, n_input=1, mint_response=True))
        ids += [item_id for item_id, _ in entries]
    return ids


async def stored_bytes(store: CountingStore, tenant: str) -> int:
    return (await store.usage(tenant))[0].stored_bytes


async def test_a_stored_summary_adds_its_bytes_once(backend: Backend) -> None:
    store, tenant = counting(backend)
    conv = conv_id()
    await turns(store, tenant, conv, 2)
    history = await store.resolve_conversation(tenant, conv)
    assert history is not None and history.summary_bytes == 0
    items_only = await stored_bytes(store, tenant)
    assert items_only == history.session_bytes

    text = "Summary of turns 1-2: über ✓".encode()
    stored = await store.add_summary(tenant, conv, "b1", text)
    assert stored is not None and stored.written
    assert await stored_bytes(store, tenant) == items_only + len(text)
    again = await store.add_summary(tenant, conv, "b1", b"another text for the same block")
    assert again is not None and not again.written and again.text == text
    assert await stored_bytes(store, tenant) == items_only + len(text)  # the losing write adds nothing
    history = await store.resolve_conversation(tenant, conv)
    assert history is not None and history.summary_bytes == len(text)
    assert history.session_bytes == items_only  # the session's own size is still its items
    assert history.stored_bytes == await stored_bytes(store, tenant)
    assert (await store.usage(tenant))[0].conversations == 1


async def test_concurrent_writers_of_one_block_count_one_summary(backend: Backend) -> None:
    store, tenant = counting(backend)
    conv = conv_id()
    await turns(store, tenant, conv, 1)
    before = await stored_bytes(store, tenant)
    texts = [f"writer {n} " * (n + 1) for n in range(8)]  # each of another length
    answers = await asyncio.gather(*(store.add_summary(tenant, conv, "block", t.encode()) for t in texts))
    winners = [a for a in answers if a is not None and a.written]
    assert len(winners) == 1
    assert await stored_bytes(store, tenant) == before + len(winners[0].text)


async def test_a_summary_of_an_unknown_conversation_counts_nothing(backend: Backend) -> None:
    store, tenant = counting(backend)
    assert await store.add_summary(tenant, conv_id(), "b", b"text") is None
    usage, counted = await store.usage(tenant)
    assert (usage.stored_bytes, usage.conversations, counted) == (0, 0, [])


async def test_deleting_the_conversation_gives_its_summaries_back(backend: Backend) -> None:
    store, tenant = counting(backend)
    conv, other = conv_id(), conv_id()
    await turns(store, tenant, conv, 2)
    await turns(store, tenant, other, 1)
    kept = await stored_bytes(store, tenant)
    await store.add_summary(tenant, conv, "b1", b"x" * 500)
    await store.add_summary(tenant, other, "b1", b"y" * 70)
    assert await store.delete_conversation(tenant, conv)
    history = await store.resolve_conversation(tenant, other)
    assert history is not None
    assert await stored_bytes(store, tenant) == history.stored_bytes == history.session_bytes + 70
    assert history.session_bytes < kept
    usage, counted = await store.usage(tenant)
    assert usage.conversations == 1 and counted == [other]


async def test_recounting_keeps_the_summaries(backend: Backend) -> None:
    store, tenant = counting(backend)
    conv = conv_id()
    ids = await turns(store, tenant, conv, 3)
    await store.add_summary(tenant, conv, "b1", b"s" * 300)
    assert await reconcile(store, tenant) == 0  # the conversation lives: nothing is given back
    # Removing an item recounts the conversation ("set" from its resolved history): the summary stays in.
    assert await store.remove_item(tenant, conv, ids[1]) is not None
    history = await store.resolve_conversation(tenant, conv)
    assert history is not None and history.summary_bytes == 300
    after = await stored_bytes(store, tenant)
    assert after == history.session_bytes + 300  # (stored responses keep the removed item: more bytes)


async def test_summaries_pushing_usage_over_the_limit_refuse_the_next_turn(backend: Backend) -> None:
    tenant = f"sum-{os.urandom(4).hex()}"
    quotas = Quotas({tenant: {"quota": {"stored_bytes": 2_000}}})
    store = CountingStore(backend.store, quotas)
    app = web.Application()
    app[QUOTAS], app[STORE], app[METRICS] = quotas, store, Metrics()
    conv = conv_id()
    await turns(store, tenant, conv, 2)
    assert await admit(app, tenant, stores=True) == {}  # the turns alone are under the limit
    await store.add_summary(tenant, conv, "b1", b"z" * 1_000)
    assert await admit(app, tenant, stores=True) == {}
    await store.add_summary(tenant, conv, "b2", b"z" * 1_000)
    with pytest.raises(InsufficientQuota):
        await admit(app, tenant, stores=True)
    assert await admit(app, tenant, stores=False) == {}  # reads still pass
    assert await store.delete_conversation(tenant, conv)
    assert await admit(app, tenant, stores=True) == {}
