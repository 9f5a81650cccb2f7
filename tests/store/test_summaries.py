"""Stored summaries of folded turns (add_summary / read_summaries), identically on every backend: append-only,
per conversation and tenant, in the conversation's slot, expiring and deleted with it."""

from __future__ import annotations

import asyncio

from sidecar.ids import conversation_tag
from sidecar.keys import ConversationKeys
from sidecar.store import MemoryStore, RedisStore, Store
from sidecar.store.base import StoredSummary
from tests.store.conftest import Backend
from tests.store.test_lifecycle import assert_store_empty, redis_keys
from tests.store.test_store import TENANT, chain, conv_id


async def test_the_first_summary_of_a_block_stays(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    await chain(backend, conv, 2)
    assert await store.read_summaries(TENANT, conv, ["b1", "b2"]) == [None, None]
    assert await store.add_summary(TENANT, conv, "b1", b"Summary of turns 1-4: nails") == StoredSummary(
        b"Summary of turns 1-4: nails", written=True
    )
    # A second writer (another replica, a retried background task) gets the stored text back, unchanged.
    assert await store.add_summary(TENANT, conv, "b1", b"something else") == StoredSummary(
        b"Summary of turns 1-4: nails", written=False
    )
    same = await store.add_summary(TENANT, conv, "b1", b"Summary of turns 1-4: nails")
    assert same is not None and not same.written  # the same text again is not a second write either
    assert await store.add_summary(TENANT, conv, "b2", "über ✓".encode()) == StoredSummary(
        "über ✓".encode(), written=True
    )
    assert await store.read_summaries(TENANT, conv, ["b2", "b3", "b1"]) == [
        "über ✓".encode(),
        None,
        b"Summary of turns 1-4: nails",
    ]
    assert await store.read_summaries(TENANT, conv, []) == []


async def test_concurrent_writers_agree_on_one_summary(backend: Backend) -> None:
    conv = conv_id()
    await chain(backend, conv, 1)
    answers = await asyncio.gather(
        *(backend.store.add_summary(TENANT, conv, "block", f"writer {n}".encode()) for n in range(8))
    )
    assert len({a.text for a in answers if a is not None}) == 1
    assert sum(a is not None and a.written for a in answers) == 1
    assert await backend.store.read_summaries(TENANT, conv, ["block"]) == [
        answers[0].text if answers[0] else None
    ]


async def test_summaries_need_the_conversation_and_stay_in_its_tenant(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    assert await store.add_summary(TENANT, conv, "b", b"x") is None  # unknown: nothing is stored
    assert await store.read_summaries(TENANT, conv, ["b"]) == [None]
    await chain(backend, conv, 1)
    assert await store.add_summary(TENANT, conv, "b", b"mine") == StoredSummary(b"mine", written=True)
    assert await store.add_summary("other-tenant", conv, "b", b"theirs") is None
    assert await store.read_summaries("other-tenant", conv, ["b"]) == [None]
    assert await store.read_summaries(TENANT, conv, ["b"]) == [b"mine"]


async def test_deleting_the_conversation_deletes_its_summaries(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    await chain(backend, conv, 2)
    await store.add_summary(TENANT, conv, "b", b"text")
    assert await store.delete_conversation(TENANT, conv)
    assert_store_empty(backend)
    await chain(backend, conv, 1)  # the same id again is a new conversation, without the old summaries
    assert await store.read_summaries(TENANT, conv, ["b"]) == [None]


async def test_summaries_live_in_the_conversations_slot_and_expire_with_it(backend: Backend) -> None:
    ttl = 0.5
    store: Store = (
        MemoryStore(ttl) if backend.server is None else await RedisStore.connect(backend.server.url, ttl)
    )
    try:
        conv = conv_id()
        await chain(Backend(backend.name, store, backend.server), conv, 1)
        await store.add_summary(TENANT, conv, "b", b"text")
        if backend.server is not None:
            prefix = ConversationKeys(conversation_tag(TENANT, conv), TENANT, conv).prefix
            nodes = {port for port, key in redis_keys(backend) if key.startswith(prefix)}
            assert prefix + "sum" in {key for _, key in redis_keys(backend)}
            assert len(nodes) == 1  # one slot: on a cluster, one node holds every key of the conversation
        await asyncio.sleep(ttl * 0.6)
        assert await store.resolve_conversation(TENANT, conv) is not None  # a read refreshes both
        await asyncio.sleep(ttl * 0.6)
        assert await store.read_summaries(TENANT, conv, ["b"]) == [b"text"]
        await asyncio.sleep(ttl + 0.3)
        assert await store.read_summaries(TENANT, conv, ["b"]) == [None]
        if backend.server is not None:
            assert redis_keys(backend) == []
    finally:
        await store.close()
