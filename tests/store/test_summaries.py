"""Stored summaries of folded turns (add_summary / read_summaries), identically on every backend: append-only,
per conversation and tenant, in the conversation's slot, expiring and deleted with it."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.ids import conversation_tag
from sidecar.keys import ConversationKeys
from sidecar.store import MemoryStore, RedisStore, Store
from sidecar.store.base import StoredSummary
from tests.fixtures.redis_servers import redis_call
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


async def test_a_resolve_brings_the_stored_summaries_in_its_one_round_trip(backend: Backend) -> None:
    store = backend.store
    conv = conv_id()
    ids = await chain(backend, conv, 3)
    plain = await store.resolve_response(TENANT, ids[-1])
    assert plain is not None and plain.summaries == {} and plain.summary_bytes == 0
    await store.add_summary(TENANT, conv, "b1", b"Summary of turns 1-2: nails")
    await store.add_summary(TENANT, conv, "b2", "über ✓".encode())
    expected = {"b1": b"Summary of turns 1-2: nails", "b2": "über ✓".encode()}
    size = sum(len(text) for text in expected.values())

    monitor = backend.monitor() if backend.server is not None else None
    by_response = await store.resolve_response(TENANT, ids[-1])
    if monitor is not None:
        assert monitor.commands() == ["evalsha"]
    assert by_response is not None and by_response.summaries == expected
    assert by_response.items == plain.items and by_response.summary_bytes == size  # the items are unchanged
    by_conversation = await store.resolve_conversation(TENANT, conv)
    assert by_conversation is not None and by_conversation.summaries == expected
    assert by_conversation.items == plain.items

    monitor = backend.monitor() if backend.server is not None else None
    begun = await store.begin_turn(TENANT, previous_response_id=ids[0])  # found inside the script
    if monitor is not None:
        assert monitor.commands() == ["evalsha"]
    assert begun.history is not None and begun.history.summaries == expected
    assert len(begun.history.items) == 2
    begun = await store.begin_turn(TENANT, conversation_id=conv)
    assert begun.history is not None and begun.history.summaries == expected
    assert (await store.begin_turn(TENANT, conversation_id=conv_id())).history is None

    # A response's own input or output is no history to fold: no summaries are read for it.
    for range_ in ("input", "output"):
        part = await store.resolve_response(TENANT, ids[-1], range_)
        assert part is not None and part.summaries is None and part.summary_bytes == size
    assert await store.resolve_response("other-tenant", ids[-1]) is None


async def test_summaries_stored_before_their_bytes_were_kept_still_come_with_the_resolve(
    backend: Backend,
) -> None:
    if backend.name != "redis":
        pytest.skip("a conversation written before the meta kept 'sb' exists only on a standalone Redis here")
    conv = conv_id()
    ids = await chain(backend, conv, 2)
    await backend.store.add_summary(TENANT, conv, "b1", b"older")
    meta = ConversationKeys(conversation_tag(TENANT, conv), TENANT, conv).meta
    assert redis_call(backend.server.port, "HDEL", meta, "sb") == 1
    history = await backend.store.resolve_response(TENANT, ids[-1])
    assert history is not None and history.summaries == {"b1": b"older"} and history.summary_bytes == 0
    assert len(history.items) == 4
