"""CONVOSTORE_REDIS_WAIT_REPLICAS: a stored turn is acknowledged once replicas have it (Redis WAIT)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest

from sidecar.ids import conversation_tag
from sidecar.keys import ConversationKeys
from sidecar.store import RedisStore, Turn
from sidecar.store.redis_wait import Replication
from tests.fixtures.redis_servers import RedisCluster, RedisServer, redis_call
from tests.store.test_store import TENANT, conv_id, item, texts


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer()
    replica = None
    try:
        replica = RedisServer(
            extra_args=["--replicaof", "127.0.0.1", str(primary.port), "--enable-debug-command", "yes"]
        )
        deadline = time.monotonic() + 15
        while "master_link_status:up" not in str(redis_call(replica.port, "INFO", "replication")):
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.05)
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


async def test_a_turn_is_acknowledged_only_once_the_replica_has_it(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    store = await RedisStore.connect(primary.url, 3600, wait=Replication(1, 5000))
    try:
        conv = conv_id()
        # The replica stalls for 0.6 s: the write is acknowledged only after it has caught up.
        stall = asyncio.get_running_loop().run_in_executor(
            None, lambda: redis_call(replica.port, "DEBUG", "SLEEP", "0.6", timeout=10)
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        result = await store.append_turn(Turn(TENANT, conv, [item(conv, "kept")], 1, mint_response=True))
        waited = time.monotonic() - started
        await stall
        keys = ConversationKeys(conversation_tag(TENANT, conv), TENANT, conv)
        assert waited > 0.3 and redis_call(replica.port, "EXISTS", keys.meta) == 1
        assert result.response_id is not None
        history = await store.resolve_response(TENANT, result.response_id)
        assert history is not None and texts(history.items) == ["kept"]
    finally:
        await store.close()


async def test_without_enough_replicas_the_turn_is_stored_and_the_shortfall_logged(
    caplog: pytest.LogCaptureFixture, redis_server: RedisServer
) -> None:
    store = await RedisStore.connect(redis_server.url, 3600, wait=Replication(1, 50))
    try:
        conv = conv_id()
        with caplog.at_level(logging.WARNING, logger="convostore.store"):
            result = await store.append_turn(Turn(TENANT, conv, [item(conv, "x")], 1, mint_response=True))
        assert result.response_id is not None and await store.resolve_response(TENANT, result.response_id)
        assert any("0 of 1 replicas" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_wait_on_a_cluster_goes_to_the_primary_of_the_key(redis_cluster: RedisCluster) -> None:
    store = await RedisStore.connect(redis_cluster.url, 3600, wait=Replication(1, 20))
    try:
        for _ in range(5):  # several slots, so several primaries
            conv = conv_id()
            first = await store.append_turn(Turn(TENANT, conv, [item(conv, "a")], 1, mint_response=True))
            assert first.response_id is not None
            second = await store.append_turn(
                Turn(
                    TENANT, "", [item(conv, "b")], 1, parent_response_id=first.response_id, mint_response=True
                )
            )
            assert second.response_id is not None
            history = await store.resolve_response(TENANT, second.response_id)
            assert history is not None and texts(history.items) == ["a", "b"]
    finally:
        await store.close()
