"""Redis Cluster error paths: a slot held open mid-migration, and a master killed under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from sidecar.ids import conversation_tag
from sidecar.keys import ConversationKeys, records_key
from sidecar.store import RedisStore, Turn
from sidecar.store.base import StoreDown
from tests.fixtures.redis_servers import RedisCluster, redis_call
from tests.store.test_store import TENANT, conv_id, item, texts


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A cluster of this test's own: these tests move slots and kill masters."""
    cluster = RedisCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def _slot_owner(cluster: RedisCluster, slot: int) -> tuple[int, str]:
    for port in cluster.ports:
        node_id = str(redis_call(port, "CLUSTER", "MYID"))
        slots = redis_call(port, "CLUSTER", "SLOTS")
        assert isinstance(slots, list)
        for start, end, master, *_ in slots:
            if int(start) <= slot <= int(end) and int(master[1]) == port:
                return port, node_id
    raise AssertionError(f"no node owns slot {slot}")


class SlotMigration:
    """One slot moved by hand, the way redis-cli --cluster reshard does it, in steps a test controls."""

    def __init__(self, cluster: RedisCluster, key: str) -> None:
        self.cluster = cluster
        self.slot = int(str(redis_call(cluster.ports[0], "CLUSTER", "KEYSLOT", key)))
        self.source, source_id = _slot_owner(cluster, self.slot)
        self.target = next(p for p in cluster.ports if p != self.source)
        self.target_id = str(redis_call(self.target, "CLUSTER", "MYID"))
        redis_call(self.target, "CLUSTER", "SETSLOT", str(self.slot), "IMPORTING", source_id)
        redis_call(self.source, "CLUSTER", "SETSLOT", str(self.slot), "MIGRATING", self.target_id)

    def move(self, *keys: str) -> None:
        redis_call(self.source, "MIGRATE", "127.0.0.1", str(self.target), "", "0", "5000", "KEYS", *keys)

    def finish(self) -> None:
        left = redis_call(self.source, "CLUSTER", "GETKEYSINSLOT", str(self.slot), "1000")
        assert isinstance(left, list)
        if left:
            self.move(*(k.decode() if isinstance(k, bytes) else str(k) for k in left))
        for port in self.cluster.ports:
            redis_call(port, "CLUSTER", "SETSLOT", str(self.slot), "NODE", self.target_id)


async def _conversation(store: RedisStore) -> tuple[str, str, ConversationKeys]:
    conv = conv_id()
    first = await store.append_turn(
        Turn(TENANT, conv, [item(conv, "q1"), item(conv, "a1")], 1, mint_response=True)
    )
    assert first.response_id is not None
    return conv, first.response_id, ConversationKeys(conversation_tag(TENANT, conv), TENANT, conv)


async def test_requests_ride_through_a_slot_being_resharded(own_cluster: RedisCluster) -> None:
    store = await RedisStore.connect(own_cluster.url, 3600)
    try:
        conv, first, keys = await _conversation(store)
        migration = SlotMigration(own_cluster, keys.meta)
        loop = asyncio.get_running_loop()
        finishing = loop.run_in_executor(None, lambda: (time.sleep(0.3), migration.finish()))
        begun = await store.begin_turn(TENANT, previous_response_id=first)
        assert begun.history is not None and texts(begun.history.items) == ["q1", "a1"]
        await store.append_turn(
            Turn(TENANT, "", [item(conv, "q2")], 1, parent_response_id=first, response_id=begun.response_id)
        )
        head = await store.resolve_conversation(TENANT, conv)
        assert head is not None and texts(head.items) == ["q1", "a1", "q2"]
        await finishing
        history = await store.resolve_response(TENANT, begun.response_id)
        assert history is not None and texts(history.items) == ["q1", "a1", "q2"]
        assert redis_call(migration.target, "EXISTS", records_key(keys.tag)) == 1
    finally:
        await store.close()


async def test_a_slot_held_open_half_moved_is_store_down_then_whole(own_cluster: RedisCluster) -> None:
    store = await RedisStore.connect(own_cluster.url, 3600)
    try:
        conv, first, keys = await _conversation(store)
        migration = SlotMigration(own_cluster, keys.meta)
        migration.move(keys.segment(0))
        started = time.monotonic()
        with pytest.raises(StoreDown):
            await store.resolve_response(TENANT, first)
        with pytest.raises(StoreDown):
            await store.append_turn(Turn(TENANT, conv, [item(conv, "q2")], 1))
        assert time.monotonic() - started < 8  # bounded: no hang while the slot stays open
        migration.finish()
        history = await store.resolve_response(TENANT, first)
        assert history is not None and texts(history.items) == ["q1", "a1"]  # nothing half-written
        head = await store.resolve_conversation(TENANT, conv)
        assert head is not None and head.version == 1
    finally:
        await store.close()


async def test_a_master_killed_under_load_gives_store_down_never_another_error(
    own_cluster: RedisCluster,
) -> None:
    store = await RedisStore.connect(own_cluster.url, 3600)
    try:
        convs = [conv_id() for _ in range(24)]
        for conv in convs:
            await store.append_turn(Turn(TENANT, conv, [item(conv, "x")], 1, mint_response=True))
        errors: list[BaseException] = []
        served = 0

        async def client(conv: str) -> None:
            nonlocal served
            for n in range(15):
                try:
                    await asyncio.wait_for(
                        store.append_turn(Turn(TENANT, conv, [item(conv, f"y{n}")], 1)), 10
                    )
                    history = await asyncio.wait_for(store.resolve_conversation(TENANT, conv), 10)
                    assert history is not None
                    served += 1
                except StoreDown:
                    pass
                except BaseException as exc:
                    errors.append(exc)
                await asyncio.sleep(0.01)

        load = asyncio.gather(*(client(c) for c in convs))
        await asyncio.sleep(0.05)
        own_cluster.nodes[1].kill()
        await load
        assert errors == [], errors[:3]
        assert served > 0  # the shards still up kept serving
    finally:
        await store.close()
