"""Connecting: unix sockets, and Redis Cluster detected by itself from a plain redis:// URL."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from sidecar.store import RedisStore, Turn, open_store
from sidecar.store.memory import MemoryStore
from tests.fixtures.redis_servers import RedisCluster as ClusterProcesses
from tests.fixtures.redis_servers import RedisServer
from tests.store.test_store import TENANT, conv_id, item, texts


async def test_unix_socket_url() -> None:
    server = RedisServer(extra_args=["--unixsocket", "redis.sock", "--unixsocketperm", "700"])
    try:
        store = await open_store(f"unix://{server.dir}/redis.sock", 60)
        assert isinstance(store, RedisStore)
        conv = conv_id()
        await store.append_turn(Turn(TENANT, conv, [item(conv, "via unix")], n_input=1))
        history = await store.resolve_conversation(TENANT, conv)
        assert history is not None and texts(history.items) == ["via unix"]
        await store.close()
    finally:
        server.stop()


async def test_cluster_is_detected(redis_cluster: ClusterProcesses) -> None:
    store = await open_store(redis_cluster.url, 60)
    try:
        assert isinstance(store, RedisStore) and isinstance(store.client, RedisCluster)
    finally:
        await store.close()


async def test_memory_url_is_the_embedded_store() -> None:
    assert isinstance(await open_store("memory://", 60), MemoryStore)


def test_store_works_on_uvloop(redis_server: RedisServer) -> None:
    """The sidecar runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    import uvloop

    async def round_trip() -> list[str]:
        store = await RedisStore.connect(redis_server.url, 60)
        try:
            conv = conv_id()
            await store.append_turn(Turn(TENANT, conv, [item(conv, "on uvloop")], n_input=1))
            history = await store.resolve_conversation(TENANT, conv)
            assert history is not None
            return texts(history.items)
        finally:
            await store.close()

    assert uvloop.run(round_trip()) == ["on uvloop"]
